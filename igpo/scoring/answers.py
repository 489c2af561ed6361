"""What a correct answer is: answer extraction, gold strings, and the two metrics' verdicts.

* math-verify correctness (gold first), identical to ``verify(parse(gold), parse(response))`` with
  math-verify's default extraction (the gold boxed unless it carries its own delimiters:
  :func:`gold_for_math_verify`, :func:`parse_and_verify`). A response whose verdict follows from
  math-verify's own rules is decided in-process (:func:`fast_verdict`: a canonical integer or
  decimal in the response's only box against the same or another canonical number); everything
  else runs in a worker process, bounded in time (:mod:`igpo.scoring.pool`'s ``verify_answer``).
* :func:`strict_correct` -- d1-style strict metric: the first ``\\boxed{}`` only, compared
  numerically or after a MATH-style string normalisation (:func:`normalize_math_answer`).

This module must stay importable without torch, ``harness`` or ``tasks`` (RL code imports it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from igpo.errors import InvalidSetting

BOX_COMMANDS: tuple[str, ...] = ("\\boxed", "\\fbox")
"""LaTeX commands whose brace-delimited argument is treated as the final answer."""

MAX_NUMBER_CHARS = 64
"""Longer strings are never parsed as numbers by the strict metric (keeps int parsing bounded)."""


@dataclass
class Score:
    """Outcome of scoring one response against one gold answer."""

    correct: bool
    extracted: str | None
    timed_out: bool


# --------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def box_spans(text: str) -> list[tuple[int, int, int]]:
    """(command start, content start, content end) of every complete top-level ``\\boxed{}`` /
    ``\\fbox{}``; the closing brace sits at content end. The one brace matcher of the project."""
    spans: list[tuple[int, int, int]] = []
    pos = 0
    while (match := _BOX_RE.search(text, pos)) is not None:
        start = match.end()
        depth = 1
        i = start
        while i < len(text) and depth:
            char = text[i]
            if char == "\\":
                i += 2  # skip escaped characters such as \{ and \}
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            i += 1
        if depth:  # unbalanced: no closing brace, nothing later can close either
            break
        spans.append((match.start(), start, i - 1))
        pos = i
    return spans


def extract_boxed(text: str, which: Literal["first", "last"] = "last") -> str | None:
    """Content of the first or last complete ``\\boxed{...}`` / ``\\fbox{...}`` (brace-balanced).

    Boxes nested inside a box are part of the outer content; unbalanced boxes are ignored.
    """
    if which not in ("first", "last"):
        raise InvalidSetting(f"which must be 'first' or 'last', got {which!r}")
    spans = box_spans(text)
    if not spans:
        return None
    _, start, end = spans[0] if which == "first" else spans[-1]
    return text[start:end]


def gsm8k_gold(answer_field: str) -> str:
    """The GSM8K gold number: the text after the last ``####``, commas removed."""
    if "####" not in answer_field:
        raise InvalidSetting("GSM8K answer field has no '####' marker")
    return answer_field.rsplit("####", 1)[1].strip().replace(",", "")


def format_gold_number(value: float | int | str) -> str:
    """A clean gold string from a numeric field (e.g. AMC's ``142.0`` -> ``"142"``)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- numbers

_DECIMAL_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_FRAC_RE = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{(\d+)\}")
_SLASH_RE = re.compile(r"([+-]?\d+)/(\d+)")


def _parse_number(text: str) -> Fraction | None:
    """Exact value of an integer, decimal, comma-grouped number or integer fraction, else None."""
    if len(text) > MAX_NUMBER_CHARS:
        return None
    if _DECIMAL_RE.fullmatch(text):
        return Fraction(text.replace(",", ""))
    if match := _FRAC_RE.fullmatch(text):
        sign, num, den = match.groups()
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign == "-" else value
    if match := _SLASH_RE.fullmatch(text):
        num, den = match.groups()
        return Fraction(int(num), int(den)) if int(den) else None
    return None


# --------------------------------------------------------------------------- normalisation

_UNIT_RE = re.compile(r"(?<=[\d}).])\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .]*\}(\^\d)?$")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")
_CHOICE_RE = re.compile(r"\(?([A-Ea-e])\)?")
_LATEX_SPACES = ("\\,", "\\;", "\\:", "\\ ", "\\quad", "\\qquad")


def _fix_fracs(text: str) -> str:
    """Add braces to shorthand fractions: ``\\frac12`` -> ``\\frac{1}{2}``."""
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", text)
    return re.sub(r"\\frac(\{[^{}]*\})(\d)", r"\\frac\1{\2}", text)


def normalize_math_answer(answer: str) -> str:
    """MATH-style canonical string for an answer, used by the strict metric's string compare."""
    text = answer.strip()
    if (inner := extract_boxed(text, "first")) is not None and text.startswith(BOX_COMMANDS):
        text = inner.strip()
    text = text.replace("\n", "").replace("\\!", "")
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = text.replace("\\$", "").replace("$", "")
    text = text.replace("\\%", "").replace("%", "")
    text = text.replace("{,}", ",")
    text = _UNIT_RE.sub("", text)
    text = _TEXT_WRAP_RE.sub(r"\1", text)
    for spacing in _LATEX_SPACES:
        text = text.replace(spacing, "")
    text = re.sub(r"\s+", "", text)
    text = re.sub(r"(^|[{(\[,=+-])\.(\d)", r"\g<1>0.\2", text)
    text = _fix_fracs(text)
    text = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text)
    if match := _SLASH_RE.fullmatch(text):
        text = f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}"
    if text.count("=") == 1:
        lhs, rhs = text.split("=")
        if len(lhs) <= 2 and lhs.isalpha():
            text = rhs
    text = text.rstrip(".")
    if match := _CHOICE_RE.fullmatch(text):
        text = match.group(1).upper()
    return text


