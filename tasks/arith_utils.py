"""Dataset, prompt and metric functions of the ``igpo_arith`` lm-eval task (``!function``).

The task evaluates the CPU-scale testbed (:mod:`igpo.arith`): a fixed test set generated on the
spot (no download, no data file) from the reserved test pools, :data:`N_PER_LEVEL` problems for
each number of operations in :data:`LEVELS` (default 6 x 50 = 300 documents). A document looks
like::

    {"id": "arith-test-L2-0", "steps": 2, "answer": "...", "question": "... ?",
     "trace": "<reasoning> ... </reasoning> <answer> \\boxed{...} </answer>"}

Documents are interleaved by level (L1, L2, ..., L6, L1, ...), so lm-eval's ``--limit 60``
still evaluates 10 problems of every level.

Metrics: those of the other igpo tasks (``tasks.utils.score_responses``: exact_match,
strict_match, timeouts; means over ``repeats``) plus ``acc_steps_<L>``, the exact_match of the
level-L documents only. Every document returns every ``acc_steps_<L>`` key -- None for the
other levels -- and :func:`mean_present` averages the values that are present. (lm-eval 0.4.13
would also accept a missing key, averaging only the documents that report it, but then warns
that the metrics were scored on different numbers of documents.)

lm-eval imports this file by path, so it only uses absolute imports.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

from igpo.arith import ARITH_INSTRUCTION, TEST_SEED, test_set
from tasks.utils import score_responses

LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
"""Numbers of operations in the test set; one ``acc_steps_<L>`` metric each (see the YAML)."""

N_PER_LEVEL = 50
"""Documents per level: 300 in all, a +-7 point 95% interval per level at 50% accuracy, and
few enough for CPU evaluation of the tiny model. Override with ``dataset_kwargs`` or lm-eval's
``--metadata '{"n_per_level": 100}'`` (at most igpo.arith.TEST_POOL_PER_LEVEL)."""

SPLIT = "test"
"""The one split of the generated dataset (the YAML's test_split)."""

LEVEL_METRIC = "acc_steps_{}"
"""Name of the per-level accuracy metric."""

DATASET_SOURCE = f"generated:igpo.arith.test_set(seed={TEST_SEED})"
"""Provenance string of the generated test set (the registry's dataset_source)."""


def test_docs(n_per_level: int = N_PER_LEVEL) -> list[dict[str, Any]]:
    """The task's documents, interleaved by level (L1, L2, ..., L1, L2, ...)."""
    by_level = [test_set(n_per_level, [level]) for level in LEVELS]
    return [level[i].to_dict() for i in range(n_per_level) for level in by_level]


test_docs.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def load_test_set(n_per_level: int = N_PER_LEVEL, **_ignored: Any):
    """lm-eval ``custom_dataset``: a DatasetDict with the generated test split.

    lm-eval calls it with the task's ``metadata`` and ``dataset_kwargs`` as keyword arguments
    (version, model arguments, ...); all but ``n_per_level`` are ignored.
    """
    from datasets import Dataset, DatasetDict

    return DatasetDict({SPLIT: Dataset.from_list(test_docs(int(n_per_level)))})


def dataset_hash(n_per_level: int = N_PER_LEVEL) -> str:
    """``sha256:<hex>`` of the documents as JSON lines (provenance, like a data file's hash)."""
    digest = hashlib.sha256()
    for doc in test_docs(n_per_level):
        digest.update((json.dumps(doc, sort_keys=True) + "\n").encode())
    return f"sha256:{digest.hexdigest()}"


def doc_to_text(doc: dict[str, Any]) -> str:
    """The user turn: ARITH_INSTRUCTION, a blank line and the question; the question alone
    while the instruction is empty (assistant turn prefilled with ``<reasoning>``)."""
    question = str(doc["question"]).strip()
    return f"{ARITH_INSTRUCTION}\n\n{question}" if ARITH_INSTRUCTION else question


def process_results(doc: dict[str, Any], results: Sequence[Any]) -> dict[str, float | None]:
    """The shared igpo metrics plus ``acc_steps_<L>``: the doc's exact_match at its level L,
    None at the other levels (so those means ignore it)."""
    metrics: dict[str, float | None] = dict(score_responses(str(doc["answer"]), results))
    for level in LEVELS:
        metrics[LEVEL_METRIC.format(level)] = metrics["exact_match"] if int(doc["steps"]) == level else None
    return metrics


def mean_present(values: Sequence[float | None]) -> float | None:
    """Aggregation of the per-level metrics: the mean of the values that are not None / NaN.

    None when no document of the level was evaluated (e.g. under a small ``--limit``): lm-eval
    writes null in its results JSON and leaves the table cell empty (a NaN would be written as
    the non-standard `NaN` token).
    """
    present = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None
