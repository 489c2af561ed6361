"""Paired tests of `igpo check`: exact McNemar, Tango's score interval, the paired cluster
bootstrap, minimum detectable drop, power and the items needed to rule a drop out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.check.common import (
    _NORMAL,
    BISECTION_STEPS,
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


def _restricted_loss_rate(delta: np.ndarray, losses: np.ndarray, wins: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Maximum-likelihood loss rate p12 of the 2x2 table under the constraint p21 - p12 = delta
    (the positive root of 2n x^2 + W x - losses delta (1 - delta) = 0; Tango 1998)."""
    w = (2 * n + losses - wins) * delta - (losses + wins)
    discriminant = np.maximum(w * w + 8 * n * losses * delta * (1 - delta), 0.0)
    return (np.sqrt(discriminant) - w) / (4 * n)


def _score_side(delta: np.ndarray, losses: np.ndarray, wins: np.ndarray, n: np.ndarray, z2: float) -> np.ndarray:
    """+1 where `delta` lies below Tango's interval, -1 above it, 0 inside. Compared squared, so a
    null variance of 0 (delta = +-1) needs no division."""
    score = wins - losses - n * delta
    variance = n * (2 * _restricted_loss_rate(delta, losses, wins, n) + delta * (1 - delta))
    outside = score * score > z2 * np.maximum(variance, 0.0)
    return np.where(outside, np.sign(score), 0.0)


def tango_interval(
    losses: np.ndarray | int, wins: np.ndarray | int, n: np.ndarray | int, alpha: float = DEFAULT_ALPHA
) -> tuple[np.ndarray, np.ndarray]:
    """Tango's score interval of the paired difference (wins - losses) / n, elementwise: every
    delta its score test keeps. Unlike Wald it keeps width at small n and with no discordant
    pair (n = 12, none: +-z^2 / (n + z^2) = +-24 points)."""
    losses, wins, n = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (losses, wins, n)))
    z2 = _NORMAL.inv_cdf(1 - alpha / 2) ** 2
    diff = (wins - losses) / n
    bounds = []
    for edge, side in ((-1.0, 1.0), (1.0, -1.0)):
        outer, inner = np.full_like(diff, edge), diff.copy()
        for _ in range(BISECTION_STEPS):  # outer stays outside the interval, inner inside
            mid = (outer + inner) / 2
            out = _score_side(mid, losses, wins, n, z2) == side
            outer, inner = np.where(out, mid, outer), np.where(out, inner, mid)
        edge_inside = _score_side(np.full_like(diff, edge), losses, wins, n, z2) != side
        bounds.append(np.where(edge_inside, edge, inner))
    return bounds[0], bounds[1]


def _bootstrap_means(d: np.ndarray, resamples: int, seed: int | Sequence[int]) -> np.ndarray:
    """Means of d over `resamples` resamples of its items (clusters) with replacement.

    Resampling n items with replacement gives each distinct value of d a multinomial count, so
    with few distinct values (avg@k differences are multiples of 1/k) the counts are drawn
    directly: the same distribution as index resampling at a fraction of the cost.
    """
    n = len(d)
    rng = np.random.default_rng(seed)
    values, counts = np.unique(d, return_counts=True)
    if len(values) <= MAX_VALUE_CATEGORIES:
        return rng.multinomial(n, counts / n, size=resamples) @ values / n
    return np.concatenate(
        [
            d[rng.integers(0, n, size=(min(BOOTSTRAP_CHUNK, resamples - start), n))].mean(axis=1)
            for start in range(0, resamples, BOOTSTRAP_CHUNK)
        ]
    )


def _null_p(means: np.ndarray, observed: float) -> float:
    """Two-sided bootstrap p of mean = 0: resampled means centred on the observed one (the null
    imposed), p = (1 + #{|mean* - D| >= |D|}) / (B + 1)."""
    extreme = np.count_nonzero(np.abs(means - observed) >= abs(observed) - FLOAT_SLACK)
    return float((1 + extreme) / (len(means) + 1))


def paired_bootstrap_p(
    d: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int | Sequence[int] = BOOTSTRAP_SEED
) -> float:
    """Two-sided p-value of mean(d) = 0 by resampling items (clusters) with the null imposed."""
    if len(d) == 0:
        return 1.0
    return _null_p(_bootstrap_means(d, resamples, seed), float(d.mean()))


def paired_bootstrap(
    d: np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int | Sequence[int] = BOOTSTRAP_SEED,
    alpha: float = DEFAULT_ALPHA,
) -> tuple[float, tuple[float, float]]:
    """(p-value, interval) of mean(d) from one set of item resamples (avg@k).

    The interval is the bootstrap's percentile interval widened to at least Tango's interval
    with no discordant item, centred on mean(d): items that all agree leave the bootstrap no
    spread to resample, yet n items cannot rule out a change on about z^2 / n of them.
    """
    means = _bootstrap_means(d, resamples, seed)
    observed = float(d.mean())
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    floor_low, floor_high = tango_interval(0, 0, len(d), alpha)
    interval = (
        max(-1.0, min(float(low), observed + float(floor_low))),
        min(1.0, max(float(high), observed + float(floor_high))),
    )
    return _null_p(means, observed), interval


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


def items_to_rule_out(
    max_drop: float, second_moment: float, alpha: float = DEFAULT_ALPHA, power: float = TARGET_POWER
) -> float:
    """Items at which a candidate with no true change rules out a drop of `max_drop` (fraction)
    with probability `power`, at the observed mean(d^2): the non-inferiority sample size
    (z_{1-alpha/2} + z_power)^2 m2 / max_drop^2, and at least the n whose no-discordance score
    interval, +-z^2 / (n + z^2), fits inside max_drop. inf when max_drop is 0."""
    if max_drop <= 0:
        return math.inf
    if max_drop >= 1:
        return 1.0
    z = _NORMAL.inv_cdf(1 - alpha / 2)
    by_variance = _z_sum(alpha, power) ** 2 * max(second_moment, 0.0) / max_drop**2
    by_resolution = z * z * (1 - max_drop) / max_drop
    return float(math.ceil(max(by_variance, by_resolution)))
