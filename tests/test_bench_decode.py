"""`igpo bench decode` part 2: fast modes against exact decoding, on arith and a GSM8K subset."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from harness.bench.decode import FAST_MODES, DecodeBenchConfig, identical_share, part_two
from harness.cli import app


def test_identical_share_counts_up_to_the_first_eos_of_the_reference():
    eos = 2
    ref = torch.tensor([[5, 6, eos, 9, 9], [5, 6, 7, 8, 9]])
    comp = torch.tensor([[5, 0, eos, 1, 1], [5, 6, 7, 8, 0]])
    # row 0 counts 3 positions (2 equal), row 1 all 5 (4 equal): 6 of 8
    assert identical_share(comp, ref, eos) == 6 / 8
    assert identical_share(ref, ref, eos) == 1.0
    assert identical_share(comp, ref, None) == 6 / 10


def test_part_two_measures_every_mode_on_arith_and_gsm8k(tiny_checkpoint, shared_data):
    cfg = DecodeBenchConfig(
        model=str(tiny_checkpoint),
        fast_lengths=[32],
        fast_problems=[6],
        fast_batch_size=4,
        data_dir=shared_data,
        gsm8k_problems=2,
    )
    text, summary = part_two(cfg)
    assert "### gen_length 32: igpo_arith (6 problems" in text
    assert "### gen_length 32: GSM8K test, first 2" in text
    for label, _ in FAST_MODES:
        assert ("igpo_arith", 32, label) in summary and ("GSM8K", 32, label) in summary
    speed, _acc, same = summary[("igpo_arith", 32, "exact")]
    assert speed == 1.0 and same == 1.0
    assert all(0.0 <= v[2] <= 1.0 for v in summary.values())


def test_bench_decode_rejects_bad_problem_counts_and_data_folder(tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "decode", "--problems", "300"])
    assert bad.exit_code == 2 and "--problems" in bad.output and "Traceback" not in bad.output
    negative = runner.invoke(app, ["bench", "decode", "--gsm8k", "-1"])
    assert negative.exit_code == 2 and "--gsm8k" in negative.output
    missing = runner.invoke(app, ["bench", "decode", "--data-dir", str(tmp_path)])
    assert missing.exit_code == 2 and "gsm8k/test.jsonl" in missing.output
