"""Accuracy intervals for eval results: Wilson for one sample per item, clustered otherwise;
Student-t intervals over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054
"""Two-sided 95% standard-normal quantile."""


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved near 0 and 1)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def clustered_stderr(item_means: Sequence[float]) -> float:
    """Standard error of the mean of per-item means: samples of one item form one cluster."""
    n = len(item_means)
    if n < 2:
        return 0.0
    mean = sum(item_means) / n
    var = sum((x - mean) ** 2 for x in item_means) / (n - 1)
    return math.sqrt(var / n)


def accuracy_interval(
    item_means: Sequence[float], samples_per_item: int
) -> tuple[float, tuple[float, float], float, str]:
    """(accuracy, 95% interval, standard error, kind) for per-item mean correctness."""
    n = len(item_means)
    acc = sum(item_means) / n if n else 0.0
    if samples_per_item <= 1:
        se = math.sqrt(acc * (1 - acc) / n) if n else 0.0
        return acc, wilson_interval(acc * n, n), se, "wilson"
    se = clustered_stderr(item_means)
    if se == 0.0:  # every item identical (all 0 or all 1): the normal interval collapses
        return acc, wilson_interval(acc * n, n), se, "wilson-items"
    return acc, (max(0.0, acc - Z95 * se), min(1.0, acc + Z95 * se)), se, "cluster"


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval of the mean of `values` (two or more), clipped to [0, 1]."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)
