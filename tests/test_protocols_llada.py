"""The `llada` and `llada15` protocols: LLaDA's published evaluation settings, run end to end."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.eval.leaderboard import DEFAULT_REFERENCE, load_reference
from harness.eval.protocols import available, load_protocol
from harness.eval.results import load_results

runner = CliRunner()

# (gen_length, block_length, steps) per task: LLaDA paper (arXiv 2502.09992) for LLaDA-8B-Instruct,
# LLaDA 1.5 (arXiv 2505.19223); steps = gen_length.
PUBLISHED = {
    "llada": {"igpo_gsm8k": (256, 8, 256), "igpo_math500": (512, 64, 512)},
    "llada15": {"igpo_gsm8k": (256, 16, 256), "igpo_math500": (1024, 128, 1024)},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_llada_protocols_carry_the_published_settings(name):
    protocol = load_protocol(name)
    assert name in available() and protocol.seeds == [0] and protocol.variants()[0][0] == ""
    assert "arXiv" in protocol.source
    for task, settings in PUBLISHED[name].items():
        cfg, repeats = protocol.for_task(task, protocol.decoding)
        assert (cfg.gen_length, cfg.block_length, cfg.steps) == settings and repeats == 1
        assert (cfg.temperature, cfg.remasking, cfg.cfg_scale) == (0.0, "low_confidence", 0.0)
        # LLaDA-1.5's configs turn confidence_eos_eot_inf on; LLaDA's block-diffusion rows do not
        assert cfg.eos_last == (name == "llada15") and not cfg.suppress_eos


def test_reference_rows_keep_the_igpo_and_d1_protocols_and_name_only_built_in_ones():
    rows = load_reference(DEFAULT_REFERENCE)
    protocols = {r.protocol for r in rows}
    assert {"igpo", "d1"} <= protocols and protocols <= set(available())
    assert all(r.source for r in rows)


def test_eval_under_llada_records_the_protocol_and_prints_the_leaderboard(tmp_path):
    out = tmp_path / "runs"
    result = runner.invoke(
        app,
        ["eval", "--model", "testbed", "--tasks", "arith", "--protocol", "llada", "--limit", "4"]
        + ["--no-leaderboard", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    record = load_results(out / "testbed-llada")
    assert record.protocol.name == "llada" and record.protocol.file_hash.startswith("sha256:")
    decoding = record.tasks["igpo_arith"].decoding
    assert (decoding["gen_length"], decoding["block_length"], decoding["steps"]) == (48, 16, 48)
    assert "| testbed" in result.output and "llada*" in result.output  # --limit: a deviation
