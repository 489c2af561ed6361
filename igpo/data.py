"""RL / SFT training examples with reference traces, read offline, and the model's prompt format.

Every :class:`Example` carries a reference trace in the d1/IGPO answer format::

    <reasoning>
    ...worked solution...
    </reasoning>
    <answer>
    \\boxed{ANSWER}
    </answer>

with the solution's own ``\\boxed{}`` commands unwrapped, so the trace holds exactly one box (the
one the strict metric reads) and the hint canvas can hide it as "the answer".

Sources are looked up in :data:`SOURCES` (name -> loader of a :class:`DataConfig`); other modules
add theirs with :func:`register_source` (e.g. a synthetic ``arith`` source).
Loader errors name the file and line (or list item) in one line."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igpo.errors import BadFile, InvalidSetting, require_file
from igpo.prompts import D1_INSTRUCTION as PROMPT_INSTRUCTION
from igpo.prompts import PREFILL
from igpo.scoring.answers import box_spans, format_gold_number, gsm8k_gold

logger = logging.getLogger(__name__)

D1_SYSTEM_PROMPT: str = PROMPT_INSTRUCTION
"""d1's instruction (the evaluation tasks' text), put before the question in the user turn."""

DEFAULT_PREFILL = PREFILL
"""Text appended after the chat template's generation prompt (d1 protocol)."""

DATA_DIR_ENV = "IGPO_DATA_DIR"
"""Environment variable naming the offline data folder (``<dir>/<dataset>/<split>.jsonl``)."""

GSM8K_TRAIN = Path("gsm8k") / "train.jsonl"
"""GSM8K train split inside the data folder."""
GSM8K_TEST = Path("gsm8k") / "test.jsonl"
"""GSM8K test split inside the data folder."""

MATH_TRAIN = Path("math") / "train.jsonl"
"""Hendrycks MATH train split inside the data folder."""

METAMATH_FILE = Path("metamath") / "MetaMathQA-395K.json"
"""Where the metamath source looks inside the data folder when no path is given."""

METAMATH_ANSWER = "The answer is:"
"""MetaMathQA's final-answer phrase; the gold is the text after its last occurrence."""

RELEASED_METAMATH_TYPES: tuple[str, ...] = ("GSM_AnsAug", "MATH_AnsAug")
"""MetaMathQA subsets of the released IGPO run."""

GSM8K_ANSWER_MARK = "####"
"""GSM8K's final-answer line marker."""

