"""`igpo eval` / `igpo leaderboard` end to end on a tiny local model, offline."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.eval.results import load_results, load_samples

runner = CliRunner()
FAST = ["--gen-length", "32", "--block-length", "16", "--steps", "8", "--seeds", "0", "--no-leaderboard"]


def igpo(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def finished_run(tiny_checkpoint, tmp_path_factory):
    from conftest import SHARED_DATA

    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.skip("shared/data is not beside this checkout")
    out = tmp_path_factory.mktemp("runs")
    result = igpo(
        "eval",
        "--model",
        tiny_checkpoint,
        "--tasks",
        "gsm8k,math500,amc",
        "--data-dir",
        SHARED_DATA,
        "--limit",
        20,
        "--out",
        out,
        *FAST,
    )
    assert result.exit_code == 0, result.output
    return out, out / "tiny-dllm-igpo", result


def test_eval_writes_results_and_samples(finished_run):
    _, run, result = finished_run
    record = load_results(run)
    assert set(record.tasks) == {"igpo_gsm8k", "igpo_math500", "igpo_amc"}
    gsm = record.tasks["igpo_gsm8k"]
    assert gsm.n_items == 20 and gsm.samples_per_item == 1 and gsm.ci_kind.startswith("wilson")
    amc = record.tasks["igpo_amc"]
    assert amc.repeats == 16 and amc.decoding["temperature"] == 0.1 and amc.samples_per_item == 16
    assert gsm.decoding["gen_length"] == 32 and gsm.decoding["steps"] == 8
    assert gsm.data["hash"].startswith("sha256:") and "gsm8k/test.jsonl" in gsm.data["source"]
    prov = record.provenance
    assert prov["versions"]["torch"] and prov["tokens_per_s"] > 0 and prov["nfe_per_token"] > 0
    assert record.model.hash.startswith("sha256:") and record.protocol.name == "igpo"
    samples = load_samples(run)
    assert len(samples) == 20 + 20 + 20 * 16
    row = samples[0]
    assert row.response and row.gold is not None and isinstance(row.correct, bool)
    assert "<reasoning>" in row.prompt  # d1 format, assistant turn prefilled
    assert "igpo_gsm8k" in result.output and "95% CI" in result.output


def test_rerun_reuses_finished_samples(finished_run, tiny_checkpoint):
    from conftest import SHARED_DATA

    out, run, _ = finished_run
    before = load_samples(run)
    result = igpo(
        "eval",
        "--model",
        tiny_checkpoint,
        "--tasks",
        "gsm8k,math500,amc",
        "--data-dir",
        SHARED_DATA,
        "--limit",
        20,
        "--out",
        out,
        *FAST,
    )
    assert result.exit_code == 0, result.output
    prov = load_results(run).provenance
    assert prov["requests_decoded"] == 0 and prov["requests_from_cache"] == len(before)
    assert [s.response for s in load_samples(run)] == [s.response for s in before]


@pytest.mark.parametrize("fmt", ["markdown", "github", "latex", "csv"])
def test_leaderboard_renders_every_format(finished_run, fmt):
    out, run, _ = finished_run
    result = igpo("leaderboard", run, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert "tiny-dllm" in result.output
    if fmt == "csv":  # a run with decoding overrides and a limit is igpo*, never beside published rows
        rows = list(csv.DictReader(io.StringIO(result.output)))
        assert [r["protocol"] for r in rows] == ["igpo*"] and not any(r["result"] == "reported" for r in rows)
    if fmt == "latex":
        assert "\\begin{tabular}" in result.output


def _assert_clean_failure(result, needle, out_dir=None):
    assert result.exit_code == 2, result.output
    text = (result.stderr if hasattr(result, "stderr") else result.output).strip()
    assert "Traceback" not in result.output and len(text.splitlines()) == 1, text
    assert needle.lower() in text.lower()
    if out_dir is not None:
        assert not list(out_dir.rglob("results.json")) and not list(out_dir.rglob("samples.jsonl"))


def test_bad_inputs_fail_in_one_line(tiny_checkpoint, tmp_path, shared_data):
    out = tmp_path / "out"
    base = ["eval", "--model", tiny_checkpoint, "--data-dir", shared_data, "--out", out, *FAST]
    _assert_clean_failure(igpo(*base, "--tasks", "gsm9k"), "unknown task 'gsm9k'", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--protocol", "nope"), "unknown protocol", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--limit", 0), "--limit", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--limit", -3), "--limit", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--threshold", 1.5), "threshold must lie in (0, 1]", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--cache", "triple"), "unknown cache mode", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--cache-refresh", 2), "cache_refresh needs a cache", out)
    for value in ("nan", "inf"):
        _assert_clean_failure(
            igpo(*base, "--tasks", "gsm8k", "--temperature", value), "temperature must be a finite", out
        )
    for name in ("../../x", str(tmp_path / "abs"), "a/b", ".."):
        _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--name", name), "plain folder name", out)
    assert not (tmp_path / "abs").exists() and not (tmp_path.parent / "x").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndecoding: {gen_length: 32, steps: 32, cache: dual, cache_refresh: 0}\n")
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--protocol", bad), "cache_refresh must be a positive", out)
    bad.write_text("name: x\ndecoding: {gen_length: 32, bogus: 1}\n")
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--protocol", bad), "bogus", out)
    bad.write_text("name: x\nseeds: []\n")
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--protocol", bad), "non-empty list", out)
    bad.write_text("name: x\ntasks: {arith: {steps: 8}}\n")
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--protocol", bad), "write 'igpo_arith'", out)
    bad.write_text("name: x\ntasks: {igpo_gsm9k: {steps: 8}}\n")
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--protocol", bad), "unknown task 'igpo_gsm9k'", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--seeds", ",,,"), "--seeds must list", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--batch-size", 0), "--batch-size must be >= 1", out)
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--device", "tpu:7"), "--device", out)
    bad.write_text("name: [unclosed\n")
    _assert_clean_failure(igpo(*base, "--tasks", "gsm8k", "--protocol", bad), "malformed protocol", out)
    empty = tmp_path / "data"
    empty.mkdir()
    _assert_clean_failure(
        igpo("eval", "--model", tiny_checkpoint, "--data-dir", empty, "--tasks", "gsm8k", "--out", out, *FAST),
        "missing data file",
        out,
    )
    damaged = tmp_path / "damaged"
    (damaged / "gsm8k").mkdir(parents=True)
    lines = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()
    for content, message in (
        ("\n".join(lines[:5]) + "\n" + lines[5][:40], "test.jsonl:6: invalid JSON"),
        ("", "has no rows"),
        ("[1, 2]\n", "expected a JSON object"),
    ):
        (damaged / "gsm8k" / "test.jsonl").write_text(content)
        _assert_clean_failure(
            igpo("eval", "--model", tiny_checkpoint, "--data-dir", damaged, "--tasks", "gsm8k", "--out", out, *FAST),
            message,
            out,
        )
    (damaged / "gsm8k" / "test.jsonl").write_bytes(b'{"question": "\xff\xfe"}\n')
    _assert_clean_failure(
        igpo("eval", "--model", tiny_checkpoint, "--data-dir", damaged, "--tasks", "gsm8k", "--out", out, *FAST),
        "not UTF-8",
        out,
    )
    _assert_clean_failure(
        igpo(
            "eval", "--model", tmp_path / "no-model", "--data-dir", shared_data, "--tasks", "gsm8k", "--out", out, *FAST
        ),
        "not found",
        out,
    )
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"results": {}}))
    _assert_clean_failure(igpo("leaderboard", foreign), "not an igpo results file")
    foreign.write_text("{corrupt")
    _assert_clean_failure(igpo("leaderboard", foreign), "not valid JSON")


def test_flags_beat_the_protocols_task_settings_and_fast_protocol_records_its_options(tiny_checkpoint, tmp_path):
    """igpo's protocol gives igpo_arith 24 steps; --steps 48 wins. igpo_fast decodes with the dual
    cache (refresh 4) and threshold 0.9, and the result records them. d1 fixes steps per length."""
    out = tmp_path / "out"
    base = ["eval", "--model", tiny_checkpoint, "--tasks", "arith", "--limit", 4, "--no-leaderboard", "--out", out]
    result = igpo(*base, "--steps", 48, "--name", "flags")
    assert result.exit_code == 0, result.output
    assert load_results(out / "flags").tasks["igpo_arith"].decoding["steps"] == 48
    result = igpo(*base, "--protocol", "igpo_fast", "--name", "fast")
    assert result.exit_code == 0, result.output
    decoding = load_results(out / "fast").tasks["igpo_arith"].decoding
    assert (decoding["cache"], decoding["cache_refresh"], decoding["threshold"], decoding["steps"]) == (
        "dual",
        4,
        0.9,
        48,
    )
    _assert_clean_failure(
        igpo(*base, "--protocol", "d1", "--steps", 64, "--name", "d1"), "--steps does not apply", out / "d1"
    )
    _assert_clean_failure(igpo(*base, "--gen-length", 100, "--name", "bad"), "igpo_arith: block_length=16", out / "bad")


def test_help_lists_command_groups():
    result = igpo("--help")
    for name in ("eval", "leaderboard", "bench", "lm-eval"):
        assert name in result.output


def test_no_arguments_evaluates_the_embedded_model(tmp_path, monkeypatch):
    """`igpo eval` alone: the embedded testbed on igpo_arith, offline, leaderboard printed."""
    from igpo.models.loading import EMBEDDED_MODELS

    if not (EMBEDDED_MODELS["testbed"] / "config.json").is_file():
        pytest.skip("testbed model not built")
    monkeypatch.chdir(tmp_path)
    result = igpo("eval", "--limit", 12, "--batch-size", 12)
    assert result.exit_code == 0, result.output
    record = load_results(tmp_path / "runs" / "eval" / "testbed-igpo")
    task = record.tasks["igpo_arith"]
    assert task.n_items == 12 and task.decoding["gen_length"] == 48
    assert "# Leaderboard" in result.output and (tmp_path / "results" / "leaderboard.md").is_file()
    assert task.accuracy > 0.3  # the shipped model solves a fair share of the easy levels
    # another runs folder keeps its own leaderboard; the committed one is left alone
    board = (tmp_path / "results" / "leaderboard.md").read_text()
    other = igpo("eval", "--limit", 6, "--batch-size", 6, "--out", "elsewhere")
    assert other.exit_code == 0, other.output
    assert (tmp_path / "elsewhere" / "leaderboard.md").is_file()
    assert (tmp_path / "results" / "leaderboard.md").read_text() == board


def test_foreign_results_file_under_out_is_skipped_with_a_warning(tmp_path):
    """A stray results.json that is not igpo's must not fail every later eval into that folder."""
    out = tmp_path / "out"
    (out / "stray").mkdir(parents=True)
    (out / "stray" / "results.json").write_text(json.dumps({"results": {}}))
    args = [
        "eval",
        "--model",
        "testbed",
        "--tasks",
        "arith",
        "--limit",
        "2",
        "--out",
        out,
        "--leaderboard",
        tmp_path / "board.md",
    ]
    for _ in range(2):
        result = igpo(*args)
        assert result.exit_code == 0, result.output
        assert "leaderboard skips" in result.output and "stray" in result.output
    assert (tmp_path / "board.md").is_file()


def test_small_input_rules():
    from harness.errors import debugging
    from harness.eval.protocols import parse_protocol
    from harness.eval.run import is_plain_name

    assert all(is_plain_name(n) for n in ("llada+igpo", "_base", "run 1", "x" * 200, "ci-testbed"))
    assert not any(is_plain_name(n) for n in ("", ".", "..", "a/b", "../x", "/abs", "a\\b"))
    assert parse_protocol({"name": "x", "seeds": None}).seeds == [0]
    import os

    old = os.environ.get("IGPO_DEBUG")
    try:
        for value, expect in (("0", False), ("false", False), ("", False), ("1", True), ("yes", True)):
            os.environ["IGPO_DEBUG"] = value
            assert debugging() is expect
    finally:
        os.environ.pop("IGPO_DEBUG", None) if old is None else os.environ.__setitem__("IGPO_DEBUG", old)
