"""Hint canvases for IGPO's inpainting: reveal random chunks of a reference trace, mask the rest.

A canvas is a ``[gen_length]`` LongTensor holding ``mask_id`` at free positions and trace token
ids at hinted ones; :func:`igpo.decoding.generate` takes a ``[B, gen_length]`` stack of them as
``hints`` (fixed, never re-masked). ``canvas != mask_id`` tells which positions are hinted.

Recipe: keep at most ``gen_length - tail_free`` trace tokens, cut them into consecutive chunks of
random length in ``[min_chunk, max_chunk]`` (a trailing piece shorter than ``min_chunk`` is
dropped), reveal some of the ``N`` chunks chosen uniformly without replacement, and place each
revealed chunk on the canvas. The defaults are the released code's (facebookresearch/igpo,
``utils/generate.py: create_spacing_scaled_inpainting_sequence``); each has the paper's reading
as a named alternative (docs/training.md has the table):

* ``count_rule``: ``released`` draws ``int(N * (1 - eta))`` chunks to mask and reveals the rest;
  ``paper`` reveals ``floor(eta * N)``;
* ``reveal_last_chunk``: the last chunk is revealed whatever the draw (released), so a canvas may
  reveal one chunk more than the count;
* ``hide_answer``: chunks overlapping the answer span are never revealed (the paper's guarantee;
  off in the released code); it wins over ``reveal_last_chunk``;
* ``spread``: revealed chunks are placed with their gaps stretched by
  ``clip(effective / trace length, 1, max_spread)`` (released ``scale_chunk_positions``),
  instead of at their trace positions.

Randomness comes only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from igpo.config import coerce
from igpo.errors import InvalidSetting
from igpo.prompts import PREFILL
from igpo.scoring.answers import box_spans

Span = tuple[int, int]
"""Half-open ``[start, end)`` range of token (or character) positions."""

ETA_EPS = 1e-9
"""Added before flooring ``eta * N`` so that e.g. ``0.3 * 10 = 2.9999...`` still gives 3."""

DEFAULT_PREFILL = PREFILL
"""Text the prompt pre-fills in the assistant turn; the trace is hinted after it."""

ANSWER_MARKER = "The answer is"
"""MetaMathQA's final-answer phrase, used to find the answer in traces without ``\\boxed{}``."""


CountRule = Literal["released", "paper"]
"""How many of N chunks a canvas reveals for a share eta (see the module docstring)."""


@dataclass
class HintConfig:
    """How hint canvases are drawn from a reference trace (defaults: the released IGPO run)."""

    enabled: bool = True
    """Build hints at all; when False every canvas is fully masked (no hints, eta = 0)."""
    eta_low: float = 0.2
    """Lower bound of the per-rollout hint share eta ~ U[eta_low, eta_high]."""
    eta_high: float = 0.6
    """Upper bound of eta; ``eta_low == eta_high == 1.0`` gives full hints (every chunk)."""
    min_chunk: int = 5
    """Shortest chunk in tokens; a trailing piece shorter than this is dropped."""
    max_chunk: int = 10
    """Longest chunk in tokens (chunk lengths are uniform in [min_chunk, max_chunk])."""
    tail_free: int = 30
    """The last positions of the canvas that are never hinted (the trace is cut to fit before)."""
    hide_answer: bool = False
    """Never reveal a chunk overlapping the final-answer span (paper; the released code shows it)."""
    reveal_last_chunk: bool = True
    """Always reveal the last chunk of the truncated trace (released code; paper: False), unless
    hide_answer forbids it because that chunk holds the answer."""
    spread: bool = True
    """Stretch the gaps between revealed chunks (released code; paper: False, trace positions)."""
    count_rule: CountRule = "released"
    """released: reveal N - int(N * (1 - eta)) of N chunks; paper: floor(eta * N)."""
    max_spread: float = 1.5
    """With spread: gap stretch factor is clip(effective_len / trace_len, 1, max_spread)."""
    max_gap: int = 100
    """With spread: no stretched gap between consecutive revealed chunks exceeds this (released
    ``max_spacing``, 100)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta_low <= 1.0:
            raise InvalidSetting(f"eta_low must be in [0, 1], got {self.eta_low}")
        if not self.eta_low <= self.eta_high <= 1.0:
            raise InvalidSetting(f"eta_high must be in [eta_low, 1], got {self.eta_high}")
        if self.min_chunk < 1:
            raise InvalidSetting(f"min_chunk must be >= 1, got {self.min_chunk}")
        if self.max_chunk < self.min_chunk:
            raise InvalidSetting(f"max_chunk must be >= min_chunk, got {self.max_chunk}")
        if self.tail_free < 0:
            raise InvalidSetting(f"tail_free must be >= 0, got {self.tail_free}")
        if self.max_spread < 1.0:
            raise InvalidSetting(f"max_spread must be >= 1, got {self.max_spread}")
        if self.max_gap < 0:
            raise InvalidSetting(f"max_gap must be >= 0, got {self.max_gap}")
        coerce(self.count_rule, CountRule, "count_rule")

    def hinted_length(self, gen_length: int) -> int:
        """Canvas positions hints may fill: all but the last tail_free."""
        return max(0, gen_length - self.tail_free)

    @classmethod
    def paper(cls, **changes: Any) -> HintConfig:
        """The paper's reading: answer hidden, no forced last chunk, trace positions, floor(eta N)."""
        reading = {"hide_answer": True, "reveal_last_chunk": False, "spread": False, "count_rule": "paper"}
        return cls(**{**reading, **changes})