_CALC_RE = re.compile(r"<<.*?>>")
_BARE_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s+(?=[^\s{])")


# --------------------------------------------------------------------------- records


@dataclass
class Example:
    """One RL training problem: question, gold answer and reference trace for hints."""

    prompt: str
    """The question text (rendered into the model's prompt by :func:`render_prompt`)."""
    answer: str
    """Gold answer, scored with igpo.scoring.pool.verify_answer."""
    trace: str | None
    """Reference trace in the d1/IGPO format; None when the source has none (generic JSONL)."""
    id: str
    """Stable identifier (source and row)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Source-specific extras (subject, level, type, ...)."""


@dataclass
class SFTExample:
    """One supervised example: the question and the target completion."""

    prompt: str
    """The question text."""
    completion: str
    """The assistant turn to learn (after any prefill)."""
    id: str
    """Stable identifier (file stem and line)."""


# --------------------------------------------------------------------------- text helpers


def format_trace(reasoning: str, answer: str) -> str:
    """The d1/IGPO trace: reasoning block, then the answer block with one ``\\boxed{}``."""
    block = f"<answer>\n\\boxed{{{answer}}}\n</answer>"
    return f"<reasoning>\n{reasoning.strip()}\n</reasoning>\n{block}"


def unbox(text: str) -> str:
    """Replace every complete ``\\boxed{X}`` / ``\\fbox{X}`` by ``X`` (brace-balanced).

    Brace-less ``\\boxed 2`` (two MATH train rows) becomes ``2`` as well.
    """
    out: list[str] = []
    pos = 0
    for command, start, end in box_spans(text):
        out.append(text[pos:command] + text[start:end])
        pos = end + 1
    return _BARE_BOX_RE.sub("", "".join(out) + text[pos:])


# --------------------------------------------------------------------------- file reading


def jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-empty JSON-lines row; errors (bad JSON, a line that
    is not an object, bytes that are not UTF-8) name file and line."""
    path = Path(path)
    require_file(path, "data file", f"{path}: no such data file")
    with path.open(encoding="utf-8") as handle:
        lineno = 0
        try:
            for lineno, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise BadFile(f"{path}:{lineno}: invalid JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise BadFile(f"{path}:{lineno}: expected a JSON object")
                yield lineno, row
        except UnicodeDecodeError as err:
            raise BadFile(f"{path}:{lineno + 1}: not UTF-8 text ({err.reason})") from None


_rows = jsonl_rows


JSON_KINDS = {dict: "an object", list: "a list", bool: "a boolean", type(None): "null"}
"""How a JSON value that is not text is named in an error."""


def text_field(row: dict[str, Any], name: str, where: str) -> str:
    """A required field as text (numbers formatted like gold answers); BadFile naming the row and
    the fields it does have when absent, or naming the kind when an object, list, boolean, null
    or a number that is not finite (JSON's NaN / Infinity)."""
    if name not in row:
        have = ", ".join(repr(key)[:40] for key in list(row)[:8]) + (", ..." if len(row) > 8 else "")
        raise BadFile(f"{where}: missing field {name!r} (the row has: {have or 'no fields'})")
    value = row[name]
    if value is None or isinstance(value, (dict, list, bool)):
        raise BadFile(f"{where}: field {name!r} is {JSON_KINDS[type(value)]}, not text")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadFile(f"{where}: field {name!r} is {value!r}, not a finite number")
    return value if isinstance(value, str) else format_gold_number(value)


def finite_gold(gold: Any, where: str) -> str:
    """A gold answer as text, refused (BadFile naming `where`, the file and row) when it is not a
    finite number: NaN or an infinity, as a JSON number or as text ("nan", "-inf", "Infinity").
    Scored as it stands, such a gold would silently count responses right or wrong."""
    text = gold if isinstance(gold, str) else format_gold_number(gold)
    try:
        number = float(text.strip())
    except ValueError:
        return text
    if not math.isfinite(number):
        raise BadFile(f"{where}: the gold answer is {text.strip()!r}, not a finite number")
    return text


# --------------------------------------------------------------------------- loaders


def load_gsm8k_file(path: str | Path) -> list[Example]:
    """GSM8K rows (question, answer with ``#### N``) as examples; calculator notes removed."""
    examples = []
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        solution = text_field(row, "answer", where)
        try:
            gold = finite_gold(gsm8k_gold(solution), where)
        except InvalidSetting as err:
            raise InvalidSetting(f"{where}: {err}") from None
        steps = solution.rsplit(GSM8K_ANSWER_MARK, 1)[0]
        reasoning = _CALC_RE.sub("", steps).strip()
        examples.append(
            Example(
                prompt=text_field(row, "question", where).strip(),
                answer=gold,
                trace=format_trace(reasoning, gold),
                id=f"gsm8k-{Path(path).stem}-{lineno}",
            )
        )
    return examples


def load_gsm8k_train(data_dir: str | Path) -> list[Example]:
    """The GSM8K train split (7473 rows) from ``<data_dir>/gsm8k/train.jsonl``."""
    return load_gsm8k_file(Path(data_dir) / GSM8K_TRAIN)


def load_math_file(path: str | Path) -> list[Example]:
    """MATH rows (problem, solution, answer); rows with an empty answer are skipped."""
    examples = []
    skipped = 0
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        gold = finite_gold(text_field(row, "answer", where).strip(), where)
        if not gold:
            skipped += 1
            continue
        meta = {k: row[k] for k in ("subject", "level", "unique_id") if k in row}
        examples.append(
            Example(
                prompt=text_field(row, "problem", where).strip(),
                answer=gold,
                trace=format_trace(unbox(text_field(row, "solution", where)), gold),
                id=str(row.get("unique_id") or f"math-{Path(path).stem}-{lineno}"),
                meta=meta,
            )
        )
    if skipped:
        logger.info("%s: skipped %d rows with an empty answer", path, skipped)
    return examples


def load_math_train(data_dir: str | Path) -> list[Example]:
    """The MATH train split from ``<data_dir>/math/train.jsonl`` (7498 usable rows)."""
    return load_math_file(Path(data_dir) / MATH_TRAIN)


def _metamath_reasoning(response: str, verbatim: bool) -> str:
    """Reasoning text of a MetaMathQA response for the trace (see :func:`load_metamath`)."""
    if verbatim:
        return response
    body = response.rsplit(METAMATH_ANSWER, 1)[0].rstrip()
    lines = body.splitlines()
    if lines and lines[-1].lstrip().startswith(GSM8K_ANSWER_MARK):
        lines = lines[:-1]
    return unbox("\n".join(lines))


def load_metamath(
    path: str | Path, types: tuple[str, ...] | list[str] | None = None, verbatim: bool = False
) -> list[Example]:
    """MetaMathQA (a JSON list of query/response/type) deduplicated by query, first row kept.

    Gold = text after the last ``The answer is:``. ``types`` keeps only those subsets (None: all).
    Trace: d1 format, the response without its ``The answer is:`` / ``#### N`` lines and with boxes
    unwrapped; ``verbatim=True`` gives the released code's ``"<reasoning>\\n" + response``.
    Rows without the answer phrase are skipped (logged).
    """
    path = Path(path)
    require_file(path, "data file", f"{path}: no such data file")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadFile(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(items, list):
        raise BadFile(f"{path}: expected a JSON list of objects")
    wanted = set(types) if types else None
    seen: set[str] = set()
    examples, skipped = [], 0
    for index, item in enumerate(items):
        where = f"{path}: item {index}"
        if not isinstance(item, dict):
            raise BadFile(f"{where}: expected a JSON object")
        query, response = text_field(item, "query", where), text_field(item, "response", where)
        kind = str(item.get("type", ""))
        if (wanted is not None and kind not in wanted) or query in seen:
            continue
        seen.add(query)
        if METAMATH_ANSWER not in response:
            skipped += 1
            continue
        gold = finite_gold(response.rsplit(METAMATH_ANSWER, 1)[1].strip(), where)
        reasoning = _metamath_reasoning(response, verbatim)
        trace = "<reasoning>\n" + reasoning if verbatim else format_trace(reasoning, gold)
        examples.append(
            Example(
                prompt=query.strip(),
                answer=gold,
                trace=trace,
                id=f"metamath-{index}",
                meta={"type": kind},
            )
        )
    if skipped:
        logger.warning("%s: skipped %d rows without %r", path, skipped, METAMATH_ANSWER)
    return examples


def load_jsonl(path: str | Path) -> list[Example]:
    """Generic JSON lines: ``prompt``, ``answer``, optional ``trace`` and ``id``; rest -> meta."""
    examples = []
    for lineno, row in _rows(path):
        where = f"{path}:{lineno}"
        trace = row.get("trace")
        if trace is not None and not isinstance(trace, str):
            raise BadFile(f"{where}: field 'trace' must be text")
        meta = {k: v for k, v in row.items() if k not in ("prompt", "answer", "trace", "id")}
        examples.append(
            Example(
                prompt=text_field(row, "prompt", where),
                answer=finite_gold(text_field(row, "answer", where).strip(), where),
                trace=trace,
                id=str(row.get("id", f"{Path(path).stem}-{lineno}")),
                meta=meta,
            )
        )
    return examples


def load_sft_jsonl(path: str | Path) -> list[SFTExample]:
    """SFT JSON lines with ``prompt`` and ``completion`` (and optional ``id``)."""
    return [
        SFTExample(
            prompt=text_field(row, "prompt", f"{path}:{lineno}"),
            completion=text_field(row, "completion", f"{path}:{lineno}"),
            id=str(row.get("id", f"{Path(path).stem}-{lineno}")),
        )
        for lineno, row in _rows(path)
    ]


# --------------------------------------------------------------------------- config & registry


@dataclass
class DataConfig:
    """Which training examples to load and how to subset them."""

    source: str = "gsm8k"
    """A name in SOURCES: gsm8k | math | metamath | jsonl (others register themselves)."""
    path: str | None = None
    """An explicit data file (required for jsonl; overrides the data_dir file otherwise)."""
    data_dir: str | None = None
    """Offline data folder (<dir>/<dataset>/<split>.jsonl); None: $IGPO_DATA_DIR."""
    limit: int | None = None
    """Keep at most this many examples (after shuffling and filtering); None: all."""
    shuffle_seed: int | None = 0
    """Seed of the example order; None keeps the file order."""
    max_trace_tokens: int | None = None
    """Drop examples whose trace is longer than this many tokens of the tokenizer given to
    load_examples (RL training: the policy's)."""
    metamath_types: list[str] = field(default_factory=lambda: list(RELEASED_METAMATH_TYPES))
    """MetaMathQA subsets to keep (released run: GSM_AnsAug + MATH_AnsAug); empty: all."""
    arith: dict[str, Any] = field(default_factory=dict)
    """source arith: igpo.arith.ArithConfig fields (steps, numbers, distractors, seed)."""
    arith_size: int = 20000
    """source arith: number of problems generated (then shuffled and limited as usual)."""
    metamath_verbatim: bool = False
    """MetaMathQA traces as the released code builds them ("<reasoning>\\n" + response)."""

    def __post_init__(self) -> None:
        if not self.source:
            raise InvalidSetting("source must name a data source")
        if self.limit is not None and self.limit < 1:
            raise InvalidSetting(f"limit must be >= 1 or None, got {self.limit}")
        if self.max_trace_tokens is not None and self.max_trace_tokens < 1:
            raise InvalidSetting(f"max_trace_tokens must be >= 1 or None, got {self.max_trace_tokens}")

    def resolved_data_dir(self) -> Path:
        """data_dir, else $IGPO_DATA_DIR; ValueError when neither is set."""
        folder = self.data_dir or os.environ.get(DATA_DIR_ENV)
        if not folder:
            raise InvalidSetting(f"data_dir is not set (give data_dir or set ${DATA_DIR_ENV})")
        return Path(folder)

    def file(self, default: Path) -> Path:
        """The explicit path, else ``default`` inside the data folder."""
        return Path(self.path) if self.path else self.resolved_data_dir() / default


SourceLoader = Callable[[DataConfig], list[Example]]
"""A data source: reads its examples as the config says (path, data_dir, its own fields)."""


def _jsonl_source(cfg: DataConfig) -> list[Example]:
    """The generic JSONL source (needs cfg.path)."""
    if not cfg.path:
        raise InvalidSetting("source 'jsonl' needs path")
    return load_jsonl(cfg.path)


SOURCES: dict[str, SourceLoader] = {
    "gsm8k": lambda cfg: load_gsm8k_file(cfg.file(GSM8K_TRAIN)),
    "math": lambda cfg: load_math_file(cfg.file(MATH_TRAIN)),
    "metamath": lambda cfg: load_metamath(cfg.file(METAMATH_FILE), cfg.metamath_types or None, cfg.metamath_verbatim),
    "jsonl": _jsonl_source,
    "arith": lambda cfg: _arith_source(cfg),
}
"""Registered data sources; add more with :func:`register_source`."""


def _arith_source(cfg: DataConfig) -> list[Example]:
    """Generated arith problems (the CPU testbed), with their reference traces."""
    from igpo.arith import ArithConfig, generate_problems
    from igpo.config import build

    if cfg.path:  # a user's file that would be silently ignored
        raise InvalidSetting(
            f"data.path={cfg.path} is not read by data.source=arith (it generates its problems); "
            "set data.source to jsonl, gsm8k, math or metamath to train on that file"
        )

    problems = generate_problems(build(ArithConfig, dict(cfg.arith), "data.arith"), cfg.arith_size)
    return [
        Example(prompt=p.question, answer=p.answer, trace=p.trace, id=p.id, meta={"steps": p.steps}) for p in problems
    ]


def register_source(name: str, loader: SourceLoader, *, replace: bool = False) -> None:
    """Make ``loader`` available as ``DataConfig(source=name)``."""
    if name in SOURCES and not replace:
        raise InvalidSetting(f"data source {name!r} is already registered")
    SOURCES[name] = loader


def load_examples(cfg: DataConfig, tokenizer: Any = None) -> list[Example]:
    """Examples of ``cfg.source``: length-filtered, shuffled with ``shuffle_seed``, then limited."""
    loader = SOURCES.get(cfg.source)
    if loader is None:
        raise InvalidSetting(f"unknown data source {cfg.source!r}; known: {', '.join(sorted(SOURCES))}")
    examples = loader(cfg)
    if cfg.max_trace_tokens is not None:
        if tokenizer is None:
            raise InvalidSetting("max_trace_tokens needs a tokenizer")
        traced = [ex for ex in examples if ex.trace is not None]
        texts = [ex.trace for ex in traced]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        too_long = {id(ex) for ex, ids in zip(traced, encoded, strict=True) if len(ids) > cfg.max_trace_tokens}
        examples = [ex for ex in examples if id(ex) not in too_long]
    if cfg.shuffle_seed is not None:
        random.Random(cfg.shuffle_seed).shuffle(examples)
    return examples[: cfg.limit] if cfg.limit is not None else examples


# --------------------------------------------------------------------------- prompt


def render_prompt(tokenizer: Any, question: str, system: str = D1_SYSTEM_PROMPT, prefill: str = DEFAULT_PREFILL) -> str:
    """The model's prompt text: chat template of one user turn, generation prompt, then prefill.

    The user turn is ``system``, a blank line, then the question (d1 puts its instruction in the
    user turn). Tokenize the result with ``add_special_tokens=False`` (the template has the BOS).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidSetting("tokenizer has no chat template")
    content = f"{system}\n\n{question.strip()}" if system else question.strip()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return text + prefill
