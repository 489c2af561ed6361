"""Constants and the error of `igpo check`, shared by its modules."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

from harness.errors import UserError

DEFAULT_ALPHA = 0.05
DEFAULT_MAX_DROP_POINTS = 1.0
"""A task passes only when its interval rules out a drop larger than this (percentage points)."""
TARGET_POWER = 0.80
"""Power at which the minimum detectable drop is reported."""
BOOTSTRAP_RESAMPLES = 10_000
"""Monte-Carlo SE of a bootstrap p near 0.05 is about 0.002 with this many resamples."""
BOOTSTRAP_SEED = 0
BOOTSTRAP_CHUNK = 500
"""Resamples drawn together when resampling item indices (bounds memory at chunk x n)."""
MAX_VALUE_CATEGORIES = 256
"""Up to this many distinct d_i values the bootstrap draws multinomial counts per value (exactly
equivalent to resampling items, and much faster); beyond it, item indices are resampled."""
DEFAULT_CHECK_OUT = Path("runs/check")
POINTS = 100.0
"""Fractions -> percentage points."""
HASH_SHOWN = 23
"""Characters of a long value (a hash) shown in a mismatch message."""
FLOAT_SLACK = 1e-12
"""Rounding allowance when comparing float sums (equal values must compare as equal)."""
BISECTION_STEPS = 60
"""Halvings of a score-interval bound's bracket (width <= 2): 2 / 2^60 is below float resolution."""

PASS = "pass"
REGRESSION = "regression"
CANNOT_RULE_OUT = "cannot-rule-out"
"""No significant drop, but a drop beyond --max-drop is not ruled out: too few or too noisy items."""
EXIT_PASS = 0
EXIT_REGRESSION = 1
"""A regression, or a drop beyond --max-drop not ruled out: the gate fails either way."""
VERDICT_EXIT = {PASS: EXIT_PASS, REGRESSION: EXIT_REGRESSION, CANNOT_RULE_OUT: EXIT_REGRESSION}
TANGO = "tango-score"
"""Interval of one sample per item: Tango's score interval of the paired difference."""
BOOTSTRAP_INTERVAL = "cluster-bootstrap-percentile+score-floor"
"""Interval of avg@k: items resampled, at least Tango's no-discordance width (stats.paired_bootstrap)."""
MCNEMAR = "exact-mcnemar"
BOOTSTRAP = "paired-cluster-bootstrap"
CHECK_FORMAT = "igpo-check"
TASK_FIELDS = ("version", "repeats", "seeds", "limit")
"""Per-task record fields that must agree (besides decoding.* and data.hash)."""

_NORMAL = NormalDist()


class CheckError(UserError):
    """Runs that cannot be compared (different settings or items); printed as one line."""
