"""`igpo ablate`: the quick grid end to end, resumability, the slurm script and bad grids.

The quick grid trains an untrained testbed-sized model (2 cells x 1 seed x 2 steps) and
evaluates 12 arith problems per checkpoint; it is the issue's CI smoke run.
"""

from __future__ import annotations

import shutil
import time

import pytest
from typer.testing import CliRunner

from harness.ablate.run import DONE_FILE
from harness.cli import app
from harness.eval.stats import t_interval

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CELLS = ("grpo", "igpo")
REGRESSION_LIMIT_S = 600.0
"""Far above the 3-minute acceptance budget (measured by hand; a loaded machine is slower):
only catches runaway slowdowns without making CI flaky."""
RERUN_LIMIT_S = 30.0


def igpo(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    from igpo.testbed.build import init_model

    folder = tmp_path_factory.mktemp("start") / "untrained"
    init_model(folder)
    return folder


@pytest.fixture(scope="module")
def quick(start_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("ablate")
    args = ["ablate", "--quick", "--out", root / "runs", "--results", root / "results", f"model.path={start_model}"]
    started = time.perf_counter()
    result = igpo(*args)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    print(f"igpo ablate --quick: {elapsed:.1f}s")
    return root, args, result, elapsed


def test_quick_grid_writes_table_and_plots(quick):
    root, _, result, elapsed = quick
    assert elapsed < REGRESSION_LIMIT_S
    report = root / "results" / "quick.md"
    text = report.read_text()
    for cell in CELLS:
        assert f"| {cell} " in text
        assert (root / "runs" / cell / "seed0" / DONE_FILE).is_file()
    assert "base (step 0)" in text and "L6 %" in text
    for kind in ("accuracy", "all_wrong", "final", "levels", "training"):
        png = root / "results" / f"quick_{kind}.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert result.output.count("done in") == len(CELLS)
    # the start model is evaluated once and shared by both series
    assert "step 0: already evaluated" in result.output
    import json
    import math

    claims = json.loads((root / "results" / "claims.json").read_text())["claims"]
    assert {c["name"] for c in claims} == {"grpo_above_base", "igpo_above_base", "igpo_vs_grpo"}
    for c in claims:  # one seed per cell: the share claim needs two and is left out
        assert math.isfinite(c["difference_points"]) and 0 <= c["p_value"] <= 1
        assert c["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    assert "## Claims" in text


def test_rerun_skips_finished_cells(quick):
    _, args, _, _ = quick
    started = time.perf_counter()
    result = igpo(*args)
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped (finished)") == len(CELLS)
    assert time.perf_counter() - started < RERUN_LIMIT_S


def test_job_without_marker_reuses_checkpoints_and_evals(quick):
    root, args, _, _ = quick
    job = root / "runs" / "igpo" / "seed0"
    (job / DONE_FILE).unlink()
    before = sorted(p.stat().st_mtime_ns for p in (job / "checkpoints").rglob("*") if p.is_file())
    result = igpo(*args)
    assert result.exit_code == 0, result.output
    assert (job / DONE_FILE).is_file() and "already evaluated" in result.output
    after = sorted(p.stat().st_mtime_ns for p in (job / "checkpoints").rglob("*") if p.is_file())
    assert before == after  # training was finished: not rerun


def test_half_trained_job_resumes_from_its_checkpoint(quick):
    root, args, _, _ = quick
    job = root / "runs" / "grpo" / "seed0"
    (job / DONE_FILE).unlink()
    last = job / "checkpoints" / "step-000002"
    shutil.rmtree(last)
    result = igpo(*args)
    assert result.exit_code == 0, result.output
    assert last.is_dir() and (job / DONE_FILE).is_file()
    steps = [line for line in (job / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(steps) == 2  # step 1 kept, step 2 trained again, nothing duplicated


def test_slurm_launcher_writes_array_job(start_model, tmp_path):
    out = tmp_path / "runs"
    result = igpo(
        "ablate",
        "--quick",
        "--launcher",
        "slurm",
        "--out",
        out,
        "--results",
        tmp_path / "results",
        f"model.path={start_model}",
    )
    assert result.exit_code == 0, result.output
    script = (out / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-1" in script
    assert '--only-index "$SLURM_ARRAY_TASK_ID"' in script and f"model.path={start_model}" in script
    assert "--aggregate-only" in result.output
    assert not (out / "grpo").exists()  # nothing trained here


def test_bad_grids_fail_in_one_line(start_model, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("recipe: igpo_tiny\nbogus: 1\ncells:\n  grpo: [igpo.resample=none]\n")
    result = igpo("ablate", "--grid", grid, "--out", tmp_path / "runs")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bogus" in lines[0]
    grid.write_text("cells:\n  grpo: [igpo.nope=1]\n")
    result = igpo("ablate", "--grid", grid, "--out", tmp_path / "runs", f"model.path={start_model}")
    assert result.exit_code == 2 and "igpo.nope" in result.output
    assert not (tmp_path / "runs" / "grpo").exists()
    result = igpo("ablate", "--quick", "--only-index", 5, "--out", tmp_path / "runs")
    assert result.exit_code == 2 and "--only-index" in result.output


def test_t_interval_over_seeds():
    lo, hi = t_interval([0.4, 0.5, 0.6])
    assert lo == pytest.approx(0.5 - 4.303 * 0.1 / 3**0.5, abs=1e-3)
    assert hi == pytest.approx(0.5 + 4.303 * 0.1 / 3**0.5, abs=1e-3)
    assert t_interval([0.0, 1.0]) == (0.0, 1.0)  # clipped to [0, 1]


def test_training_stats_share_of_groups_left_without_gradient():
    from harness.ablate.report import SeedRun, training_stats

    rows = [  # step 1: 2 of 4 groups all wrong, one rescued; step 2: 1 of 4, none rescued
        {"step": 1, "groups": 4.0, "all_wrong_ratio": 0.5, "rescued_ratio": 0.5, "replaced": 4.0},
        {"step": 2, "groups": 4.0, "all_wrong_ratio": 0.25, "rescued_ratio": 0.0, "replaced": 0.0},
    ]
    run = SeedRun(seed=0, curve={0: 0.5}, final_interval=None, final_interval_kind="", levels={}, metrics=rows)
    stats = training_stats([run])
    assert stats.all_wrong == 0.375
    assert stats.rescued == 1 / 3
    assert stats.zero_gradient == 2 / 8
    assert stats.replaced == 2.0


@pytest.mark.parametrize("name", ["paper", "lambda", "quick"])
def test_shipped_grids_resolve_to_valid_configs(name):
    """Every shipped grid parses and every job's overrides build an RLConfig."""
    from harness.ablate.run import grid_jobs, job_config, load_grid

    spec = load_grid(name)
    jobs = grid_jobs(spec)
    assert jobs and len({(j.cell, j.seed) for j in jobs}) == len(jobs)
    for job in jobs:
        cfg = job_config(spec, job)
        assert cfg.seed == job.seed


def test_paper_grid_covers_the_committed_comparison():
    from harness.ablate.run import load_grid

    spec = load_grid("paper")
    for cell in ("grpo", "igpo"):
        assert len(spec.seeds_of(cell)) >= 3
    for cell in ("sample_matched", "full_hints", "igpo_no_entropy_filter"):
        assert len(spec.seeds_of(cell)) >= 2


def _fake_job(root, cell, seed, correct, index=0):
    """A finished job folder whose final evaluation has the given per-item correctness."""
    import json

    from harness.ablate.run import Job

    job = Job(index, cell, seed, [], root / cell / f"seed{seed}")
    step = job.series / "step-000010"
    step.mkdir(parents=True)
    rows = [{"task": "igpo_arith", "doc_id": i, "correct": bool(c)} for i, c in enumerate(correct)]
    (step / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (job.folder / DONE_FILE).write_text("{}")
    return job


def test_accuracy_claims_pool_seeds_per_item(tmp_path):
    """Cell a right on every item, b on every second: +50 points, a tiny p, 'reproduced';
    reversed: 'not reproduced'; a against itself: +0, 'inconclusive'."""
    from harness.ablate.claims import ClaimSpec, accuracy_claim

    n = 120
    jobs = [_fake_job(tmp_path, "a", s, [1] * n) for s in (0, 1)]
    jobs += [_fake_job(tmp_path, "b", s, [i % 2 for i in range(n)]) for s in (0, 1)]
    jobs += [_fake_job(tmp_path, "c", 0, [1] * n)]
    up = accuracy_claim(ClaimSpec("x", "a beats b", "a", "b"), jobs)
    assert up.difference_points == 50.0 and up.p_value < 0.001 and up.verdict == "reproduced"
    assert up.seeds == {"a": 2, "b": 2} and up.ci95_points[0] < 50 < up.ci95_points[1] and up.p_items < 0.001
    down = accuracy_claim(ClaimSpec("y", "b beats a", "b", "a"), jobs)
    assert down.difference_points == -50.0 and down.verdict == "not reproduced"
    same = accuracy_claim(ClaimSpec("z", "a beats c", "a", "c"), jobs)
    assert same.difference_points == 0.0 and same.verdict == "inconclusive"
    assert accuracy_claim(ClaimSpec("w", "a beats d", "a", "d"), jobs) is None  # no finished runs of d