# --------------------------------------------------------------------------- answer span


def find_answer_span(trace_ids: Sequence[int], answer_ids: Sequence[int]) -> Span | None:
    """Token span of the LAST occurrence of ``answer_ids`` inside ``trace_ids`` (None if absent).

    Token-level matching only: the answer tokenized alone may differ from its in-context tokens
    (BPE merges), so prefer :func:`encode_trace`, which locates the answer in the text.
    """
    needle = list(answer_ids)
    hay = list(trace_ids)
    if not needle:
        return None
    for start in range(len(hay) - len(needle), -1, -1):
        if hay[start : start + len(needle)] == needle:
            return start, start + len(needle)
    return None


def _last_box(text: str) -> Span | None:
    """Character span of the last complete ``\\boxed{...}`` command (command through brace)."""
    spans = box_spans(text)
    if not spans:
        return None
    command, _, end = spans[-1]
    return (command, end + 1)


def answer_char_span(trace: str, answer: str | None = None) -> Span | None:
    """Character span of the final answer in a trace, found in this order of preference.

    1. the last complete ``\\boxed{...}`` (the whole command, so ``\\boxed{`` is hidden too);
    2. the last ``The answer is ...`` phrase through the end of the text (MetaMathQA traces);
    3. the last occurrence of the gold ``answer`` string, if given.
    """
    if (box := _last_box(trace)) is not None:
        return box
    if (idx := trace.rfind(ANSWER_MARKER)) >= 0:
        return idx, len(trace.rstrip())
    if answer and (idx := trace.rfind(answer.strip())) >= 0:
        return idx, idx + len(answer.strip())
    return None


@dataclass
class EncodedTrace:
    """A reference trace as hint material: token ids and the answer's token span."""

    ids: list[int]
    """Token ids of the trace after the prefill, i.e. aligned with completion position 0."""
    answer_span: Span | None
    """Token span of the final answer inside ``ids`` (None when it could not be located)."""


