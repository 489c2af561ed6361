"""Input rows of `igpo rewrite-traces`: field presets, stable ids and the rewriting prompt.

A row becomes a `Source` (question, reference trace, gold answer). Its id is a hash of the
input row and the prompt text, so a rerun recognises finished rows and a changed prompt starts
afresh. Example (GSM8K train): `{"question": "Natalia sold clips ...", "answer": "Natalia sold
48/2 = <<48/2=24>>24 clips ... #### 72"}` -> trace = the text before `####`, answer = `72`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from igpo.data import jsonl_rows
from igpo.errors import BadFile, InvalidSetting, require_file
from igpo.scoring.answers import extract_boxed, gsm8k_gold

PROMPT_FILE = Path(__file__).resolve().parent / "prompt.txt"
"""The shipped rewriting prompt; placeholders {question}, {trace}, {answer}."""
PLACEHOLDERS = ("{question}", "{trace}", "{answer}")


@dataclass(frozen=True)
class Preset:
    """Where a dataset keeps its question, trace and answer."""

    question: str
    trace: str
    answer: str | None
    """Field of the gold answer; None: derived from the trace by `answer_of`."""
    answer_of: Callable[[str], str | None] | None = None
    trace_of: Callable[[str], str] | None = None


def _gsm8k_trace(text: str) -> str:
    return text.split("####")[0].strip()


def _metamath_answer(text: str) -> str | None:
    marker = "The answer is:"
    return text.rsplit(marker, 1)[1].strip() if marker in text else None


PRESETS: dict[str, Preset] = {
    "openr1": Preset(question="problem", trace="solution", answer="answer"),
    "metamathqa": Preset(question="query", trace="response", answer=None, answer_of=_metamath_answer),
    "gsm8k": Preset(question="question", trace="answer", answer=None, answer_of=gsm8k_gold, trace_of=_gsm8k_trace),
    "math": Preset(question="problem", trace="solution", answer=None, answer_of=extract_boxed),
}
"""OpenR1-Math-220K, MetaMathQA, GSM8K train and MATH train (the last two in ../shared/data)."""


@dataclass(frozen=True)
class Source:
    """One row to rewrite."""

    id: str
    question: str
    trace: str
    answer: str
    line: int


def load_prompt(path: Path | None) -> str:
    """The prompt template (the shipped one unless `path`); every placeholder must appear."""
    path = path or PROMPT_FILE
    require_file(path, "prompt file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BadFile(f"{path}: not UTF-8 text ({err.reason})") from None
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise BadFile(f"{path}: the prompt lacks the placeholder(s) {', '.join(missing)}")
    return text


def render(template: str, source: Source) -> list[dict[str, str]]:
    """The chat messages of one request (placeholders filled literally, braces in text kept)."""
    text = template
    for key, value in (("question", source.question), ("trace", source.trace), ("answer", source.answer)):
        text = text.replace("{" + key + "}", value)
    return [{"role": "user", "content": text}]


def row_id(row: dict[str, Any], template: str) -> str:
    """Stable id of an input row under a prompt: sha256 of both, 16 hex digits."""
    blob = json.dumps([row, template], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_fields(preset: str | None, question: str | None, trace: str | None, answer: str | None) -> Preset:
    """A preset, with any field flag overriding it; without a preset all three fields are needed."""
    if preset is not None and preset not in PRESETS:
        raise InvalidSetting(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    base = PRESETS[preset] if preset else None
    if base is None and not (question and trace and answer):
        raise InvalidSetting("give --preset, or all of --question-field, --trace-field and --answer-field")
    if base is None:
        return Preset(question=question, trace=trace, answer=answer)
    return Preset(
        question=question or base.question,
        trace=trace or base.trace,
        answer=answer or base.answer,
        answer_of=None if answer else base.answer_of,
        trace_of=None if trace else base.trace_of,
    )


def read_sources(path: Path, fields: Preset, template: str, limit: int | None = None) -> Iterator[Source]:
    """Sources of a JSONL file; a row lacking a field fails naming file, line and field."""
    for count, (lineno, row) in enumerate(jsonl_rows(path)):
        if limit is not None and count >= limit:
            return
        where = f"{path}:{lineno}"
        question, trace = _field(row, fields.question, where), _field(row, fields.trace, where)
        if fields.answer is not None:
            answer = _field(row, fields.answer, where)
        else:
            answer = fields.answer_of(trace) if fields.answer_of else None
            if not answer:
                raise BadFile(f"{where}: no gold answer found in field {fields.trace!r}")
        if fields.trace_of:
            trace = fields.trace_of(trace)
        yield Source(id=row_id(row, template), question=question, trace=trace, answer=answer.strip(), line=lineno)


def _field(row: dict[str, Any], name: str, where: str) -> str:
    value = row.get(name)
    if value is None:
        raise BadFile(f"{where}: missing field {name!r} (fields: {', '.join(sorted(row))})")
    if not isinstance(value, (str, int, float)):
        raise BadFile(f"{where}: field {name!r} is not text")
    return str(value)
