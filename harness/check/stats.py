"""Paired tests of `igpo check`: exact McNemar, the paired cluster bootstrap, minimum detectable drop and power."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.check.common import (
    _NORMAL,
    BOOTSTRAP_CHUNK,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    DEFAULT_ALPHA,
    FLOAT_SLACK,
    MAX_VALUE_CATEGORIES,
    TARGET_POWER,
)

# --------------------------------------------------------------------------- statistics


def mcnemar_exact_p(losses: int, wins: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of the discordant pairs against 1/2."""
    m = losses + wins
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(losses, wins) + 1))
    return min(1.0, 2 * tail / 2**m)  # exact integers; int / int rounds once


def paired_bootstrap_p(
    d: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int | Sequence[int] = BOOTSTRAP_SEED
) -> float:
    """Two-sided p-value of mean(d) = 0 by resampling items (clusters) with the null imposed.

    Resampling n items with replacement gives each distinct value of d a multinomial count, so
    with few distinct values (avg@k differences are multiples of 1/k) the counts are drawn
    directly: the same distribution as index resampling at a fraction of the cost.
    """
    n = len(d)
    if n == 0:
        return 1.0
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    values, counts = np.unique(d, return_counts=True)
    centred = values - observed
    if len(values) <= MAX_VALUE_CATEGORIES:
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ centred / n
    else:
        shifted = d - observed
        means = np.concatenate(
            [
                shifted[rng.integers(0, n, size=(min(BOOTSTRAP_CHUNK, resamples - start), n))].mean(axis=1)
                for start in range(0, resamples, BOOTSTRAP_CHUNK)
            ]
        )
    extreme = np.count_nonzero(np.abs(means) >= abs(observed) - FLOAT_SLACK)
    return float((1 + extreme) / (resamples + 1))


def _z_sum(alpha: float, power: float) -> float:
    return _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(power)


def min_detectable_drop(
    n: int,
    second_moment: float,
    granularity: float = 1.0,
    alpha: float = DEFAULT_ALPHA,
    power: float = TARGET_POWER,
) -> float:
    """Smallest true drop (fraction) detected with `power`: max(z sqrt(m2/n), z^2 g/n).

    Normal approximation of the paired test with the null variance m2 = mean(d^2) (McNemar's
    discordance rate for one sample per item); since m2 >= g |drop|, a drop too small to
    produce z^2 discordant items' worth of disagreement is never detectable (the floor).
    """
    if n <= 0:
        return math.inf
    z = _z_sum(alpha, power)
    return max(z * math.sqrt(max(second_moment, 0.0) / n), z * z * granularity / n)


def predicted_power(
    drop: float,
    n: int,
    second_moment: float,
    granularity: float = 1.0,
    alpha: float = DEFAULT_ALPHA,
) -> float:
    """Probability that a true drop `drop` (> 0, fraction) is flagged: the MDD formula inverted,
    Phi(drop sqrt(n / max(m2, g drop)) - z_{1-alpha/2})."""
    if drop <= 0 or n <= 0:
        return 0.0
    variance = max(second_moment, granularity * drop)
    return _NORMAL.cdf(drop * math.sqrt(n / variance) - _NORMAL.inv_cdf(1 - alpha / 2))
