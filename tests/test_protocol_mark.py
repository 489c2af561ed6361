"""A modified protocol is `*` everywhere, and the device a run actually used is recorded.

An edited copy of a shipped protocol file keeps the shipped name (`name: igpo`); its run must not
read as plain `igpo` beside the published rows: the leaderboard, the series title, the check
header and the report's deviations all mark it. `--device cuda` on a machine without CUDA runs on
the CPU, and results.json, the printed summary and the check header say so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harness.cli import app
from harness.eval.leaderboard import DEFAULT_REFERENCE, REPORTED, protocol_label, write_leaderboard
from harness.eval.protocols import PROTOCOL_DIR, load_protocol
from harness.eval.records import ModelInfo, ProtocolInfo, RunRecord, TaskResult
from harness.eval.results import load_results, write_results
from harness.eval.series import write_series
from harness.eval.stats import accuracy_interval

SHIPPED = PROTOCOL_DIR / "igpo.yaml"
N_ITEMS = 10


def edited_copy(folder: Path, old: str, new: str) -> Path:
    """A copy of the shipped igpo.yaml, named igpo.yaml, with `old` replaced by `new`."""
    text = SHIPPED.read_text()
    assert old in text
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "igpo.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def run_with(root: Path, name: str, protocol: ProtocolInfo, device: str | None = None) -> Path:
    """A run folder of one full gsm8k task (no limit, every seed) under `protocol`."""
    items = [1.0] * 4 + [0.0] * (N_ITEMS - 4)
    acc, ci, se, kind = accuracy_interval(items, 1)
    task = TaskResult(
        task="igpo_gsm8k", metric="exact_match", accuracy=acc, n_items=N_ITEMS, samples_per_item=1,
        ci95=ci, ci_kind=kind, stderr=se, seeds=[0], repeats=1,
    )  # fmt: skip
    rows = [
        {"task": "igpo_gsm8k", "doc_id": i, "seed": 0, "repeat": 0, "correct": bool(c)} for i, c in enumerate(items)
    ]
    record = RunRecord(
        tasks={"igpo_gsm8k": task},
        model=ModelInfo(name_or_path="GSAI-ML/LLaDA-8B-Instruct", device=device),
        protocol=protocol,
        run_name=name,
    )
    write_results(root / name, record, rows)
    return root / name


def protocol_of(path: Path | str) -> ProtocolInfo:
    """The protocol table `igpo eval` records for a protocol file run as is."""
    p = load_protocol(path)
    return ProtocolInfo.parse({**p.to_dict(), "overrides": {}, "seeds_run": list(p.seeds)})


def test_an_edited_copy_named_like_a_shipped_protocol_is_marked(tmp_path: Path) -> None:
    edited = edited_copy(tmp_path / "mine", "  temperature: 0.0\n", "  temperature: 0.5\n")
    run = run_with(tmp_path, "edited", protocol_of(edited), device="cpu")
    record = load_results(run)
    assert record.protocol.name == "igpo" and protocol_label(record) == "igpo*"
    [deviation] = record.deviations()
    assert deviation == "protocol file differs from the shipped igpo.yaml: decoding.temperature 0.5 (shipped: 0.0)"
    board = write_leaderboard([run], None, "markdown", DEFAULT_REFERENCE)
    assert "| igpo*" in board and "decoding.temperature 0.5" in board and REPORTED not in board
    md, _, _ = write_series([(10, record)], tmp_path / "series")
    assert "(igpo*)" in md.read_text()

    from harness.check import CheckSettings, compare_runs
    from harness.report.data import run_data

    report = compare_runs(run, run, CheckSettings()).to_markdown()
    assert "baseline `GSAI-ML/LLaDA-8B-Instruct` (protocol igpo*, device cpu) vs candidate" in report
    card = run_data(0, record)
    assert card["protocol"]["label"] == "igpo*" and card["deviations"] == [deviation]
    assert card["model"]["device"] == "cpu"


@pytest.mark.parametrize(
    "old, new, needle",
    [
        ("seeds: [0, 1, 2]", "seeds: [0, 1]", "seeds [0, 1] (shipped: [0, 1, 2])"),
        ("steps: 24}", "steps: 12}", "tasks.igpo_arith.steps 12 (shipped: 24)"),
        ("repeats: 16}\n  igpo_amc23", "repeats: 4}\n  igpo_amc23", "tasks.igpo_amc.repeats 4 (shipped: 16)"),
    ],
)
def test_every_measured_setting_counts(tmp_path: Path, old: str, new: str, needle: str) -> None:
    run = run_with(tmp_path, "edited", protocol_of(edited_copy(tmp_path / "mine", old, new)))
    assert protocol_label(load_results(run)) == "igpo*"
    assert needle in load_results(run).deviations()[0]


def test_unmodified_protocols_stay_plain(tmp_path: Path) -> None:
    """The shipped file itself, a copy whose edit changes no setting (a comment, the description),
    a record without a file hash (written before hashes), and a protocol no shipped file is named
    after stay unmarked and beside the published rows."""
    comment = edited_copy(tmp_path / "c", "# The IGPO", "# My notes. The IGPO")
    described = edited_copy(tmp_path / "d", 'description: "IGPO', 'description: "mine: IGPO')
    own = tmp_path / "own" / "mine.yaml"
    own.parent.mkdir()
    own.write_text(SHIPPED.read_text().replace("name: igpo", "name: mine"))
    protocols = {
        "shipped": protocol_of("igpo"),
        "by-path": protocol_of(SHIPPED),
        "comment": protocol_of(comment),
        "described": protocol_of(described),
        "no-hash": ProtocolInfo(name="igpo", seeds=[0, 1, 2]),
        "own": protocol_of(own),
    }
    for name, protocol in protocols.items():
        record = load_results(run_with(tmp_path, name, protocol))
        assert record.deviations() == [] and "*" not in protocol_label(record), name
    board = write_leaderboard([tmp_path / "shipped"], None, "markdown", DEFAULT_REFERENCE)
    assert REPORTED in board


def test_a_record_with_only_a_differing_hash_is_marked(tmp_path: Path) -> None:
    """A record that holds the hash but none of the settings is judged by the hash alone."""
    record = load_results(run_with(tmp_path, "bare", ProtocolInfo(name="igpo", file_hash="sha256:other")))
    assert record.deviations() == ["protocol file differs from the shipped igpo.yaml (file hash sha256:other)"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_eval_records_the_device_it_ran_on(tmp_path: Path) -> None:
    """`--device cuda` without CUDA runs on the CPU: results.json's model.device, the summary line,
    one warning kept in the record, and the check header say cpu; the edited protocol is igpo*
    with its difference in the leaderboard printed after the run."""
    edited = edited_copy(tmp_path / "mine", "igpo_arith: {gen_length: 48, block_length: 16, steps: 24}",
                         "igpo_arith: {gen_length: 48, block_length: 16, steps: 12}")  # fmt: skip
    out = tmp_path / "runs"
    args = ["eval", "--model", "testbed", "--tasks", "arith", "--limit", "3", "--protocol", str(edited)]
    args += ["--device", "cuda", "--out", str(out), "--name", "r", "--no-leaderboard", "--seeds", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "protocol: igpo*  device: cpu" in result.output
    assert "tasks.igpo_arith.steps 12 (shipped: 24)" in result.output
    raw = json.loads((out / "r" / "results.json").read_text())
    assert raw["model"]["device"] == "cpu"
    assert any("--device cuda" in w and "runs on cpu" in w for w in raw["provenance"]["warnings"])
    # --exact: 3 items cannot rule out a 1-point drop statistically, but nothing changed
    check = CliRunner().invoke(app, ["check", str(out / "r"), "--baseline", str(out / "r"), "--exact"])
    assert check.exit_code == 0, check.output
    assert "(protocol igpo*, device cpu) vs candidate" in check.output
