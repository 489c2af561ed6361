"""`igpo rewrite-traces` against a real local HTTP server speaking the OpenAI API (loopback only):
correct rewrites, rejects by reason, injected faults with retries, a kill and a resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.rewrite.checks import check, format_ok
from harness.rewrite.fake_server import MIXED_BEHAVIOURS, FakeRewriter, cli_args, write_rows
from harness.rewrite.rows import PRESETS, load_prompt, read_sources, render, resolve_fields, row_id

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
KEY = "sk-test-secret-1234"
BEHAVIOURS = MIXED_BEHAVIOURS
EXPECTED = {
    "": "kept",
    "#429": "kept",
    "#500": "kept",
    "#stall": "kept",
    "#drop": "kept",
    "#badjson": "kept",
    "#wrong": "wrong_answer",
    "#format": "format",
    "#long": "too_long",
    "#always500": "failed",
}


def _rows(path: Path, n: int) -> Path:
    return write_rows(path, n, BEHAVIOURS)


def _args(data: Path, out: Path, url: str, *extra: str) -> list[str]:
    return [*cli_args(data, out, url, timeout_s=1), "--api-key", KEY, *extra]


def _ids(path: Path) -> list[str]:
    return [json.loads(x)["id"] for x in path.read_text().splitlines()] if path.is_file() else []


# --------------------------------------------------------------------------- units


def test_prompt_rows_ids_and_presets(tmp_path):
    template = load_prompt(None)
    data = _rows(tmp_path / "in.jsonl", 2)
    [first, _] = list(read_sources(data, PRESETS["gsm8k"], template))
    assert first.answer == "5" and "####" not in first.trace and first.trace.startswith("She has 3")
    [msg] = render(template, first)
    assert first.question in msg["content"] and "Final answer: 5" in msg["content"] and "{trace}" not in msg["content"]
    row = json.loads(data.read_text().splitlines()[0])
    assert row_id(row, template) == first.id and row_id(row, template + " ") != first.id
    fields = resolve_fields("gsm8k", "prompt", None, None)
    assert fields.question == "prompt" and fields.trace == "answer"
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_fields("nope", None, None, None)


def test_checks_keep_and_reject():
    from igpo.models import load_tokenizer
    from igpo.testbed import TESTBED_DIR

    tok = load_tokenizer(str(TESTBED_DIR))
    good = "<reasoning> 6 + 9 = 15 . </reasoning> <answer> \\boxed{15} </answer>"
    assert format_ok(good) and check(good, "15", tok, 40).kept
    assert check(good, "16", tok, 40).reason == "wrong_answer"
    assert check(good.replace("</reasoning>", ""), "15", tok, 40).reason == "format"
    assert check(good, "15", tok, 5).reason == "too_long"
    assert check("  ", "15", tok, 5).reason == "empty"
    assert not format_ok("<answer> \\boxed{1} </answer> <reasoning> x </reasoning>")


# --------------------------------------------------------------------------- against the server


def test_faults_end_kept_rejected_or_failed_exactly_once(tmp_path):
    data, out = _rows(tmp_path / "in.jsonl", 60), tmp_path / "out" / "rw.jsonl"
    with FakeRewriter(api_key=KEY) as server:
        result = runner.invoke(app, _args(data, out, server.base_url, "--concurrency", "8"))
    assert result.exit_code == 0, result.output
    sources = list(read_sources(data, PRESETS["gsm8k"], load_prompt(None)))
    by_id = {s.id: s for s in sources}
    outcome = {}
    for name, path in (
        ("kept", out),
        ("rejects", tmp_path / "out" / "rw.rejects.jsonl"),
        ("failures", tmp_path / "out" / "rw.failures.jsonl"),
    ):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            assert rec["id"] not in outcome, "a row finished twice"
            outcome[rec["id"]] = "kept" if name == "kept" else rec.get("reason", "failed")
    assert set(outcome) == set(by_id)  # none lost
    for sid, got in outcome.items():
        tag = next((t for t in EXPECTED if t and t in by_id[sid].question), "")
        assert got == EXPECTED[tag], (by_id[sid].question, got)
    summary = json.loads((tmp_path / "out" / "rw.summary.json").read_text())
    assert summary["kept"] == 40 and summary["failed"] == 5 and summary["missing"] == 0
    assert summary["rejected"] == {"empty": 0, "format": 5, "wrong_answer": 5, "too_long": 5}
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["trace"].startswith("<reasoning>") and r["prompt"] and r["answer"] for r in kept)
    for path in (tmp_path / "out").iterdir():
        assert KEY not in path.read_text(), path


@pytest.mark.slow
def test_kill_mid_run_and_resume_match_an_uninterrupted_run(tmp_path):
    data = _rows(tmp_path / "in.jsonl", 80)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    with FakeRewriter(latency_s=0.05) as server:
        whole = tmp_path / "whole" / "rw.jsonl"
        assert runner.invoke(app, _args(data, whole, server.base_url, "--concurrency", "4")).exit_code == 0
        cut = tmp_path / "cut" / "rw.jsonl"
        cmd = [sys.executable, "-m", "harness.cli", *_args(data, cut, server.base_url, "--concurrency", "4")]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(_ids(cut)) < 15 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 0 < len(_ids(cut)) < 80 * 40 / 60
        again = runner.invoke(app, _args(data, cut, server.base_url, "--concurrency", "4"))
        assert again.exit_code == 0, again.output
    for suffix in ("rw.jsonl", "rw.rejects.jsonl", "rw.failures.jsonl"):
        a = sorted((tmp_path / "whole" / suffix).read_text().splitlines())
        b = sorted((tmp_path / "cut" / suffix).read_text().splitlines())
        if suffix == "rw.failures.jsonl":  # attempt counts may differ for a request cut by the kill
            a, b = sorted(json.loads(x)["id"] for x in a), sorted(json.loads(x)["id"] for x in b)
        assert a == b, suffix


def test_dry_run_sends_nothing(tmp_path):
    data = _rows(tmp_path / "in.jsonl", 5)
    with FakeRewriter() as server:
        result = runner.invoke(app, [*_args(data, tmp_path / "o.jsonl", server.base_url), "--dry-run"])
        assert server.requests == 0
    assert result.exit_code == 0 and result.output.count("# row") == 3 and "Final answer: 5" in result.output
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing_field", "missing field 'answer'"),
        ("unknown_preset", "unknown preset"),
        ("unreachable", "cannot reach"),
        ("bad_key", "refused the API key"),
    ],
)
def test_bad_input_fails_before_any_request(tmp_path, case, needle):
    data = _rows(tmp_path / "in.jsonl", 3)
    if case == "missing_field":
        data.write_text(json.dumps({"question": "q"}) + "\n")
    with FakeRewriter(api_key=KEY) as server:
        url = "http://127.0.0.1:9/v1" if case == "unreachable" else server.base_url
        args = _args(data, tmp_path / "o.jsonl", url)
        if case == "unknown_preset":
            args[args.index("gsm8k")] = "nope"
        if case == "bad_key":
            args[args.index(KEY)] = "wrong-key"
        result = runner.invoke(app, args)
        assert server.requests == 0
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    """Every finished row records the settings that made it; a rerun asking for another model or
    temperature is one `error:` line naming both, not old rows counted done under the new model."""
    data, out = _rows(tmp_path / "in.jsonl", 4), tmp_path / "rw.jsonl"
    with FakeRewriter(api_key=KEY) as server:
        first = runner.invoke(app, _args(data, out, server.base_url, "--limit", "2"))
        assert first.exit_code == 0, first.output
        kept = [json.loads(x) for x in out.read_text().splitlines()]
        assert kept and all(r["rewriter"]["model"] == "fake" and r["rewriter"]["temperature"] == 0.0 for r in kept)
        before, served = out.read_text(), server.requests
        for flag, value, needle in (
            ("--model", "other", "model='fake'; this run asks model='other'"),
            ("--temperature", "0.7", "temperature=0.0; this run asks temperature=0.7"),
        ):
            args = _args(data, out, server.base_url, flag, value)
            if flag == "--model":
                args[args.index("fake")] = "other"
                args = args[:-2]
            result = runner.invoke(app, args)
            assert result.exit_code == 2, result.output
            lines = [x for x in result.output.splitlines() if x.startswith("error:")]
            assert len(lines) == 1 and needle in lines[0] and "another --out" in lines[0], result.output
        assert server.requests == served and out.read_text() == before  # nothing sent, nothing written
        same = runner.invoke(app, _args(data, out, server.base_url))  # the same settings resume
        assert same.exit_code == 0, same.output
        assert json.loads((tmp_path / "rw.summary.json").read_text())["already_done"] == 2


def test_sft_reads_the_rewrites(tmp_path):
    """Kept rows are SFT data as they stand: `igpo sft data.source=jsonl data.path=OUT`."""
    from igpo.arith import test_set

    data = tmp_path / "arith.jsonl"
    data.write_text(
        "".join(json.dumps({"question": p.question, "trace": p.trace, "answer": p.answer}) + "\n" for p in test_set(4))
    )
    out = tmp_path / "rw.jsonl"
    with FakeRewriter() as server:
        args = [
            "rewrite-traces",
            str(data),
            "--out",
            str(out),
            "--base-url",
            server.base_url,
            "--model",
            "fake",
            "--question-field",
            "question",
            "--trace-field",
            "trace",
            "--answer-field",
            "answer",
            "--max-tokens",
            "48",
        ]
        done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "rw.summary.json").read_text())["kept"] == 24
    sft = runner.invoke(
        app,
        [
            "sft",
            "--recipe",
            "sft_tiny",
            "--out",
            str(tmp_path / "sft"),
            "data.source=jsonl",
            f"data.path={out}",
            "max_steps=2",
            "checkpoint.every=2",
            "log.progress=false",
        ],
    )
    assert sft.exit_code == 0, sft.output
    assert (tmp_path / "sft" / "checkpoints" / "step-000002").is_dir()


def test_backoff_honours_retry_after_and_rate_limit_spaces_starts():
    import asyncio
    import random

    from harness.rewrite.client import ClientSettings, RateLimiter, delay_for

    cfg = ClientSettings(base_url="http://x/v1", model="m", backoff_s=1.0, max_backoff_s=8.0)
    rng = random.Random(0)
    assert delay_for(3, cfg, rng, retry_after=2.5) == 2.5
    assert delay_for(3, cfg, rng, retry_after=100.0) == 8.0  # capped
    delays = [delay_for(a, cfg, rng) for a in (1, 2, 3, 4, 5, 6) for _ in range(50)]
    assert all(0 <= d <= 8.0 for d in delays) and max(delays[:50]) <= 1.0 < max(delays[150:])

    async def starts(n: int) -> list[float]:
        limiter, out = RateLimiter(600.0), []  # 600 per minute: one start per 0.1 s
        for _ in range(n):
            await limiter.wait()
            out.append(time.monotonic())
        return out

    t = asyncio.run(starts(4))
    assert all(b - a >= 0.09 for a, b in zip(t, t[1:], strict=False))
    with pytest.raises(ValueError, match="concurrency"):
        ClientSettings(base_url="http://x/v1", model="m", concurrency=0)
