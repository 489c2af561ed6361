"""Prompt, gold and metric functions referenced by the igpo lm-eval task YAMLs (``!function``).

lm-eval imports this file by path (module name = its path), so it only uses absolute imports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from statistics import fmean
from typing import Any

from igpo.data import finite_gold
from igpo.prompts import D1_INSTRUCTION
from igpo.scoring.answers import format_gold_number, gsm8k_gold, strict_correct
from igpo.scoring.pool import verify_ahead, verify_answers

PROMPT_INSTRUCTION = D1_INSTRUCTION
"""d1's system prompt (multi-line form of its eval code); a blank line, then the question."""

QUESTION_FIELDS = ("problem", "question")
"""Row fields that may hold the question text, in order of preference."""


def doc_to_text(doc: dict[str, Any]) -> str:
    """d1/IGPO zero-shot prompt: instruction, blank line, question (assistant turn prefilled)."""
    question = next((doc[f] for f in QUESTION_FIELDS if doc.get(f)), None)
    if question is None:
        raise KeyError(f"row has none of the question fields {QUESTION_FIELDS}")
    return f"{PROMPT_INSTRUCTION}\n\n{str(question).strip()}"


def _finite(gold: str, doc: dict[str, Any]) -> str:
    """The gold, refused in one line naming the problem when it is NaN or infinite (a row read
    from the Hub; local files are checked by line before any model loads)."""
    question = next((str(doc[f]) for f in QUESTION_FIELDS if doc.get(f)), "?")
    return finite_gold(gold, f"the row of problem {question.strip()[:60]!r}")


def gold_gsm8k(doc: dict[str, Any]) -> str:
    """GSM8K gold: the number after ``####``."""
    return _finite(gsm8k_gold(doc["answer"]), doc)


def gold_math(doc: dict[str, Any]) -> str:
    """MATH-500 gold: the ``answer`` field (LaTeX)."""
    return _finite(str(doc["answer"]).strip(), doc)


def gold_amc(doc: dict[str, Any]) -> str:
    """AMC gold: the numeric ``answer`` field as a clean string (``142.0`` -> ``"142"``)."""
    return _finite(format_gold_number(doc["answer"]), doc)


def keep_all_responses(resps: Iterable[list[str]], docs: Iterable[dict[str, Any]]) -> Iterable:
    """Identity filter: keep every repeat so process_results can average over them (avg@k)."""
    return resps


def _scored_ahead(resps: Iterable[list[str]], docs: Iterable[dict[str, Any]], gold_of: Callable[[dict], str]) -> list:
    """`keep_all_responses`, after verifying every response of the task at once on the worker pool
    (`igpo.scoring.pool.verify_ahead`; inside `shared_verdicts()` only, as in `igpo eval`). lm-eval runs
    the filter over all of a task's documents before its metrics, which then score one document at
    a time: this way they read the verdicts the pool already reached, the same ones."""
    resps = list(resps)
    verify_ahead((gold_of(doc), response) for doc, r in zip(docs, resps, strict=True) for response in _responses([r]))
    return resps


def keep_all_scored_gsm8k(resps: Iterable[list[str]], docs: Iterable[dict[str, Any]]) -> list:
    """The GSM8K tasks' filter: every response kept, all verified at once (`_scored_ahead`)."""
    return _scored_ahead(resps, docs, gold_gsm8k)


def keep_all_scored_math(resps: Iterable[list[str]], docs: Iterable[dict[str, Any]]) -> list:
    """The MATH-500 task's filter: every response kept, all verified at once (`_scored_ahead`)."""
    return _scored_ahead(resps, docs, gold_math)


def keep_all_scored_amc(resps: Iterable[list[str]], docs: Iterable[dict[str, Any]]) -> list:
    """The AMC tasks' filter: every response kept, all verified at once (`_scored_ahead`)."""
    return _scored_ahead(resps, docs, gold_amc)


def total(values: Sequence[float]) -> float:
    """Aggregation for counters such as ``timeouts``: the sum over documents."""
    return float(sum(values))


def _responses(results: Sequence[Any]) -> list[str]:
    """The k responses of one document, whether lm-eval passes ``[str]`` or ``[[str, ...]]``."""
    first = results[0] if results else []
    return [str(r) for r in first] if isinstance(first, (list, tuple)) else [str(first)]


def score_responses(gold: str, results: Sequence[Any]) -> dict[str, float]:
    """Per-document metrics: mean math-verify and strict correctness over repeats, timeouts."""
    responses = _responses(results)
    verified = verify_answers([(gold, r) for r in responses])  # the k repeats in parallel
    strict = [strict_correct(gold, r) for r in responses]
    return {
        "exact_match": fmean(float(s.correct) for s in verified),
        "strict_match": fmean(float(s.correct) for s in strict),
        "timeouts": float(sum(s.timed_out for s in verified)),
    }


def process_results_gsm8k(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, float]:
    """Metrics for one GSM8K document."""
    return score_responses(gold_gsm8k(doc), results)


def process_results_math(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, float]:
    """Metrics for one MATH-500 document."""
    return score_responses(gold_math(doc), results)


def process_results_amc(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, float]:
    """Metrics for one AMC document."""
    return score_responses(gold_amc(doc), results)
