"""`igpo check` on synthetic run records: verdicts, power, clustering, refusals, CLI, speed.

Runs are written with harness.eval.results.write_results from per-item correctness arrays, so every
case (flips, clustered avg@k, mismatched settings, corrupt files) is built exactly.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.check import (
    BOOTSTRAP,
    CANNOT_RULE_OUT,
    MCNEMAR,
    PASS,
    REGRESSION,
    CandidateModel,
    CheckError,
    CheckSettings,
    PairedTask,
    compare_records,
    compare_runs,
    compare_task,
    mcnemar_exact_p,
    min_detectable_drop,
    predicted_power,
    tango_interval,
)
from harness.cli import app
from harness.eval.records import ModelInfo, ProtocolInfo, RunRecord
from harness.eval.results import (
    RESULTS_FILE,
    SAMPLES_FILE,
    TaskResult,
    load_results,
    load_samples,
    write_results,
)
from harness.markdown import cells

runner = CliRunner()

GSM = "igpo_gsm8k"
AMC = "igpo_amc"
DECODING = {
    "gen_length": 512,
    "block_length": 32,
    "steps": 256,
    "temperature": 0.0,
    "remasking": "low_confidence",
}
SIM_REPLICATES = 300
POWER_TOLERANCE = 0.08
"""Allowed gap between empirical and predicted power (binomial SD at 300 replicates ~0.023)."""
TIME_BOUND_S = 2.0
"""Generous bound for the under-1-second comparison of 2,000 items (a busy 2-core machine)."""


# --------------------------------------------------------------------------- synthetic runs


def task_rows(key: str, correct: np.ndarray, seeds: list[int]) -> list[dict[str, Any]]:
    """samples.jsonl rows of one task: correct[i, j] is item i's j-th sample (seed-major)."""
    per_seed = correct.shape[1] // len(seeds)
    return [
        {
            "task": key,
            "doc_id": i,
            "seed": seeds[j // per_seed],
            "repeat": j % per_seed,
            "response": "",
            "extracted": "",
            "gold": "",
            "correct": bool(correct[i, j]),
        }
        for i in range(correct.shape[0])
        for j in range(correct.shape[1])
    ]


def task_result(key: str, correct: np.ndarray, **changes: Any) -> TaskResult:
    """The results.json table entry of one task (accuracy over per-item means)."""
    acc = float(correct.mean())
    fields: dict[str, Any] = dict(
        task=key.split("@")[0],
        metric="exact_match",
        accuracy=acc,
        n_items=correct.shape[0],
        samples_per_item=correct.shape[1],
        ci95=(acc, acc),
        ci_kind="wilson",
        stderr=0.0,
        decoding=dict(DECODING),
        repeats=correct.shape[1],
        seeds=[0],
        limit=None,
        version=1.0,
        data={"source": "local:x", "hash": "sha256:" + "a" * 64},
    )
    fields.update(changes)
    return TaskResult(**fields)


def write_run(
    folder: Path,
    tasks: dict[str, np.ndarray],
    protocol: str = "igpo",
    task_changes: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A run folder with one task per array (shape [items, samples]); one seed per sample column
    group: the task's seeds (task_changes), else seed 0 (avg@k tasks: k repeats of seed 0)."""
    table, rows = {}, []
    for key, correct in tasks.items():
        table[key] = task_result(key, correct, **(task_changes or {}).get(key, {}))
        rows += task_rows(key, correct, (task_changes or {}).get(key, {}).get("seeds", [0]))
    record = RunRecord(
        tasks=table,
        model=ModelInfo(name_or_path="base-model"),
        protocol=ProtocolInfo(name=protocol, file_hash=f"sha256:{protocol}", seeds=[0]),
        run_name=folder.name,
        label=folder.name,
    )
    write_results(folder, record, rows)
    return folder


def binary(n: int, accuracy: float, seed: int = 0) -> np.ndarray:
    """n single-sample items, round(accuracy n) of them right, in random order."""
    col = np.zeros(n, dtype=bool)
    col[: round(accuracy * n)] = True
    return np.random.default_rng(seed).permutation(col)[:, None]


def flip(correct: np.ndarray, right_to_wrong: int, wrong_to_right: int = 0) -> np.ndarray:
    """A copy with the first k right items made wrong and the first m wrong items made right."""
    out = correct.copy()
    right, wrong = np.flatnonzero(out[:, 0]), np.flatnonzero(~out[:, 0])
    out[right[:right_to_wrong], 0] = False
    out[wrong[:wrong_to_right], 0] = True
    return out


def paired(baseline: np.ndarray, candidate: np.ndarray, key: str = GSM) -> PairedTask:
    """In-memory pairing of per-item means (for fast simulations)."""
    return PairedTask(key, list(range(len(baseline))), baseline.astype(float), candidate.astype(float), 1)


# --------------------------------------------------------------------------- verdicts


Z95 = 1.959964
"""z_{0.975}: the default alpha's two-sided normal quantile."""


def test_identical_runs_keep_an_honest_interval(tmp_path):
    """A run against itself: no change measured, but the interval is what n items can rule out,
    +-z^2 / (n + z^2) (never [0, 0]); it passes only where that lies within --max-drop."""
    correct = binary(300, 0.7)
    sampled = np.random.default_rng(1).random((80, 16)) < 0.4
    base = write_run(tmp_path / "base", {GSM: correct, AMC: sampled})
    cand = write_run(tmp_path / "cand", {GSM: correct, AMC: sampled})
    report = compare_runs(base, cand, CheckSettings())
    by_task = {t.task: t for t in report.tasks}
    assert by_task[GSM].test == MCNEMAR and by_task[AMC].test == BOOTSTRAP
    for t in report.tasks:
        half = Z95**2 / (t.n_items + Z95**2)
        assert t.diff == 0 and t.p_value == 1.0 and t.identical
        assert t.ci95 == pytest.approx((-half, half), rel=1e-5) and t.ci95[1] - t.ci95[0] > 0
        assert any("are the same run (identical responses" in note for note in t.notes)
        assert 0 < t.min_detectable_drop < 1
    assert by_task[GSM].min_detectable_drop == pytest.approx((Z95 + 0.841621) ** 2 / 300, rel=1e-5)
    # 300 items rule out 1.26 pp, 80 items 4.58 pp: neither rules out the default 1 pp
    assert report.verdict == CANNOT_RULE_OUT and report.exit_code == 1
    assert "identical responses" in report.to_markdown()
    wide = compare_runs(base, cand, CheckSettings(max_drop=0.05))
    assert wide.verdict == PASS and wide.exit_code == 0


@pytest.mark.parametrize("n", [100, 500, 2000])
@pytest.mark.parametrize("k", [3, 5, 6, 8, 12, 25])
def test_k_right_to_wrong_flips(n, k):
    """k flips alone: exact McNemar p = 2^(1-k), flagged from k = 6 on at alpha 0.05, whatever n;
    a drop of at least the reported minimum detectable drop is always flagged."""
    base = binary(n, 0.6)
    result = compare_task(paired(base[:, 0], flip(base, k)[:, 0]), CheckSettings())
    assert (result.losses, result.wins) == (k, 0)
    assert result.p_value == pytest.approx(min(1.0, 2.0 ** (1 - k)))
    assert result.diff == pytest.approx(-k / n)
    assert (result.verdict == REGRESSION) == (k >= 6)
    if k / n >= result.min_detectable_drop:
        assert result.verdict == REGRESSION


@pytest.mark.parametrize("n,k", [(200, 10), (1000, 40)])
def test_equal_flips_both_ways_do_not_flag(n, k, tmp_path):
    base = binary(n, 0.5)
    cand = flip(base, k, k)
    report = compare_runs(
        write_run(tmp_path / "b", {GSM: base}),
        write_run(tmp_path / "c", {GSM: cand}),
        CheckSettings(),
    )
    t = report.tasks[0]
    assert (t.losses, t.wins) == (k, k) and t.diff == 0 and t.p_value == 1.0
    # no drop, but 2k discordant pairs leave the interval wider than the default 1 pp
    assert t.verdict == CANNOT_RULE_OUT and report.exit_code == 1 and not t.identical
    assert t.items_to_rule_out > n
    loose = compare_runs(tmp_path / "b", tmp_path / "c", CheckSettings(max_drop=0.05))
    assert loose.tasks[0].verdict == PASS and loose.exit_code == 0


def simulate_detection(n: int, p0: float, drop: float, wins_rate: float, seed: int) -> tuple[float, float]:
    """(empirical detection rate, predicted power) of random right->wrong / wrong->right flips:
    each right item flips with prob (drop + w)/p0 and each wrong item with prob w/(1 - p0)."""
    rng = np.random.default_rng(seed)
    q_loss, q_win = (drop + wins_rate) / p0, wins_rate / (1 - p0)
    settings = CheckSettings()
    hits = 0
    for _ in range(SIM_REPLICATES):
        base = rng.random(n) < p0
        u = rng.random(n)
        cand = np.where(base, u >= q_loss, u < q_win)
        hits += compare_task(paired(base, cand), settings).verdict == REGRESSION
    second_moment = drop + 2 * wins_rate  # discordance rate
    return hits / SIM_REPLICATES, predicted_power(drop, n, second_moment)


def mdd_for(n: int, wins_rate: float, granularity: float = 1.0) -> float:
    """The true drop equal to the MDD it implies (fixed point: m2 = drop + 2 w)."""
    drop = 0.01
    for _ in range(100):
        drop = min_detectable_drop(n, drop + 2 * wins_rate, granularity)
    return drop


@pytest.mark.parametrize("n,wins_rate", [(300, 0.0), (1000, 0.04), (2000, 0.1)])
def test_detection_rate_matches_predicted_power_at_the_mdd(n, wins_rate):
    """A true drop equal to the reported minimum detectable drop is flagged ~80% of the time."""
    drop = mdd_for(n, wins_rate)
    empirical, predicted = simulate_detection(n, 0.6, drop, wins_rate, seed=n)
    assert predicted == pytest.approx(0.8, abs=1e-6)
    assert abs(empirical - predicted) < POWER_TOLERANCE, (empirical, predicted, drop)


@pytest.mark.parametrize("n,drop,wins_rate", [(300, 0.03, 0.01), (1500, 0.01, 0.03)])
def test_detection_rate_matches_predicted_power_below_the_mdd(n, drop, wins_rate):
    empirical, predicted = simulate_detection(n, 0.5, drop, wins_rate, seed=7 * n)
    assert 0.2 < predicted < 0.75
    assert abs(empirical - predicted) < POWER_TOLERANCE, (empirical, predicted)


# --------------------------------------------------------------------------- avg@k clustering


def clustered_runs(n: int, k: int, drop_items: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """avg@k runs: items differ in difficulty; the candidate solves `drop_items` of them never.

    Candidate samples are drawn with the baseline's per-item rates (independently), so the
    differences are item-level (clustered): whole problems break, not single samples.
    """
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.2, 0.9, n)
    base = rng.random((n, k)) < rate[:, None]
    cand = rng.random((n, k)) < rate[:, None]
    cand[:drop_items] = False
    return base, cand


def test_avg_at_k_uses_clustered_standard_errors(tmp_path):
    base, cand = clustered_runs(200, 16, drop_items=25)
    report = compare_runs(
        write_run(tmp_path / "b", {AMC: base}),
        write_run(tmp_path / "c", {AMC: cand}),
        CheckSettings(),
    )
    t = report.tasks[0]
    assert t.test == BOOTSTRAP and t.samples_per_item == 16 and t.n_items == 200
    assert t.naive_se is not None and t.se > 1.3 * t.naive_se
    d = cand.mean(axis=1) - base.mean(axis=1)
    assert t.se == pytest.approx(d.std(ddof=1) / math.sqrt(200))
    assert t.diff == pytest.approx(d.mean())
    assert t.verdict == REGRESSION and t.p_value < 0.01
    assert t.min_detectable_drop == pytest.approx(min_detectable_drop(200, float(np.mean(d * d)), 1 / 16))


def test_avg_at_k_no_change_and_balanced_change_do_not_flag(tmp_path):
    base, cand = clustered_runs(200, 16, drop_items=0, seed=3)
    report = compare_runs(
        write_run(tmp_path / "b", {AMC: base}),
        write_run(tmp_path / "c", {AMC: cand}),
        CheckSettings(max_drop=0.10),
    )
    assert report.tasks[0].verdict == PASS
    same = compare_runs(
        write_run(tmp_path / "b2", {AMC: base}),
        write_run(tmp_path / "c2", {AMC: base}),
        CheckSettings(),
    )
    t = same.tasks[0]
    assert t.p_value == 1.0 and t.identical and t.ci95[0] < 0 < t.ci95[1]
    assert t.verdict == CANNOT_RULE_OUT  # 200 items rule out 1.9 pp, not the default 1 pp


def test_small_avg_at_k_task_cannot_rule_out_a_drop(tmp_path):
    base, cand = clustered_runs(20, 16, drop_items=1, seed=5)
    report = compare_runs(
        write_run(tmp_path / "b", {AMC: base}),
        write_run(tmp_path / "c", {AMC: cand}),
        CheckSettings(),
    )
    t = report.tasks[0]
    assert t.verdict == CANNOT_RULE_OUT and t.min_detectable_drop > 0.01
    assert report.verdict == CANNOT_RULE_OUT and report.exit_code == 1
    text = report.to_markdown()
    assert "**Overall: cannot-rule-out**" in text
    assert f"about {t.items_to_rule_out:,} items would rule it out, not 20" in text
    tiny = compare_task(paired(np.ones(5), np.ones(5)), CheckSettings())
    assert tiny.verdict == CANNOT_RULE_OUT and tiny.min_detectable_drop > 1
    assert tiny.ci95[0] == pytest.approx(-(Z95**2) / (5 + Z95**2), rel=1e-5)


def test_avg_at_k_power_at_the_mdd():
    """Clustered bootstrap: drop = MDD (from the simulation's own mean d^2) flagged ~80%."""
    n, k, shift = 300, 16, 0.032
    rng = np.random.default_rng(11)
    settings = CheckSettings(resamples=2000)
    hits, moments = 0, []
    for _ in range(200):
        rate = rng.beta(0.7, 0.7, n)
        base = (rng.random((n, k)) < rate[:, None]).mean(axis=1)
        cand = (rng.random((n, k)) < np.clip(rate - shift, 0, 1)[:, None]).mean(axis=1)
        d = cand - base
        moments.append(float(np.mean(d * d)))
        task = PairedTask(AMC, list(range(n)), base, cand, k)
        hits += compare_task(task, settings).verdict == REGRESSION
    true_drop = float(np.mean(rate - np.clip(rate - shift, 0, 1)))
    predicted = predicted_power(true_drop, n, float(np.mean(moments)), 1 / k)
    assert abs(hits / 200 - predicted) < 0.1, (hits / 200, predicted)


# --------------------------------------------------------------------------- refusals


def test_mismatched_settings_are_refused_by_field(tmp_path):
    correct = binary(100, 0.5)
    base = write_run(tmp_path / "b", {GSM: correct})
    cand = write_run(
        tmp_path / "c",
        {GSM: correct},
        protocol="d1",
        task_changes={
            GSM: {
                "decoding": {**DECODING, "steps": 128},
                "data": {"source": "x", "hash": "sha256:" + "b" * 64},
                "version": 2.0,
            }
        },
    )
    with pytest.raises(CheckError) as err:
        compare_runs(base, cand, CheckSettings())
    message = str(err.value)
    for part in (
        "protocol.name: igpo != d1",
        "protocol.file_hash",
        "igpo_gsm8k.decoding.steps: 256 != 128",
        "igpo_gsm8k.data.hash",
        "igpo_gsm8k.version: 1.0 != 2.0",
    ):
        assert part in message
    assert "\n" not in message
    report = compare_runs(base, cand, CheckSettings(allow_mismatch=True, max_drop=0.05))
    assert report.verdict == PASS and any("decoding.steps" in m for m in report.mismatches)
    assert "mismatch (allowed)" in report.to_markdown()


def test_items_in_one_run_only(tmp_path):
    base = write_run(tmp_path / "b", {GSM: binary(100, 0.5)})
    cand = write_run(tmp_path / "c", {GSM: binary(100, 0.5)[:90]})
    with pytest.raises(CheckError, match="10 item\\(s\\) only in the baseline"):
        compare_runs(base, cand, CheckSettings())
    report = compare_runs(base, cand, CheckSettings(allow_mismatch=True))
    assert report.tasks[0].n_items == 90 and "dropped" in report.tasks[0].notes[0]


def test_task_selection(tmp_path):
    correct = binary(50, 0.5)
    base = write_run(tmp_path / "b", {GSM: correct, f"{AMC}@256": np.tile(correct, (1, 4))})
    cand = write_run(tmp_path / "c", {GSM: correct})
    with pytest.raises(CheckError, match="lacks task"):
        compare_runs(base, cand, CheckSettings())
    assert [t.task for t in compare_runs(base, cand, CheckSettings(tasks=["gsm8k"])).tasks] == [GSM]
    with pytest.raises(ValueError, match="not in the baseline"):
        compare_runs(base, cand, CheckSettings(tasks=["math500"]))


# --------------------------------------------------------------------------- CLI


def cli(*args: str):
    return runner.invoke(app, ["check", *map(str, args)])


def error_lines(result) -> list[str]:
    text = result.stderr if hasattr(result, "stderr") else result.output
    return [line for line in text.strip().splitlines() if line.strip()]


def test_cli_exit_codes_and_outputs(tmp_path):
    base = binary(400, 0.6)
    b = write_run(tmp_path / "base", {GSM: base})
    same = write_run(tmp_path / "same", {GSM: base})
    worse = write_run(tmp_path / "worse", {GSM: flip(base, 30)})
    summary, report_json = tmp_path / "out" / "summary.md", tmp_path / "out" / "check.json"

    ok = cli(same, "--baseline", b, "--summary", summary, "--json", report_json)
    assert ok.exit_code == 0, ok.output
    assert any(cells(line)[:3] == ["task", "items", "baseline %"] for line in ok.stdout.splitlines())
    assert "**Overall: pass**" in ok.stdout
    assert summary.read_text() == ok.stdout
    data = json.loads(report_json.read_text())
    assert data["format"] == "igpo-check" and data["verdict"] == PASS and data["exit_code"] == 0
    assert data["tasks"][0]["task"] == GSM and data["tasks"][0]["test"] == MCNEMAR

    bad = cli(worse, "--baseline", b, "--json", report_json, "--max-drop", "0.5")
    assert bad.exit_code == 1, bad.output
    assert "**Overall: regression**" in bad.stdout
    assert json.loads(report_json.read_text())["tasks"][0]["verdict"] == REGRESSION


def test_cli_fails_a_small_task_25_points_worse(tmp_path):
    """12 items, 58.3% -> 33.3% (3 right -> wrong): McNemar p 0.25 is no proof of a drop, but a drop
    beyond 1 pp is not ruled out either, so the gate fails (it passed with exit 0 under Wald)."""
    base = binary(12, 7 / 12)
    b = write_run(tmp_path / "base", {GSM: base})
    worse = write_run(tmp_path / "worse", {GSM: flip(base, 3)})
    report_json = tmp_path / "check.json"
    result = cli(worse, "--baseline", b, "--json", report_json)
    assert result.exit_code == 1, result.output
    assert "**Overall: cannot-rule-out**" in result.stdout and "not ruled out" in result.stdout
    data = json.loads(report_json.read_text())
    task = data["tasks"][0]
    assert data["verdict"] == CANNOT_RULE_OUT and data["exit_code"] == 1
    assert task["verdict"] == CANNOT_RULE_OUT and task["interval"] == "tango-score"
    assert task["p_value"] == pytest.approx(0.25) and task["diff"] == pytest.approx(-0.25)
    assert (task["ci95"][0], task["ci95"][1]) == pytest.approx(tuple(map(float, tango_interval(3, 0, 12))))
    assert task["ci95"][0] < -0.5 and task["ci95"][1] > 0
    needed = task["items_to_rule_out"]
    assert needed > 10_000 and f"about {needed:,} items would rule it out, not 12" in result.stdout


def test_cli_run_against_itself_says_so_and_keeps_width(tmp_path):
    run = write_run(tmp_path / "run", {GSM: binary(12, 0.5)})
    result = cli(run, "--baseline", run, "--json", tmp_path / "check.json")
    assert result.exit_code == 1, result.output  # 12 items cannot rule out a 1 pp drop
    assert "candidate and baseline are the same run (identical responses" in result.stdout
    task = json.loads((tmp_path / "check.json").read_text())["tasks"][0]
    assert task["identical"] and task["ci95"][0] == pytest.approx(-0.2425, abs=1e-4) == -task["ci95"][1]
    assert cli(run, "--baseline", run, "--max-drop", "25").exit_code == 0
    assert cli(run, "--baseline", run, "--exact").exit_code == 0  # --exact: nothing changed, pass


def test_avg_at_k_interval_is_the_cluster_bootstrap_where_items_vary():
    """With real spread the percentile interval of resampled items is about D +- z SE; with none
    it is the score interval's +-z^2 / (n + z^2)."""
    base, cand = clustered_runs(400, 16, drop_items=0, seed=2)
    t = compare_task(PairedTask(AMC, list(range(400)), base.mean(1), cand.mean(1), 16), CheckSettings())
    assert t.interval == "cluster-bootstrap-percentile+score-floor" and not t.identical
    assert t.ci95 == pytest.approx((t.diff - Z95 * t.se, t.diff + Z95 * t.se), abs=0.15 * Z95 * t.se)
    flat = compare_task(PairedTask(AMC, list(range(400)), base.mean(1), base.mean(1), 16), CheckSettings())
    assert flat.ci95 == pytest.approx((-(Z95**2) / (400 + Z95**2), Z95**2 / (400 + Z95**2)), rel=1e-6)


def test_cli_errors_are_one_line_exit_2(tmp_path):
    good = write_run(tmp_path / "good", {GSM: binary(50, 0.5)})
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / RESULTS_FILE).write_text("{not json")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / RESULTS_FILE).write_text(json.dumps({"results": {"gsm8k": {"acc": 0.5}}}))
    bad_samples = write_run(tmp_path / "bad_samples", {GSM: binary(50, 0.5)})
    (bad_samples / SAMPLES_FILE).write_text('{"task": "igpo_gsm8k", "doc_id": 0, "correct": true}\n{oops\n')
    mismatch = write_run(
        tmp_path / "mismatch",
        {GSM: binary(50, 0.5)},
        task_changes={GSM: {"decoding": {**DECODING, "steps": 128}}},
    )
    edited = write_run(tmp_path / "edited", {GSM: binary(50, 0.5)})
    rows = [json.loads(x) for x in (edited / SAMPLES_FILE).read_text().splitlines()]
    for row in rows[:10]:
        row["correct"] = not row["correct"]  # samples no longer give the results' accuracy
    (edited / SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cases = {
        "but results.json reports": (edited, good),
        "not valid JSON": (corrupt, good),
        "not an igpo results file": (foreign, good),
        "line 2 is not valid JSON": (bad_samples, good),
        "candidate not found": (tmp_path / "missing", good),
        "no results file": (good, tmp_path / "missing"),
        "decoding.steps: 256 != 128": (mismatch, good),
    }
    for expected, (candidate, baseline) in cases.items():
        result = cli(candidate, "--baseline", baseline)
        lines = error_lines(result)
        assert result.exit_code == 2, (expected, result.output)
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert cli(good, "--baseline", foreign).exit_code == 2
    assert cli(good, "--baseline", good, "--alpha", "1.5").exit_code == 2
    allowed = cli(mismatch, "--baseline", good, "--allow-mismatch", "--max-drop", "10")
    assert allowed.exit_code == 0, allowed.output


def test_update_baseline_writes_the_candidate(tmp_path):
    base = binary(300, 0.6)
    worse = write_run(tmp_path / "worse", {GSM: flip(base, 40)})
    target = tmp_path / "baselines" / "main"
    first = cli(worse, "--baseline", target, "--update-baseline")  # no baseline yet: bootstraps
    assert first.exit_code == 0, first.output
    for name in (RESULTS_FILE, SAMPLES_FILE):
        assert (target / name).read_bytes() == (worse / name).read_bytes()
    write_run(tmp_path / "base", {GSM: base})
    older = tmp_path / "base"
    replaced = cli(older, "--baseline", target, "--update-baseline")  # an improvement, deliberately
    assert replaced.exit_code == 0, replaced.output
    assert "wrote baseline" in replaced.stdout and "igpo check" in replaced.stdout
    assert load_results(target).run_name == "base" and len(load_samples(target)) == 300
    assert not list(target.glob("*.tmp"))
    assert (target / RESULTS_FILE).stat().st_mode & 0o777 == 0o644


def test_candidate_model_is_evaluated_with_the_baseline_settings(tmp_path, monkeypatch):
    """A model candidate: the EvalRequest reproduces the baseline's protocol, seeds, limit and
    decoding (here a --steps override), and the resulting run is then compared."""
    import harness.eval.run as evaluate
    from harness.check import CheckRequest, run_check
    from harness.eval.protocols import load_protocol

    protocol = load_protocol("igpo")
    correct = binary(40, 0.5)
    changes = {}
    for key in (GSM, AMC):
        cfg, repeats = protocol.for_task(key, protocol.decoding.replace(steps=128))
        changes[key] = {
            "decoding": cfg.to_dict(),
            "limit": 40,
            "seeds": [0] if key == GSM else [0, 1, 2],
            "repeats": repeats,
        }
    base_dir = write_run(tmp_path / "base", {GSM: correct, AMC: np.tile(correct, (1, 48))}, task_changes=changes)
    record = json.loads((base_dir / RESULTS_FILE).read_text())
    record["protocol"] = protocol.to_dict()
    (base_dir / RESULTS_FILE).write_text(json.dumps(record))
    seen = {}

    def fake_run_eval(req):
        seen["req"] = req
        run = req.out / req.name
        write_run(run, {GSM: correct, AMC: np.tile(correct, (1, 48))}, task_changes=changes)
        cand = json.loads((run / RESULTS_FILE).read_text())
        cand["protocol"] = protocol.to_dict()
        (run / RESULTS_FILE).write_text(json.dumps(cand))
        return run / RESULTS_FILE

    monkeypatch.setattr(evaluate, "run_eval", fake_run_eval)
    monkeypatch.setattr(
        evaluate, "plan", lambda req: None
    )  # fake model and adapter: plan's checks are tested elsewhere
    model_dir = tmp_path / "ckpt"
    model_dir.mkdir()
    (model_dir / "adapter_config.json").write_text("{}")
    code = run_check(
        CheckRequest(
            candidate=str(model_dir),
            baseline=base_dir,
            settings=CheckSettings(max_drop=0.2),  # 40 identical items rule out 8.8 pp
            model=CandidateModel(out=tmp_path / "check" / "cand"),
        )
    )
    req = seen["req"]
    assert code == 0
    assert (req.model, req.adapter) == ("base-model", str(model_dir))
    assert req.protocol == "igpo" and req.overrides.given() == {"steps": 128}
    assert req.seeds == [0, 1, 2] and req.limit == 40 and req.tasks == [GSM, AMC]
    assert (req.out, req.name, req.leaderboard) == (tmp_path / "check", "cand", None)


def test_decoding_overrides_reproduce_a_flag_that_beat_a_task_setting():
    """`igpo eval --steps 48` gives igpo_arith 48 steps although the protocol sets 24 for it;
    the check finds that one override and the eval it plans decodes every task as the baseline."""
    from harness.check import decoding_overrides
    from harness.eval.protocols import load_protocol
    from igpo.decoding import DecodeOverrides

    protocol = load_protocol("igpo")
    flags = {"steps": 48}
    baseline = RunRecord(
        tasks={
            task: task_result(
                task,
                binary(4, 0.5),
                decoding=protocol.for_task(task, protocol.decoding, DecodeOverrides(**flags))[0].to_dict(),
            )
            for task in ("igpo_arith", GSM)
        }
    )
    assert baseline.tasks["igpo_arith"].decoding["steps"] == 48
    assert decoding_overrides(protocol, baseline, ["igpo_arith", GSM]).given() == flags


# --------------------------------------------------------------------------- speed


def test_comparison_of_2000_items_is_fast(tmp_path, capsys):
    """The comparison itself (pairing + tests) on 2,000 items, pass@1 and avg@16."""
    rng = np.random.default_rng(0)
    single_b = binary(2000, 0.7)
    single_c = flip(single_b, 25, 10)
    avg_b = rng.random((2000, 16)) < 0.5
    avg_c = rng.random((2000, 16)) < 0.48
    timings = {}
    for name, (b, c, key) in {
        "pass@1": (single_b, single_c, GSM),
        "avg@16": (avg_b, avg_c, AMC),
    }.items():
        base = write_run(tmp_path / f"b-{key}", {key: b})
        cand = write_run(tmp_path / f"c-{key}", {key: c})
        records = [load_results(base), load_samples(base), load_results(cand), load_samples(cand)]
        start = time.perf_counter()
        report = compare_records(records[0], records[1], records[2], records[3], CheckSettings())
        timings[name] = time.perf_counter() - start
        start = time.perf_counter()
        compare_runs(base, cand, CheckSettings())
        timings[name + " incl. loading"] = time.perf_counter() - start
        assert report.tasks[0].n_items == 2000
    with capsys.disabled():
        print("\n[check timing, 2,000 items] " + ", ".join(f"{k}: {v:.3f}s" for k, v in timings.items()))
    assert timings["pass@1"] < TIME_BOUND_S and timings["avg@16"] < TIME_BOUND_S


def test_exact_mcnemar_matches_the_binomial():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(6, 0) == pytest.approx(2 / 64)
    assert mcnemar_exact_p(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact_p(600, 400) == pytest.approx(2.6e-10, rel=0.3)


def test_exact_mode_fails_on_any_changed_item(tmp_path):
    """--exact (the project's own CI): one item moving either way fails; identical runs pass."""
    correct = binary(300, 0.7)
    base = write_run(tmp_path / "base", {GSM: correct})
    same = write_run(tmp_path / "same", {GSM: correct})
    up = write_run(tmp_path / "up", {GSM: flip(correct, 0, 1)})
    assert compare_runs(base, same, CheckSettings(exact=True)).verdict == PASS
    report = compare_runs(base, up, CheckSettings(exact=True))
    assert report.verdict == REGRESSION and report.exit_code == 1
    assert any("exact mode" in note for note in report.tasks[0].notes)
    assert compare_runs(base, up, CheckSettings()).verdict == PASS  # statistically nothing happened


def test_a_decoding_setting_missing_from_an_older_record_counts_as_its_default():
    """A baseline written before `last_tokens` existed stays comparable (the CI gate's case),
    while a real difference in that setting is still named."""
    from harness.check.compare import with_defaults
    from igpo.decoding import DecodeConfig

    new = DecodeConfig(gen_length=48, block_length=16, steps=24).to_dict()
    old = {k: v for k, v in new.items() if k != "last_tokens"}
    assert with_defaults(old) == with_defaults(new) == new
    assert with_defaults({**old, "last_tokens": [2]}) != new
    assert with_defaults(None) == {}
