"""Coverage of `igpo check`'s interval for one sample per item: Tango's score interval against
the Wald interval it replaced, by simulation and by exact enumeration of every 2x2 table.

A pair of runs on n items is a multinomial draw of the four cells (both right, loss = right ->
wrong, win = wrong -> right, both wrong); the true paired difference is p(win) - p(loss).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.check import items_to_rule_out, tango_interval

N_ITEMS = 60
BASELINE_P = 0.6
SIMULATED_PAIRS = 2_000
SEED = 20_240_601
Z95 = 1.959964
"""z_{0.975}: the default alpha's two-sided normal quantile."""
MIN_COVERAGE = 0.94
"""Nominal 95%, less about two Monte-Carlo SDs at 2,000 pairs (sqrt(0.95 x 0.05 / 2000) = 0.005)."""
WALD_SHORTFALL = 0.92
"""Where discordance is small, Wald's coverage falls below this (exactly 0.876 at 6% / 1%)."""

SCENARIOS = {
    # name: (p(loss), p(win)); the candidate's accuracy is BASELINE_P - p(loss) + p(win)
    "no change, correlated pair (phi 0.58)": (0.10, 0.10),
    "5-point drop, candidate 55%": (0.15, 0.10),
    "5-point drop, small discordance": (0.06, 0.01),
}
SMALL_DISCORDANCE = "5-point drop, small discordance"


