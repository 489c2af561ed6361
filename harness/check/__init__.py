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
  item-clustered SE (shown; for one sample per item the usual paired-proportion SE). `naive_se`
  (JSON only) treats the n x k sample pairs as independent, to show what clustering changes.
- one sample per item on both sides: exact McNemar, the two-sided binomial test of the
  discordant pairs: p = min(1, 2 P(X <= min(b, c))), X ~ Binomial(b + c, 1/2), b = right->wrong
  (losses), c = wrong->right (wins), computed with exact integers. Interval: Tango's score
  interval of (c - b) / n, every delta whose score test (null variance from the restricted
  maximum-likelihood 2x2 table) keeps it. Unlike Wald (D +- z SE) it keeps its coverage at small
  n and never collapses: with no discordant pair it is +-z^2 / (n + z^2) (n = 12: +-24 points).
- several samples per item: paired cluster bootstrap: items resampled with replacement
  (B = 10,000, seeded per task); p with the null imposed by centring,
  p = (1 + #{|mean(d*) - D| >= |D|}) / (B + 1); interval: the resampled means' percentile
  interval, widened to at least D +- Tango's no-discordance half-width (items that all agree
  leave the bootstrap nothing to resample, yet n items cannot rule out a change on about z^2/n
  of them).
- minimum detectable drop at 80% power (normal approximation):
  MDD = max(z sqrt(m2 / n), z^2 g / n), z = z_{1-alpha/2} + z_{0.80}, m2 = mean(d_i^2) (the
  discordance rate (b + c) / n for one sample per item: the variance of d under "no change"),
  g = 1 / samples per item (the smallest possible |d_i|). The second term is the floor reached
  when all observed disagreement would be the drop itself (m2 >= g |D| always holds), so two
  identical runs still report a finite MDD (z^2 / n for pass@1). `predicted_power` inverts it.
- verdict: "regression" when p < alpha and D < 0; otherwise "pass" when the interval's lower end
  is >= -max_drop (a drop larger than --max-drop points is ruled out at this level); otherwise
  "cannot-rule-out" (no significant drop, but one larger than max_drop is not ruled out: too few
  or too noisy items; the report gives `items_to_rule_out`, the n at which a candidate with no
  true change would rule it out with 80% power: max(z^2 m2 / max_drop^2, z_{1-alpha/2}^2
  (1 - max_drop) / max_drop)). --exact: any changed item is a regression, none a pass. A task
  whose samples are identical in both runs (a run against itself) says so in a note.
- exit code: 0 pass; 1 regression or cannot-rule-out (the worst task decides); 2 bad input (see
  harness.errors); --update-baseline always 0.

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
    BISECTION_STEPS,
    BOOTSTRAP,
    BOOTSTRAP_CHUNK,
    BOOTSTRAP_INTERVAL,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    CANNOT_RULE_OUT,
    CHECK_FORMAT,
    DEFAULT_ALPHA,
    DEFAULT_CHECK_OUT,
    DEFAULT_MAX_DROP_POINTS,
    EXIT_PASS,
    EXIT_REGRESSION,
    FLOAT_SLACK,
    HASH_SHOWN,
    MAX_VALUE_CATEGORIES,
    MCNEMAR,
    PASS,
    POINTS,
    REGRESSION,
    TANGO,
    TARGET_POWER,
    TASK_FIELDS,
    VERDICT_EXIT,
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
    items_to_rule_out,
    mcnemar_exact_p,
    min_detectable_drop,
    paired_bootstrap,
    paired_bootstrap_p,
    predicted_power,
    tango_interval,
)
