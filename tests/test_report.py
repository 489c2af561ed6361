"""`igpo report`: the page's data in plain pytest, then the page itself in headless Chromium
(network cut off) on the committed testbed baseline against a perturbed copy."""

from __future__ import annotations

import copy
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness.check import (
    CANNOT_RULE_OUT,
    DEFAULT_MAX_DROP_POINTS,
    PASS,
    POINTS,
    REGRESSION,
    VERDICT_EXIT,
    CheckSettings,
    compare_runs,
)
from harness.cli import MAX_DROP_POINTS, app
from harness.report.browser import chromium_path
from harness.report.data import build_payload, classify, token_diff
from harness.report.gate import nice_ticks
from harness.report.page import render

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "results" / "baselines" / "testbed-arith"
FLIP_EVERY = 7
"""The perturbed copy flips the verdict of every 7th item (right -> wrong and wrong -> right)."""


def every_seventh(i: int, row: dict) -> bool:
    return i % FLIP_EVERY == 0


def perturbed_copy(
    dest: Path, flip: Callable[[int, dict], bool] = every_seventh, *, label: str | None = None, text: str = ""
) -> Path:
    """The committed baseline with the chosen responses' answers spoilt or repaired (default
    every FLIP_EVERY-th) and `text` appended to every response, accuracy restated so that `igpo
    check` accepts the pair. With `label` the run is relabelled and every sample repeated under
    a second task keyed `label` (two tasks, the second named by the label)."""
    dest.mkdir(parents=True)
    rows = [json.loads(line) for line in (BASELINE / "samples.jsonl").read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows):
        row["response"] += text
        if flip(i, row):
            row["correct"] = row["strict_correct"] = not row["correct"]
            row["response"] = row["response"].replace("\\boxed{", "\\boxed{ 99")
    record = json.loads((BASELINE / "results.json").read_text())
    record["run_name"] = dest.name
    record["tasks"]["igpo_arith"]["accuracy"] = sum(r["correct"] for r in rows) / len(rows)
    if label is not None:
        record["label"] = label
        record["tasks"][label] = copy.deepcopy(record["tasks"]["igpo_arith"])
        rows += [{**r, "task": label} for r in rows]
    (dest / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (dest / "results.json").write_text(json.dumps(record))
    return dest


def breaks_every_right(i: int, row: dict) -> bool:
    return row["correct"]


def flips_nothing(i: int, row: dict) -> bool:
    return False


PASSING_MAX_DROP = 10.0
"""Points: 60 unchanged items rule out a drop of 6 (Tango's no-discordance half-width
z^2 / (n + z^2)), so an unchanged copy passes at this max drop and not at the default 1."""
FIRST_SCREEN = {"width": 1280, "height": 800}
"""The viewport the verdict must be visible in without scrolling."""
HOSTILE = (
    "<!--",
    "<!--<script>",
    "<script>document.body.replaceChildren()</script>",
    "</script><p>after the data</p>",
    "\"double\" 'single' `back` ${D} &amp; \\ <b>bold</b>",
    "na\u00efve \u2014 \u6570\u5b66 \U0001f9ee \u2028\u2029 \u202eright-to-left",
)
"""Run labels, task names, titles and response text the page must show as text, never as markup."""
SVG = {"s": "http://www.w3.org/2000/svg"}


def page_payload(html: str) -> dict:
    """The data block embedded in a report page, as the page's script reads it."""
    block = re.search(r'<script type="application/json" id="payload">(.*?)</script>', html, re.S)
    assert block is not None
    return json.loads(block.group(1))


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


@pytest.mark.parametrize(
    "flip, max_drop, expected",
    [
        (every_seventh, DEFAULT_MAX_DROP_POINTS, CANNOT_RULE_OUT),
        (breaks_every_right, DEFAULT_MAX_DROP_POINTS, REGRESSION),
        (flips_nothing, DEFAULT_MAX_DROP_POINTS, CANNOT_RULE_OUT),
        (flips_nothing, PASSING_MAX_DROP, PASS),
    ],
)
def test_payload_verdict_and_forest_are_igpo_checks(tmp_path, flip, max_drop, expected):
    cand = perturbed_copy(tmp_path / "candidate", flip)
    settings = CheckSettings(max_drop=max_drop / POINTS)
    [comparison] = build_payload(classify([cand], BASELINE), settings=settings)["comparisons"]
    report = compare_runs(BASELINE, cand, settings)
    [task] = report.tasks
    assert comparison["verdict"] == report.verdict == expected
    assert comparison["exit_code"] == VERDICT_EXIT[expected] and comparison["reason"] == report.overall_reason()
    assert comparison["headline"] and comparison["max_drop"] == max_drop
    forest = comparison["forest"]
    assert forest["max_drop"] == max_drop and forest["level"] == "95%"
    assert forest["rows"] == [
        {
            "task": task.task,
            "diff": pytest.approx(task.diff * POINTS),
            "lo": pytest.approx(task.ci95[0] * POINTS),
            "hi": pytest.approx(task.ci95[1] * POINTS),
            "verdict": task.verdict,
        }
    ]
    lo, hi = forest["range"]
    assert lo <= min(forest["rows"][0]["lo"], -max_drop, 0) and hi >= max(forest["rows"][0]["hi"], 0)
    directions = [i["direction"] for i in comparison["items"]]
    assert directions == ["broke"] * task.losses + ["fixed"] * task.wins  # right -> wrong first


def test_forest_svg_has_one_interval_per_task_and_the_max_drop_line(tmp_path):
    name = HOSTILE[1]
    base = perturbed_copy(tmp_path / "base", flips_nothing, label=name)
    cand = perturbed_copy(tmp_path / "cand", breaks_every_right, label=name)
    [comparison] = build_payload(classify([cand], base))["comparisons"]
    svg = ET.fromstring(comparison["forest_svg"])  # well-formed XML: every name escaped
    rows = svg.findall(".//s:g[@class='row']", SVG)
    assert [g.get("data-task") for g in rows] == ["igpo_arith", name] == [t["task"] for t in comparison["tasks"]]
    assert len(svg.findall(".//s:line[@class='interval']", SVG)) == 2
    [zero] = svg.findall(".//s:line[@class='zero']", SVG)
    [drop] = svg.findall(".//s:line[@class='max-drop']", SVG)
    assert drop.get("stroke-dasharray") and zero.get("stroke-dasharray") is None
    # the max-drop line sits at -max_drop, and 0 at 0, on every row's scale
    for g, row in zip(rows, comparison["forest"]["rows"], strict=True):
        line = g.find("s:line[@class='interval']", SVG)
        per_point = (float(line.get("x2")) - float(line.get("x1"))) / (row["hi"] - row["lo"])
        assert float(zero.get("x1")) - float(drop.get("x1")) == pytest.approx(
            DEFAULT_MAX_DROP_POINTS * per_point, abs=0.05
        )
        assert float(line.get("x1")) == pytest.approx(float(zero.get("x1")) + row["lo"] * per_point, abs=0.05)
    assert all(t % 5 == 0 for t in nice_ticks(-12.75, 9.22)) and nice_ticks(-0.3, 0.25)[0] == pytest.approx(-0.3)


def test_page_opens_on_the_verdict_only_with_a_baseline(pair):
    base, cand = pair
    with_baseline = render(build_payload(classify([cand], base)))
    alone = render(build_payload(classify([cand])))
    assert re.findall(r'<section id="(\w+)"', with_baseline)[0] == "flipped"
    assert re.findall(r'<section id="(\w+)"', alone)[0] == "leaderboard"
    assert page_payload(with_baseline)["comparisons"][0]["verdict"] == CANNOT_RULE_OUT


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


def test_cli_max_drop_decides_the_pages_verdict_as_igpo_checks(tmp_path):
    cand = perturbed_copy(tmp_path / "unchanged", flips_nothing)
    for extra, verdict in (([], CANNOT_RULE_OUT), (["--max-drop", f"{PASSING_MAX_DROP:g}"], PASS)):
        out = tmp_path / f"{verdict}.html"
        result = CliRunner().invoke(app, ["report", str(cand), "--baseline", str(BASELINE), "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        assert page_payload(out.read_text())["comparisons"][0]["verdict"] == verdict
    bad = CliRunner().invoke(
        app, ["report", str(cand), "-b", str(BASELINE), "-o", str(tmp_path / "x.html"), "--max-drop", "-1"]
    )
    assert bad.exit_code == 2 and bad.output.startswith("error:") and "--max-drop" in bad.output
    commands = typer.main.get_command(app).commands
    defaults = {
        name: next(p.default for p in commands[name].params if p.name == "max_drop") for name in ("report", "check")
    }
    assert (
        defaults
        == {"report": DEFAULT_MAX_DROP_POINTS, "check": DEFAULT_MAX_DROP_POINTS}
        == {
            "report": MAX_DROP_POINTS,
            "check": MAX_DROP_POINTS,
        }
    )


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
        page.screenshot(path=str(tmp_path / "verdict.png"))
        page.click("nav button[data-view='leaderboard']")  # the page opens on the verdict; the board is a tab away
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
    assert all(
        (tmp_path / f"{v}.png").stat().st_size > 1000 for v in ("verdict", "leaderboard", "flipped", "samples", "runs")
    )


@needs_chromium
@pytest.mark.slow
def test_gate_page_opens_on_the_verdict_and_forest_in_chromium(tmp_path):
    from harness.report import write_report
    from harness.report.browser import open_report

    base = perturbed_copy(tmp_path / "base", flips_nothing, label="arith-again")  # two tasks
    cand = perturbed_copy(tmp_path / "cand", breaks_every_right, label="arith-again")
    page_file = write_report([cand], tmp_path / "gate.html", baseline=base)
    report = compare_runs(base, cand, CheckSettings())
    with open_report(page_file) as (page, log):
        page.set_viewport_size(FIRST_SCREEN)
        assert log.console_errors == [] and log.requests == []
        assert page.get_attribute("nav button.on", "data-view") == "flipped"
        # the first screen: the verdict, then the forest plot, no scrolling
        verdict = page.locator("#verdict-0")
        assert report.verdict == REGRESSION and verdict.is_visible() and verdict.text_content().startswith(REGRESSION)
        box = verdict.bounding_box()
        assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= FIRST_SCREEN["height"]
        forest = page.locator("#gate-0 svg.forest")
        assert forest.is_visible() and forest.bounding_box()["y"] < FIRST_SCREEN["height"]
        assert forest.locator("line.interval").count() == len(report.tasks) == 2
        assert forest.locator("line.zero").count() == forest.locator("line.max-drop").count() == 1
        assert forest.locator("line.max-drop").bounding_box()["x"] < forest.locator("line.zero").bounding_box()["x"]
        page.screenshot(path=str(tmp_path / "first-screen.png"))
        # then the flipped items, right -> wrong first
        directions = page.locator("#flipped .flip").evaluate_all("fs => fs.map(f => f.dataset.direction)")
        assert directions == ["broke"] * sum(t.losses for t in report.tasks) + ["fixed"] * sum(
            t.wins for t in report.tasks
        )
        page.click("nav button[data-view='leaderboard']")
        assert page.locator("#board").is_visible() and not verdict.is_visible()
    assert (tmp_path / "first-screen.png").stat().st_size > 1000


@needs_chromium
@pytest.mark.slow
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_labels_and_responses_render_as_text_in_chromium(tmp_path, text):
    from harness.report import write_report
    from harness.report.browser import open_report

    base = perturbed_copy(tmp_path / "base", flips_nothing, label=text, text=text)
    cand = perturbed_copy(tmp_path / "cand", label=text, text=text)
    page_file = write_report([cand], tmp_path / "hostile.html", baseline=base, title=text)
    verdict = compare_runs(base, cand, CheckSettings()).verdict
    with open_report(page_file) as (page, log):
        assert log.console_errors == [] and log.requests == []
        assert page.text_content("header h1") == text
        assert page.locator("#verdict-0").is_visible() and page.text_content("#verdict-0").startswith(verdict)
        assert text in page.text_content("#gate-0")  # the run's label, as text
        assert page.locator("#gate-0 svg.forest line.interval").count() == 2
        rows = page.locator("#gate-0 svg.forest g.row").evaluate_all("gs => gs.map(g => g.dataset.task)")
        assert rows == ["igpo_arith", text]
        assert text in page.locator("#flipped .flip .pair pre").first.text_content()  # a response, as text
        page.click("nav button[data-view='samples']")
        assert page.text_content("#sample-count").startswith("240 of 240")
