"""Leaderboard and checkpoint-series reports built from synthetic results.json records."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from harness.eval.leaderboard import (
    REPORTED,
    build_leaderboard,
    discover_runs,
    load_reference,
    order_tasks,
    render,
    write_leaderboard,
)
from harness.eval.records import ModelInfo, ProtocolInfo, RunRecord
from harness.eval.results import ResultsError, TaskResult, load_results, write_results
from harness.eval.series import write_series
from harness.eval.stats import accuracy_interval

N_ITEMS = 100
AVG_K = 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FORMATS = ("markdown", "github", "latex", "csv")
REPO_REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference.yaml"


def task_result(key: str, accuracy: float, samples: int = 1) -> TaskResult:
    """A TaskResult whose items are right or wrong so that the mean is `accuracy`."""
    right = round(accuracy * N_ITEMS)
    items = [1.0] * right + [0.0] * (N_ITEMS - right)
    acc, ci, se, kind = accuracy_interval(items, samples)
    return TaskResult(
        task=key.split("@")[0],
        metric="exact_match",
        accuracy=acc,
        n_items=N_ITEMS,
        samples_per_item=samples,
        ci95=ci,
        ci_kind=kind,
        stderr=se,
        seeds=[0],
        repeats=samples,
    )


def make_run(root: Path, name: str, accs: dict[str, float], adapter: str | None = None, protocol: str = "igpo") -> Path:
    """Write a run folder with one task per entry of `accs` (amc as avg@16)."""
    tasks = {k: task_result(k, a, AVG_K if "amc" in k else 1) for k, a in accs.items()}
    record = RunRecord(
        tasks=tasks,
        model=ModelInfo(name_or_path="GSAI-ML/LLaDA-8B-Instruct", adapter=adapter),
        protocol=ProtocolInfo(name=protocol),
        run_name=name,
    )
    run_dir = root / name
    write_results(run_dir, record, [])
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    full = {"igpo_gsm8k": 0.80, "igpo_math500": 0.40, "igpo_amc": 0.15}
    return [
        make_run(tmp_path, "base", full),
        make_run(tmp_path, "partial", {"igpo_gsm8k": 0.90}, adapter="out/igpo/checkpoint-200"),
    ]


def test_task_order() -> None:
    keys = [
        "igpo_amc",
        "igpo_zeta",
        "igpo_gsm8k@512",
        "igpo_math500",
        "igpo_gsm8k@128",
        "igpo_arith",
        "igpo_amc23",
        "igpo_gsm8k",
    ]
    assert order_tasks(keys) == [
        "igpo_gsm8k",
        "igpo_gsm8k@128",
        "igpo_gsm8k@512",
        "igpo_math500",
        "igpo_amc",
        "igpo_amc23",
        "igpo_arith",
        "igpo_zeta",
    ]


def test_average_and_order(runs: list[Path]) -> None:
    lb = build_leaderboard([load_results(p) for p in runs], None, None)
    assert lb.columns == ["igpo_gsm8k", "igpo_math500", "igpo_amc"]
    base, partial = lb.rows
    assert base.average == pytest.approx((80 + 40 + 15) / 3)
    assert base.complete
    assert partial.average == pytest.approx(90.0)
    assert not partial.complete
    assert partial.model == "LLaDA-8B-Instruct + igpo/checkpoint-200"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders(runs: list[Path], fmt: str) -> None:
    text = write_leaderboard(runs, None, fmt, REPO_REFERENCE)
    assert "LLaDA-8B-Instruct" in text
    if fmt != "csv":
        assert "80.0 [" in text
        assert "45.0" in text
        assert "Wilson" in text and "clustered" in text
        assert "90.0 *" in text


def test_intervals_match_records(runs: list[Path]) -> None:
    record = load_results(runs[0])
    lo, hi = record.tasks["igpo_gsm8k"].ci95
    text = write_leaderboard(runs, None, "markdown", None)
    assert f"80.0 [{lo * 100:.1f}, {hi * 100:.1f}]" in text


def test_reference_rows_marked_reported(runs: list[Path]) -> None:
    text = write_leaderboard(runs, None, "markdown", REPO_REFERENCE)
    line = next(x for x in text.splitlines() if "LLaDA-1.5 + IGPO" in x)
    assert REPORTED in line
    assert "IGPO paper ICLR 2026 version, Table 1" in line
    assert "[" not in line
    # Runs are igpo-protocol: d1 rows (keys with lengths) are filtered out.
    assert "SPG paper" not in text


def test_reference_after_runs_and_protocol_filter(runs: list[Path]) -> None:
    reference = load_reference(REPO_REFERENCE)
    lb = build_leaderboard([load_results(p) for p in runs], reference, "igpo")
    kinds = [r.result for r in lb.rows]
    assert kinds[:2] == ["measured", "measured"] and set(kinds[2:]) == {REPORTED}
    assert {r.protocol for r in lb.rows[2:]} == {"igpo"}
    d1 = build_leaderboard([], reference, "d1")
    wd1 = next(r for r in d1.rows if r.model == "wd1")
    assert not wd1.complete
    assert wd1.average == pytest.approx((80.8 + 82.3 + 34.4 + 39.0) / 4)


def test_csv_parses_back(runs: list[Path]) -> None:
    text = write_leaderboard(runs, None, "csv", None)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["model"] for r in rows][0] == "LLaDA-8B-Instruct"
    assert float(rows[0]["igpo_gsm8k"]) == pytest.approx(80.0)
    assert float(rows[0]["igpo_gsm8k_lo"]) < 80.0 < float(rows[0]["igpo_gsm8k_hi"])
    assert rows[0]["igpo_amc_ci"] == "cluster"
    assert float(rows[0]["average"]) == pytest.approx(45.0)
    assert rows[1]["igpo_math500"] == "" and rows[1]["complete"] == "false"


def test_writes_atomically_to_out(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "board" / "leaderboard.md"
    text = write_leaderboard(runs, out, "markdown", None)
    assert out.read_text(encoding="utf-8") == text
    assert [p.name for p in out.parent.iterdir()] == ["leaderboard.md"]


def test_unknown_format_raises(runs: list[Path]) -> None:
    with pytest.raises(ValueError, match="markdown, github, latex, csv"):
        write_leaderboard(runs, None, "html", None)
    lb = build_leaderboard([load_results(runs[0])], None, None)
    with pytest.raises(ValueError, match="unknown format"):
        render(lb, "tsv")


def test_foreign_and_corrupt_files_raise(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign" / "results.json"
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({"results": {}}), encoding="utf-8")
    corrupt = tmp_path / "corrupt" / "results.json"
    corrupt.parent.mkdir()
    corrupt.write_text('{"format": "igpo-res', encoding="utf-8")
    for bad in (foreign.parent, corrupt.parent):
        with pytest.raises(ResultsError) as err:
            write_leaderboard([bad], None, "markdown", None)
        assert "\n" not in str(err.value)


def test_bad_reference_raises(tmp_path: Path) -> None:
    cases = {
        "rows: [{model: m, protocol: p, source: s, accuracy: {igpo_gsm8k: 120}}]": "percentage",
        "rows: [{model: m, protocol: p, source: s}]": "accuracy",
        "rows: [{model: m, protocol: p, source: s, accuracy: {a: 1}, typo: 1}]": "unknown",
        "model: m": "rows",
        "rows: [": "not valid YAML",
    }
    for n, (text, problem) in enumerate(cases.items()):
        path = tmp_path / f"ref{n}.yaml"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=problem):
            load_reference(path)


def test_repo_reference_loads() -> None:
    rows = load_reference(REPO_REFERENCE)
    sft = next(r for r in rows if r.model == "LLaDA-8B-Instruct + SFT + IGPO")
    assert sft.accuracy == {"igpo_gsm8k": 86.4, "igpo_math500": 47.4, "igpo_amc": 24.4}
    assert {r.protocol for r in rows} == {"igpo", "d1", "llada", "llada15"}
    llada15 = next(r for r in rows if r.protocol == "llada15")
    assert llada15.model == "LLaDA-1.5" and llada15.accuracy == {"igpo_gsm8k": 83.8, "igpo_math500": 42.6}


def test_discover_runs(runs: list[Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert discover_runs(tmp_path) == sorted(runs)
    with pytest.raises(FileNotFoundError):
        discover_runs(tmp_path / "missing")


def test_series_best_step_and_png(tmp_path: Path) -> None:
    steps = {
        0: {"igpo_gsm8k": 0.70, "igpo_math500": 0.30},  # average 50
        100: {"igpo_gsm8k": 0.80, "igpo_math500": 0.40},  # average 60: best
        200: {"igpo_gsm8k": 0.90, "igpo_math500": 0.20},  # average 55
        300: {"igpo_gsm8k": 0.95},  # incomplete: not ranked
    }
    points = [(s, load_results(make_run(tmp_path, f"step{s}", a))) for s, a in steps.items()]
    md, png, best = write_series(points[::-1], tmp_path / "series")
    assert best == 100
    text = md.read_text(encoding="utf-8")
    assert "| 100 (best)" in text
    assert "Best checkpoint: step 100 (average 60.0%)" in text
    assert png.read_bytes()[: len(PNG_SIGNATURE)] == PNG_SIGNATURE
    assert sorted(p.name for p in md.parent.iterdir()) == ["series.md", "series.png"]
    with pytest.raises(ValueError, match="more than once"):
        write_series(points + points[:1], tmp_path / "dup")


def _deviating_run(root: Path, name: str, **protocol) -> Path:
    run = make_run(root, name, {"igpo_gsm8k": 0.5})
    record = json.loads((run / "results.json").read_text())
    record["protocol"].update(seeds=[0, 1, 2], **protocol)
    record["tasks"]["igpo_gsm8k"]["limit"] = protocol.pop("limit", None)
    (run / "results.json").write_text(json.dumps(record))
    return run


@pytest.mark.parametrize(
    "protocol, needle",
    [
        ({"overrides": {"gen_length": 64, "temperature": 1.0}}, "overrides gen_length=64, temperature=1.0"),
        ({"limit": 5}, "limit 5"),
        ({"seeds_run": [0]}, "seeds 0 (protocol: 0, 1, 2)"),
    ],
)
def test_runs_that_differ_from_their_protocol_are_marked(tmp_path: Path, protocol, needle) -> None:
    """A run with overrides, a limit or fewer seeds is `igpo*`, footnoted, and never shown beside
    the published igpo rows (which a plain igpo run gets)."""
    from harness.eval.leaderboard import DEFAULT_REFERENCE

    odd = _deviating_run(tmp_path, "odd", **protocol)
    text = write_leaderboard([odd], None, "markdown", DEFAULT_REFERENCE)
    assert "| igpo*" in text and needle in text and REPORTED not in text
    plain = _deviating_run(tmp_path, "plain", seeds_run=[0, 1, 2], overrides={})
    assert REPORTED in write_leaderboard([plain], None, "markdown", DEFAULT_REFERENCE)


def test_label_names_the_row(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r", {"igpo_gsm8k": 0.5})
    record = json.loads((run / "results.json").read_text())
    record.update(label="my ckpt", label_given=True)
    (run / "results.json").write_text(json.dumps(record))
    [row] = build_leaderboard([load_results(run)], None, None).rows
    assert row.model == "my ckpt"


def test_shipped_reference_is_found_from_any_folder(tmp_path: Path, monkeypatch, runs: list[Path]) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    monkeypatch.chdir(tmp_path)  # no results/reference.yaml here
    result = CliRunner().invoke(app, ["leaderboard", str(runs[0])])
    assert result.exit_code == 0, result.output
    assert REPORTED in result.output and "LLaDA-8B-Instruct" in result.output


def test_a_run_given_twice_is_listed_once(tmp_path: Path, runs: list[Path]) -> None:
    """`igpo leaderboard DIR DIR/results.json` (or DIR twice) lists DIR's run once, as does the
    report; a folder of runs beside one of its runs adds only the others."""
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.report.data import classify

    base = runs[0]
    for given in ([base, base / "results.json"], [base, base], [base / "results.json", tmp_path / "base"]):
        result = CliRunner().invoke(app, ["leaderboard", "--no-reference", *map(str, given)])
        assert result.exit_code == 0, result.output
        assert result.output.count("LLaDA-8B-Instruct") == 1, result.output
    result = CliRunner().invoke(app, ["leaderboard", "--no-reference", str(tmp_path), str(base / "results.json")])
    assert result.exit_code == 0 and result.output.count("| LLaDA-8B-Instruct") == 2, result.output
    assert classify([base, base / "results.json", tmp_path]).runs == runs
