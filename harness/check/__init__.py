"""`igpo check`: is a candidate model worse than a baseline run? A paired regression test for CI.

The candidate is either an existing run (a folder with results.json) or a model / adapter, which
is then evaluated here with the baseline's own protocol, seeds, limit and decoding settings. Both
runs are paired item by item and each task gets a verdict.

Pairing. Samples are grouped by (task key, doc_id); an item's score is its mean correctness over
all its seeds x repeats, so the k samples of one problem form one cluster. Items present in only
one run are an error (equal settings and data hash give equal item sets, so a difference means a
partial or foreign run); with --allow-mismatch they are dropped and the report says how many.

Statistics, per task with n paired items, d_i = candidate_i - baseline_i:
- difference D = mean(d); standard error SE = sqrt(sum (d_i - D)^2 / (n (n - 1))), the
  item-clustered SE (for one sample per item it is the usual paired-proportion SE); the interval
  is D +- z_{1-alpha/2} SE (Wald; 95% at the default alpha). `naive_se` (JSON only) treats the
  n x k sample pairs as independent, to show what clustering changes.
- p-value: one sample per item on both sides -> exact McNemar, the two-sided binomial test of the
  discordant pairs: p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2), b = right->wrong
  (losses), c = wrong->right (wins), computed with exact integers. Several samples per item ->
  paired cluster bootstrap: items resampled with replacement (B = 10,000, seeded per task), the
  null imposed by centring, p = (1 + #{|mean(d* - D)| >= |D|}) / (B + 1).
- minimum detectable drop at 80% power (normal approximation):
  MDD = max(z sqrt(m2 / n), z^2 g / n), z = z_{1-alpha/2} + z_{0.80}, m2 = mean(d_i^2) (the
  discordance rate (b + c) / n for one sample per item: the variance of d under "no change"),
  g = 1 / samples per item (the smallest possible |d_i|). The second term is the floor reached
  when all observed disagreement would be the drop itself (m2 >= g |D| always holds), so two
  identical runs still report a finite MDD (z^2 / n for pass@1). `predicted_power` inverts it.
- verdict: "regression" when p < alpha and D < 0; otherwise "pass" when the interval's lower end
  is >= -max_drop (a drop larger than --max-drop points is ruled out at this level); otherwise
  "inconclusive-under-max-drop" (no significant drop, but one larger than max_drop is not ruled
  out: the task is too small or too noisy). Exit code: 1 if any task regressed, else 0; 2 on bad
  input (see harness.errors).

Comparability. Runs whose protocol (name, file hash), or any compared task's decoding settings,
version, data hash, repeats, seeds or limit differ are refused with the differing fields named,
e.g. `igpo_gsm8k.decoding.steps: 256 != 128` (baseline != candidate), unless --allow-mismatch.
"""

from __future__ import annotations

from harness.check.candidate import (  # noqa: F401
    CandidateModel,
    baseline_data_dir,
    baseline_protocol,
    decoding_overrides,
    evaluate_candidate,
    is_run,
    looks_like_model,
    model_and_adapter,
    update_baseline,
)
from harness.check.command import (  # noqa: F401
    CheckRequest,
    _allowing,
    _check_writable,
    _replace_baseline,
    emit,
    run_check,
)
from harness.check.common import (  # noqa: F401
    _NORMAL,
    ADAPTER_CONFIG,
    BOOTSTRAP,
    BOOTSTRAP_CHUNK,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CHECK_FORMAT,
    CHECKPOINT_MARKER,
    DEFAULT_ALPHA,
    DEFAULT_CHECK_OUT,
    DEFAULT_MAX_DROP_POINTS,
    EXIT_PASS,
    EXIT_REGRESSION,
    FLOAT_SLACK,
    HASH_SHOWN,
    INCONCLUSIVE,
    MAX_VALUE_CATEGORIES,
    MCNEMAR,
    PASS,
    POINTS,
    REGRESSION,
    TARGET_POWER,
    TASK_FIELDS,
    CheckError,
)
from harness.check.compare import (  # noqa: F401
    CheckSettings,
    TaskComparison,
    _shown,
    compare_task,
    mismatches,
    select_tasks,
)
from harness.check.pairing import (  # noqa: F401
    PairedTask,
    _Item,
    _sample_diffs,
    item_table,
    pair_task,
)
from harness.check.report import (  # noqa: F401
    SAMPLES_TOLERANCE,
    CheckReport,
    _check_samples_match,
    _label,
    _mdd_text,
    _p_text,
    compare_records,
    compare_runs,
)
from harness.check.stats import (  # noqa: F401
    _z_sum,
    mcnemar_exact_p,
    min_detectable_drop,
    paired_bootstrap_p,
    predicted_power,
)
