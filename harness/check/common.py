"""Constants and the error of `igpo check`, shared by its modules."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

from harness.errors import UserError

DEFAULT_ALPHA = 0.05
DEFAULT_MAX_DROP_POINTS = 1.0
"""Largest drop (percentage points) a task may be unable to rule out and still pass."""
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

PASS = "pass"
REGRESSION = "regression"
INCONCLUSIVE = "inconclusive-under-max-drop"
EXIT_PASS = 0
EXIT_REGRESSION = 1
MCNEMAR = "exact-mcnemar"
BOOTSTRAP = "paired-cluster-bootstrap"
CHECK_FORMAT = "igpo-check"
ADAPTER_CONFIG = "adapter_config.json"
CHECKPOINT_MARKER = "igpo_checkpoint.json"
"""Written by igpo.training.runtime into each checkpoint (kind: adapter | full, base_model)."""
TASK_FIELDS = ("version", "repeats", "seeds", "limit")
"""Per-task record fields that must agree (besides decoding.* and data.hash)."""

_NORMAL = NormalDist()


class CheckError(UserError):
    """Runs that cannot be compared (different settings or items); printed as one line."""