def encode_trace(tokenizer: Any, trace: str, answer: str | None = None, prefill: str = DEFAULT_PREFILL) -> EncodedTrace:
    """Tokenize a trace for hinting: drop the prompt's ``prefill`` and locate the answer tokens.

    The prompt already ends in ``prefill`` (e.g. ``<reasoning>``), so completion position 0 is
    the trace text after it. The answer span comes from :func:`answer_char_span` mapped to
    tokens through offsets (fast tokenizers); otherwise by token matching of that text.
    """
    if prefill and trace.startswith(prefill):
        trace = trace[len(prefill) :]
    chars = answer_char_span(trace, answer)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(trace, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        if chars is None:
            return EncodedTrace(ids, None)
        offsets = enc["offset_mapping"]
        hits = [i for i, (s, e) in enumerate(offsets) if s < chars[1] and chars[0] < e]
        return EncodedTrace(ids, (hits[0], hits[-1] + 1) if hits else None)
    ids = list(tokenizer.encode(trace, add_special_tokens=False))
    if chars is None:
        return EncodedTrace(ids, None)
    needle = tokenizer.encode(trace[chars[0] : chars[1]], add_special_tokens=False)
    return EncodedTrace(ids, find_answer_span(ids, needle))


# --------------------------------------------------------------------------- canvas


def sample_etas(n: int, cfg: HintConfig, generator: torch.Generator) -> list[float]:
    """``n`` hint shares eta ~ U[eta_low, eta_high] (exactly eta_low when the bounds are equal)."""
    if n < 0:
        raise InvalidSetting(f"n must be >= 0, got {n}")
    if not cfg.enabled:
        return [0.0] * n
    draws = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
    return [cfg.eta_low + (cfg.eta_high - cfg.eta_low) * u for u in draws]


def cut_chunks(length: int, min_chunk: int, max_chunk: int, generator: torch.Generator) -> list[Span]:
    """Consecutive chunks of ``length`` tokens, lengths uniform in [min_chunk, max_chunk].

    A trailing piece shorter than ``min_chunk`` is dropped (released code), so the chunks may
    cover fewer than ``length`` tokens.
    """
    most = length // min_chunk + 1
    sizes = torch.randint(min_chunk, max_chunk + 1, (most,), generator=generator).tolist()
    return chunk_spans(length, sizes, min_chunk)


def chunk_spans(length: int, sizes: Sequence[int], min_chunk: int) -> list[Span]:
    """Consecutive spans of the given sizes over ``length`` tokens, cut at the end; stops at the
    first piece shorter than ``min_chunk`` (the deterministic half of :func:`cut_chunks`)."""
    chunks: list[Span] = []
    start = 0
    for size in sizes:
        size = min(size, length - start)
        if size < min_chunk:
            break
        chunks.append((start, start + size))
        start += size
    return chunks


def _overlaps(chunk: Span, span: Span | None) -> bool:
    """Whether two half-open spans share a position."""
    return span is not None and chunk[0] < span[1] and span[0] < chunk[1]


def reveal_count(n_chunks: int, eta: float, rule: CountRule) -> int:
    """How many of ``n_chunks`` a canvas reveals for share ``eta`` (before any forced last chunk).

    released: the code masks ``int(n * (1 - eta))`` chunks (float arithmetic as written there) and
    reveals the rest; paper: ``floor(eta * n)`` (with ETA_EPS against 0.3 * 10 = 2.999...).
    """
    if rule == "released":
        return n_chunks - max(0, int(n_chunks * (1 - eta)))
    return math.floor(eta * n_chunks + ETA_EPS)


def choose_chunks(
    chunks: Sequence[Span],
    eta: float,
    cfg: HintConfig,
    generator: torch.Generator,
    answer_span: Span | None = None,
) -> list[Span]:
    """The chunks to reveal, in trace order (rules in the module docstring)."""
    hidden = cfg.hide_answer
    eligible = [i for i, c in enumerate(chunks) if not (hidden and _overlaps(c, answer_span))]
    count = min(reveal_count(len(chunks), eta, cfg.count_rule), len(eligible))
    order = torch.randperm(len(eligible), generator=generator).tolist()
    chosen = {eligible[j] for j in order[:count]}
    last = len(chunks) - 1
    if cfg.reveal_last_chunk and last in eligible:
        chosen.add(last)
    return [chunks[i] for i in sorted(chosen)]


def spread_positions(revealed: Sequence[Span], trace_len: int, effective_len: int, cfg: HintConfig) -> list[Span]:
    """Canvas spans of revealed chunks with gaps stretched as in the released code.

    factor = clip(effective_len / trace_len, 1, max_spread); the first chunk starts at
    ``int(start * factor)``; each later one ``min(int(gap * factor), max_gap)`` after the previous
    one's end. Chunks are cut at ``effective_len``; those that no longer fit are dropped.
    """
    factor = min(max(effective_len / max(trace_len, 1), 1.0), cfg.max_spread)
    placed: list[Span] = []
    for idx, (start, end) in enumerate(revealed):
        if idx == 0:
            pos = int(start * factor)
        else:
            gap = start - revealed[idx - 1][1]
            pos = placed[-1][1] + min(int(gap * factor), cfg.max_gap)
        stop = min(pos + end - start, effective_len)
        if stop <= pos:
            break
        placed.append((pos, stop))
    return placed


def build_hint_canvas(
    trace_ids: Sequence[int],
    gen_length: int,
    cfg: HintConfig,
    mask_id: int,
    eta: float,
    generator: torch.Generator,
    answer_span: Span | None = None,
) -> torch.Tensor:
    """One ``[gen_length]`` canvas: ``mask_id`` where free, trace tokens where hinted.

    ``answer_span`` is a token span of ``trace_ids`` (see :func:`encode_trace`); chunks touching
    it stay hidden when ``cfg.hide_answer``. ``canvas != mask_id`` is the hinted-position mask.
    """
    if gen_length < 1:
        raise InvalidSetting(f"gen_length must be >= 1, got {gen_length}")
    if not 0.0 <= eta <= 1.0:
        raise InvalidSetting(f"eta must be in [0, 1], got {eta}")
    if not cfg.enabled:
        return torch.full((gen_length,), mask_id, dtype=torch.long)
    if mask_id in trace_ids:
        raise InvalidSetting("trace_ids contain mask_id; a hint cannot be the mask token")
    chunks = cut_chunks(min(len(trace_ids), cfg.hinted_length(gen_length)), cfg.min_chunk, cfg.max_chunk, generator)
    revealed = choose_chunks(chunks, eta, cfg, generator, answer_span)
    return paint_canvas(trace_ids, revealed, gen_length, cfg, mask_id)


def paint_canvas(
    trace_ids: Sequence[int], revealed: Sequence[Span], gen_length: int, cfg: HintConfig, mask_id: int
) -> torch.Tensor:
    """The deterministic half of :func:`build_hint_canvas`: the revealed trace spans written on a
    masked ``[gen_length]`` canvas, at their trace positions or spread (``cfg.spread``)."""
    canvas = torch.full((gen_length,), mask_id, dtype=torch.long)
    effective = cfg.hinted_length(gen_length)
    trace = [int(t) for t in trace_ids[:effective]]
    placed = spread_positions(revealed, len(trace_ids), effective, cfg) if cfg.spread else list(revealed)
    for (start, _), (pos, stop) in zip(revealed, placed, strict=False):
        canvas[pos:stop] = torch.tensor(trace[start : start + stop - pos], dtype=torch.long)
    return canvas


def hinted_positions(canvas: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Boolean mask of hinted (fixed) positions of a canvas or a stack of canvases."""
    return canvas != mask_id


def build_hint_batch(
    trace_ids: Sequence[int],
    n: int,
    gen_length: int,
    cfg: HintConfig,
    mask_id: int,
    generator: torch.Generator,
    answer_ids: Sequence[int] | None = None,
    *,
    answer_span: Span | None = None,
    etas: Sequence[float] | None = None,
) -> torch.Tensor:
    """``[n, gen_length]`` canvases for one trace, each row with its own eta and chunking.

    The answer span is ``answer_span`` if given, else the last occurrence of ``answer_ids``.
    ``etas`` (one per row) default to :func:`sample_etas`; pass them to log the values used.
    """
    if etas is None:
        etas = sample_etas(n, cfg, generator)
    if len(etas) != n:
        raise InvalidSetting(f"etas must hold n={n} values, got {len(etas)}")
    if answer_span is None and answer_ids is not None:
        answer_span = find_answer_span(trace_ids, answer_ids)
    rows = [build_hint_canvas(trace_ids, gen_length, cfg, mask_id, eta, generator, answer_span) for eta in etas]
    if not rows:
        return torch.full((0, gen_length), mask_id, dtype=torch.long)
    return torch.stack(rows)
