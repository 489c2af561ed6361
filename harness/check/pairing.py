"""Pairing two runs item by item: samples grouped by (task, doc_id), one mean score per item."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.check.common import (
    CheckError,
)
from harness.eval.records import Sample

# --------------------------------------------------------------------------- pairing


@dataclass
class PairedTask:
    """One task's items present in both runs, in a common order."""

    key: str
    doc_ids: list[Any]
    baseline: np.ndarray
    """Per-item mean correctness of the baseline (one cluster per item)."""
    candidate: np.ndarray
    samples_per_item: int
    """Largest number of samples of an item in either run (1: pass@1 with one seed)."""
    sample_diffs: np.ndarray | None = None
    """Per-sample differences paired by (seed, repeat); None when they do not pair up."""
    notes: list[str] = field(default_factory=list)
    identical: bool = False
    """Every item's samples (seed, repeat, response, verdict) are the same in both runs."""


@dataclass
class _Item:
    total: float = 0.0
    count: int = 0
    by_sample: dict[tuple[Any, Any], float] = field(default_factory=dict)
    responses: Counter = field(default_factory=Counter)
    """(seed, repeat, response, correct) of each sample: what a run checked against itself shares."""


def item_table(rows: Iterable[Sample], keys: set[str]) -> dict[str, dict[Any, _Item]]:
    """(task key -> doc_id -> item) for the wanted task keys (rows validated by load_samples)."""
    table: dict[str, dict[Any, _Item]] = {k: {} for k in keys}
    for row in rows:
        if row.task not in table:
            continue
        item = table[row.task].setdefault(row.item, _Item())
        item.total += float(row.correct)
        item.count += 1
        item.by_sample[(row.seed, row.repeat)] = float(row.correct)
        item.responses[(row.seed, row.repeat, row.response, row.correct)] += 1
    return table


def pair_task(key: str, base: dict[Any, _Item], cand: dict[Any, _Item], allow_missing: bool) -> PairedTask:
    """Pair the items of one task; items in only one run are an error unless `allow_missing`."""
    only_base = [d for d in base if d not in cand]
    only_cand = [d for d in cand if d not in base]
    notes = []
    if only_base or only_cand:
        what = f"{len(only_base)} item(s) only in the baseline, {len(only_cand)} only in the candidate"
        if not allow_missing:
            example = (only_base or only_cand)[0]
            raise CheckError(
                f"{key}: {what} (e.g. doc_id {example!r}); the runs do not cover the same "
                "problems (use --allow-mismatch to compare the common items)"
            )
        notes.append(f"{what}: dropped")
    docs = [d for d in base if d in cand]
    if not docs:
        raise CheckError(f"{key}: no items in common between the runs")
    b_items = [base[d] for d in docs]
    c_items = [cand[d] for d in docs]
    b = np.fromiter((i.total / i.count for i in b_items), float, len(docs))
    c = np.fromiter((i.total / i.count for i in c_items), float, len(docs))
    per_item = max(max(i.count for i in b_items), max(i.count for i in c_items))
    identical = not (only_base or only_cand) and all(
        bi.responses == ci.responses for bi, ci in zip(b_items, c_items, strict=True)
    )
    return PairedTask(key, docs, b, c, per_item, _sample_diffs(b_items, c_items), notes, identical)


def _sample_diffs(b_items: list[_Item], c_items: list[_Item]) -> np.ndarray | None:
    diffs: list[float] = []
    for bi, ci in zip(b_items, c_items, strict=True):
        if bi.by_sample.keys() != ci.by_sample.keys() or len(bi.by_sample) != bi.count:
            return None
        diffs.extend(ci.by_sample[s] - v for s, v in bi.by_sample.items())
    return np.asarray(diffs, dtype=float)


def flipped(paired: PairedTask) -> tuple[list[Any], list[Any]]:
    """(doc ids whose score went down, doc ids whose score went up) from baseline to candidate:
    the items `igpo check` counts as losses and wins."""
    d = paired.candidate - paired.baseline
    return [doc for doc, x in zip(paired.doc_ids, d, strict=True) if x < 0], [
        doc for doc, x in zip(paired.doc_ids, d, strict=True) if x > 0
    ]