def strict_correct(gold: str, response: str) -> Score:
    """d1-style strict metric: the FIRST ``\\boxed{}`` only (no box -> wrong), numeric or string."""
    boxed = extract_boxed(response, "first")
    if boxed is None:
        return Score(correct=False, extracted=None, timed_out=False)
    gold_norm = normalize_math_answer(gold)
    pred_norm = normalize_math_answer(boxed)
    gold_num, pred_num = _parse_number(gold_norm), _parse_number(pred_norm)
    if gold_num is not None and pred_num is not None:
        return Score(correct=gold_num == pred_num, extracted=boxed, timed_out=False)
    return Score(correct=bool(gold_norm) and gold_norm == pred_norm, extracted=boxed, timed_out=False)


# --------------------------------------------------------------------------- math-verify

_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")


def gold_for_math_verify(gold: str) -> str:
    """Gold text math-verify can parse: boxed unless it already carries delimiters."""
    if _BOX_RE.search(gold) or _UNESCAPED_DOLLAR_RE.search(gold) or "\\[" in gold:
        return gold.replace("\\fbox", "\\boxed")
    return f"\\boxed{{{gold.strip()}}}"


def parse_and_verify(gold: str, response: str) -> tuple[bool, str | None]:
    """math-verify correctness and the extracted answer text (runs inside the worker)."""
    from math_verify import parse, verify

    gold_parsed = parse(gold, parsing_timeout=None)
    pred_parsed = parse(response, parsing_timeout=None)
    extracted = next((p for p in reversed(pred_parsed) if isinstance(p, str)), None)
    if not gold_parsed or not pred_parsed:
        return False, extracted
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), extracted


# --------------------------------------------------------------------------- fast verdict

CANONICAL_NUMBER_RE = re.compile(r"0|-?[1-9][0-9]{0,14}|-?(?:0|[1-9][0-9]{0,5})\.[0-9]{0,5}[1-9]")
"""A number with one spelling per value: an integer of up to 15 digits (no leading zero, no
``-0``, no ``+``), or a decimal below 10^6 in size with 1 to 6 decimals, the last not 0."""

_BOX_OPEN = "\\boxed{"
_FINAL_ANSWER_RE = re.compile("final answer", re.IGNORECASE)
_QUIET_TAIL_RE = re.compile(r"[^$\]}\\]*")
"""Text after the box that can close no LaTeX environment and no ``\\boxed{.+}`` match."""


def fast_verdict(gold: str, response: str) -> tuple[bool, str] | None:
    """``(correct, extracted)`` where math-verify's verdict follows from its own rules, else None.

    Decided only when the stripped gold G is a canonical number (CANONICAL_NUMBER_RE), the
    response holds exactly one ``\\boxed`` (written ``\\boxed{``, no ``\\fbox``) whose content C is
    a canonical number, nothing after that box holds ``$``, ``]``, ``}`` or a backslash, and the
    response never says "final answer". Why that is math-verify's verdict (math-verify 0.9):

    * Extraction: with no "final answer" nothing matches at priority 0 and the only priority-50
      match is the box: ``\\boxed{.+}`` runs from the only ``\\boxed{`` to the last ``}``, which is
      C's closing brace, and a ``$``/``\\[``/``\\(``/``[`` environment around the box would need its
      closing delimiter after ``\\boxed{`` (none in C or the tail). So ``parse(response)`` is
      ``parse("\\boxed{C}")``, and the gold, sent as ``\\boxed{G}``, is parsed the same way:
      ``[Integer or Float, "C"]`` (a canonical number always parses; tested).
    * Verdict: ``verify`` is true when any gold/response pair of the two lists agrees; the two
      strings agree exactly when G == C. Canonical spellings are unique, so G != C means two
      different values: integers compare exactly, and where a decimal is involved math-verify
      rounds both to 6 decimals, which keeps values with at most 6 decimals (below 10^15 for
      integers, 10^6 for decimals) apart.
    """
    gold = gold.strip()
    if CANONICAL_NUMBER_RE.fullmatch(gold) is None:
        return None
    if response.count("\\boxed") != 1 or "\\fbox" in response:
        return None
    start = response.find(_BOX_OPEN)
    end = response.find("}", start + len(_BOX_OPEN)) if start >= 0 else -1
    if end < 0:
        return None
    candidate = response[start + len(_BOX_OPEN) : end]
    if CANONICAL_NUMBER_RE.fullmatch(candidate) is None:
        return None
    if _QUIET_TAIL_RE.fullmatch(response, end + 1) is None or _FINAL_ANSWER_RE.search(response):
        return None
    return candidate == gold, candidate
