"""`igpo eval` verifies all of a task's responses at once on the math-verify pool.

lm-eval calls a task's metric one document at a time, so scoring there would use one worker
however large the pool. The math tasks' filter (tasks/utils.py `keep_all_scored_*`) runs over
every document first and verifies all responses on the pool (`igpo.scoring.pool.verify_ahead`); the
per-document metric and the samples rows then read those verdicts, identical to scoring each
response alone.
"""

from __future__ import annotations

import threading
from statistics import fmean

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.eval.results import load_results, load_samples
from igpo.scoring import pool
from igpo.scoring.answers import fast_verdict

FAST = ["--gen-length", "32", "--block-length", "16", "--steps", "8", "--seeds", "0", "--no-leaderboard"]
WORKERS = 2


def test_eval_scores_on_the_pool_with_unchanged_verdicts(tiny_checkpoint, shared_data, tmp_path, monkeypatch) -> None:
    runs: list[str] = []  # the thread of every pair math-verify's workers scored
    pool_run = pool._POOL.run

    def spy(gold: str, response: str, timeout_s: float):
        runs.append(threading.current_thread().name)
        return pool_run(gold, response, timeout_s)

    monkeypatch.setattr(pool._POOL, "run", spy)
    pool.set_worker_count(WORKERS)
    try:
        result = CliRunner().invoke(
            app,
            ["eval", "--model", str(tiny_checkpoint), "--tasks", "gsm8k,math500", "--data-dir", str(shared_data)]
            + ["--limit", "8", "--out", str(tmp_path), "--name", "r", *FAST],
        )
    finally:
        pool.set_worker_count(None)
    assert result.exit_code == 0, result.output
    samples = load_samples(tmp_path / "r")
    assert len(samples) == 16
    # The pool scored every pair math-verify had to read, from its threads, none from the
    # per-document metric (which would run them one at a time on the main thread).
    slow = {(s.gold, s.response) for s in samples if fast_verdict(s.gold, s.response) is None}
    assert len(slow) >= WORKERS and len(runs) == len(slow)
    assert all(name.startswith("math-verify") for name in runs), runs
    # Verdicts identical to scoring each response alone (no shared cache, no pool threads).
    monkeypatch.setattr(pool._POOL, "run", pool_run)
    for s in samples:
        alone = pool.verify_answer(s.gold, s.response)
        assert (s.correct, s.extracted, s.timed_out) == (alone.correct, alone.extracted, alone.timed_out), s
    record = load_results(tmp_path / "r")
    for key in ("igpo_gsm8k", "igpo_math500"):
        rows = [s.correct for s in samples if s.task == key]
        assert record.tasks[key].per_seed["0"]["exact_match"] == pytest.approx(fmean(rows))