def wald_interval(losses: np.ndarray, wins: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The old interval: D +- z SE with the paired item SE (ddof 1); [0, 0] with no discordance."""
    diff = (wins - losses) / n
    variance = ((losses + wins) / n - diff * diff) * n / (n - 1)
    half = Z95 * np.sqrt(np.maximum(variance, 0.0) / n)
    return diff - half, diff + half


def coverage(low: np.ndarray, high: np.ndarray, truth: float, weights: np.ndarray | None = None) -> float:
    """Share (or probability, with weights) of intervals that hold the true difference."""
    held = (low <= truth + 1e-12) & (truth - 1e-12 <= high)
    return float(np.average(held, weights=weights))


def simulate(p_loss: float, p_win: float, rng: np.random.Generator) -> tuple[float, float]:
    """(Tango coverage, Wald coverage) over SIMULATED_PAIRS multinomial pairs of N_ITEMS items."""
    cells = [BASELINE_P - p_loss, p_loss, p_win, 1 - BASELINE_P - p_win]
    table = rng.multinomial(N_ITEMS, cells, size=SIMULATED_PAIRS)
    losses, wins = table[:, 1], table[:, 2]
    truth = p_win - p_loss
    return (
        coverage(*tango_interval(losses, wins, N_ITEMS), truth),
        coverage(*wald_interval(losses, wins, N_ITEMS), truth),
    )


def test_score_interval_covers_at_60_items_where_wald_does_not(capsys):
    rng = np.random.default_rng(SEED)
    measured = {name: simulate(*rates, rng) for name, rates in SCENARIOS.items()}
    with capsys.disabled():
        print(f"\n[coverage of 95% intervals, n = {N_ITEMS}, {SIMULATED_PAIRS:,} pairs] ", end="")
        print("; ".join(f"{k}: score {s:.3f}, Wald {w:.3f}" for k, (s, w) in measured.items()))
    for name, (score, wald) in measured.items():
        assert score >= MIN_COVERAGE, (name, score)
        assert wald <= score, (name, wald, score)
    assert measured[SMALL_DISCORDANCE][1] < WALD_SHORTFALL


def test_exact_coverage_over_every_table():
    """The same scenarios without Monte-Carlo noise: each 2x2 table weighted by its probability."""
    losses, wins = (g.ravel() for g in np.meshgrid(np.arange(N_ITEMS + 1), np.arange(N_ITEMS + 1)))
    keep = losses + wins <= N_ITEMS
    losses, wins = losses[keep], wins[keep]
    rest = N_ITEMS - losses - wins
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, N_ITEMS + 1)))])
    log_count = log_factorial[N_ITEMS] - log_factorial[losses] - log_factorial[wins] - log_factorial[rest]
    score = tango_interval(losses, wins, N_ITEMS)
    wald = wald_interval(losses, wins, N_ITEMS)
    for name, (p_loss, p_win) in SCENARIOS.items():
        log_p = log_count + losses * math.log(p_loss) + wins * math.log(p_win) + rest * math.log(1 - p_loss - p_win)
        weights = np.exp(log_p)
        assert weights.sum() == pytest.approx(1.0)
        exact_score, exact_wald = coverage(*score, p_win - p_loss, weights), coverage(*wald, p_win - p_loss, weights)
        assert exact_score >= MIN_COVERAGE and exact_wald <= exact_score, (name, exact_score, exact_wald)


def test_no_discordant_pair_keeps_width():
    """n = 12 concordant pairs: +-z^2 / (n + z^2) = +-24.2 points (Wald: [0, 0])."""
    low, high = tango_interval(0, 0, 12)
    assert float(high) == pytest.approx(Z95**2 / (12 + Z95**2), rel=1e-6) == -float(low)
    assert float(high) == pytest.approx(0.2425, abs=1e-4)
    assert wald_interval(np.array(0), np.array(0), 12) == (0.0, 0.0)


def test_tango_interval_matches_the_published_example_and_a_brute_force_scan():
    """Table (1, 1, 7, 12): Tango's interval -0.517 to -0.026 as Fagerland, Lydersen and Laake
    (2014) report it. Other tables: a grid of score tests (restricted likelihood maximised by
    search, not by the closed form) keeps exactly the interval, and |score| = z at its bounds."""
    low, high = tango_interval(7, 1, 21)
    assert (round(float(low), 3), round(float(high), 3)) == (-0.517, -0.026)
    grid = np.linspace(-1, 1, GRID_POINTS)
    spacing = grid[1] - grid[0]
    for losses, wins, n in [(3, 0, 12), (0, 0, 30), (12, 0, 12), (5, 9, 40), (1, 20, 25)]:
        kept = grid[np.abs(score_by_search(grid, losses, wins, n)) <= Z95]
        low, high = (float(b) for b in tango_interval(losses, wins, n))
        assert kept.min() == pytest.approx(low, abs=spacing) and kept.max() == pytest.approx(high, abs=spacing)
        assert len(kept) == round((kept.max() - kept.min()) / spacing) + 1  # one piece
        inner = [b for b in (low, high) if abs(b) < 1]
        assert np.abs(score_by_search(np.array(inner), losses, wins, n)) == pytest.approx(Z95, abs=1e-3)


GRID_POINTS = 2_001
"""Deltas (and, per delta, candidate loss rates) tried by the brute-force check."""


def score_by_search(deltas: np.ndarray, losses: int, wins: int, n: int) -> np.ndarray:
    """Tango's score at each delta, the loss rate maximising the multinomial likelihood under
    p(win) - p(loss) = delta found by a grid search over its feasible range."""
    steps = np.linspace(0, 1, GRID_POINTS)[None, :]
    start, stop = np.maximum(0, -deltas)[:, None], ((1 - deltas) / 2)[:, None]
    x = start + (stop - start) * steps
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = [(losses, x), (wins, x + deltas[:, None]), (n - losses - wins, 1 - 2 * x - deltas[:, None])]
        log_l = sum(k * np.log(np.maximum(v, 1e-300)) for k, v in terms if k > 0)
    p_loss = x[np.arange(len(deltas)), np.argmax(log_l, axis=1)]
    variance = np.maximum(n * (2 * p_loss + deltas * (1 - deltas)), 1e-300)
    return (wins - losses - n * deltas) / np.sqrt(variance)


@pytest.mark.parametrize("max_drop", [0.01, 0.03, 0.10])
def test_items_to_rule_out_inverts_the_interval(max_drop):
    """With no discordance the score interval first fits inside max_drop at the returned n; with
    discordance m2 it is the non-inferiority size (z_{0.975} + z_{0.8})^2 m2 / max_drop^2."""
    n = int(items_to_rule_out(max_drop, 0.0))
    assert float(tango_interval(0, 0, n)[0]) >= -max_drop > float(tango_interval(0, 0, n - 1)[0])
    assert items_to_rule_out(max_drop, 0.2) == math.ceil((Z95 + 0.841621) ** 2 * 0.2 / max_drop**2 - 1e-6)
    assert items_to_rule_out(0.0, 0.2) == math.inf
