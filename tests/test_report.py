"""`igpo report`: the page's data in plain pytest, then the page itself in headless Chromium
(network cut off) on the committed testbed baseline against a perturbed copy."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.check import CheckSettings, compare_runs
from harness.cli import app
from harness.report.browser import chromium_path
from harness.report.data import build_payload, classify, token_diff

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "baselines" / "testbed-arith"
FLIP_EVERY = 7
"""The perturbed copy flips the verdict of every 7th item (right -> wrong and wrong -> right)."""


def perturbed_copy(dest: Path) -> Path:
    """The committed baseline with every FLIP_EVERY-th response's answer spoilt or repaired,
    accuracy restated so that `igpo check` accepts the pair."""
    dest.mkdir(parents=True)
    rows = [json.loads(line) for line in (BASELINE / "samples.jsonl").read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows):
        if i % FLIP_EVERY == 0:
            row["correct"] = row["strict_correct"] = not row["correct"]
            row["response"] = row["response"].replace("\\boxed{", "\\boxed{ 99")
    record = json.loads((BASELINE / "results.json").read_text())
    record["run_name"] = dest.name
    record["tasks"]["igpo_arith"]["accuracy"] = sum(r["correct"] for r in rows) / len(rows)
    (dest / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (dest / "results.json").write_text(json.dumps(record))
    return dest


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return BASELINE, perturbed_copy(tmp_path / "perturbed")


def test_payload_flipped_items_are_those_igpo_check_counts(pair):
    base, cand = pair
    payload = build_payload(classify([cand], base))
    [comparison] = payload["comparisons"]
    [task] = compare_runs(base, cand, CheckSettings()).tasks
    broke = [i for i in comparison["items"] if i["direction"] == "broke"]
    fixed = [i for i in comparison["items"] if i["direction"] == "fixed"]
    assert (len(broke), len(fixed)) == (task.losses, task.wins) and task.losses > 0 and task.wins > 0
    assert comparison["tasks"][0]["broke"] == task.losses and comparison["tasks"][0]["p"] == task.p_value
    assert {i["doc"] for i in comparison["items"]} == set(range(0, 60, FLIP_EVERY))
    samples = payload["samples"]
    assert all(samples[i["baseline"]]["run"] == 0 and samples[i["candidate"]]["run"] == 1 for i in comparison["items"])
    assert all(samples[i["baseline"]]["doc"] == samples[i["candidate"]]["doc"] == i["doc"] for i in comparison["items"])
    assert all(samples[i["baseline"]]["correct"] != samples[i["candidate"]]["correct"] for i in comparison["items"])
    assert len(payload["prompts"]) == 60  # the two runs share their 60 prompts
    assert len(payload["samples"]) == 120 and {s["run"] for s in payload["samples"]} == {0, 1}


def test_token_diff_marks_only_what_changed():
    ops = token_diff("18 + 8 = 26 . \\boxed{ 26 }", "18 + 8 = 27 . \\boxed{ 27 }")
    assert [t for op, t in ops if op == "-"] == ["26", "26"] and [t for op, t in ops if op == "+"] == ["27", "27"]
    assert "".join(t for op, t in ops if op != "+") == "18 + 8 = 26 . \\boxed{ 26 }"


def test_payload_of_training_and_series_folders(tmp_path):
    train = tmp_path / "train"
    train.mkdir()
    rows = [{"step": s, "reward": 1.0 + s, "accuracy": 0.1 * s, "kl": 0.0, "all_wrong_ratio": 0.5} for s in (1, 2, 3)]
    (train / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    series = tmp_path / "series"
    for step in (0, 5):
        (series / f"step-{step:06d}").mkdir(parents=True)
        for name in ("results.json", "samples.jsonl"):
            (series / f"step-{step:06d}" / name).write_bytes((BASELINE / name).read_bytes())
    inputs = classify([train, series])
    assert inputs.training == [train] and inputs.series == [series] and not inputs.runs
    figures = build_payload(inputs)["figures"]
    assert [f["kind"] for f in figures] == ["series", "training"]
    assert all(f["svg"].lstrip().startswith("<?xml") and "<svg" in f["svg"] for f in figures)


def test_cli_writes_one_offline_file_and_refuses_bad_input(pair, tmp_path):
    base, cand = pair
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(cand), "--baseline", str(base), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from anywhere
    assert "default-src 'none'" in html
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "missing"), "--out", str(tmp_path / "x.html")])
    assert bad.exit_code == 2 and bad.output.startswith("error:") and "missing" in bad.output
    assert not (tmp_path / "x.html").exists()


needs_chromium = pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("IGPO_REQUIRE_BROWSER"),
    reason="no Chromium here (.ci/run installs it and sets IGPO_REQUIRE_BROWSER, so CI never skips)",
)


@needs_chromium
@pytest.mark.slow
def test_report_in_headless_chromium(pair, tmp_path):
    from harness.report import write_report
    from harness.report.browser import open_report

    base, cand = pair
    page_file = write_report([cand], tmp_path / "report.html", baseline=base)
    [task] = compare_runs(base, cand, CheckSettings()).tasks
    with open_report(page_file) as (page, log):
        assert log.console_errors == [] and log.requests == []
        page.screenshot(path=str(tmp_path / "leaderboard.png"))
        # sorting: clicking a column orders the rows by it, a second click reverses them
        sources = page.locator("#board tbody tr td:last-child")
        page.click("#board th[data-key='source']")
        down = sources.all_text_contents()
        page.click("#board th[data-key='source']")
        up = sources.all_text_contents()
        assert len(down) == 2 and down == sorted(down, reverse=True) and up == sorted(up) != down
        # flipped items: exactly what igpo check counts, in both directions
        page.click("nav button[data-view='flipped']")
        assert page.locator(".flip[data-direction='broke']").count() == task.losses
        assert page.locator(".flip[data-direction='fixed']").count() == task.wins
        assert page.locator(".flip .diff .ins").count() > 0
        page.screenshot(path=str(tmp_path / "flipped.png"))
        # filters and search
        page.click("nav button[data-view='samples']")
        assert page.text_content("#sample-count").startswith("120 of 120")
        page.select_option("#f-run", "1")
        page.select_option("#f-verdict", "wrong")
        wrong = int(page.text_content("#sample-count").split()[0])
        assert 0 < wrong < 60
        page.select_option("#f-verdict", "")
        page.select_option("#f-run", "")
        page.fill("#f-search", "Ava has 18 coins")
        assert page.text_content("#sample-count").startswith("2 of 120")
        assert page.locator("#sample-list .sample[data-doc='0']").count() == 2
        page.screenshot(path=str(tmp_path / "samples.png"))
        page.click("nav button[data-view='runs']")
        assert "protocol: igpo" in page.text_content("#runs")
        page.screenshot(path=str(tmp_path / "runs.png"))
    assert all((tmp_path / f"{v}.png").stat().st_size > 1000 for v in ("leaderboard", "flipped", "samples", "runs"))
