"""An adapter folder as the model (harness/lmeval/adapters.py): `igpo eval --model CKPT`, lm-eval's
`pretrained=CKPT` and `igpo check CKPT` load the base its adapter_config.json names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import save_tiny_checkpoint
from typer.testing import CliRunner

from harness.cli import app
from harness.eval.results import load_results, load_samples

runner = CliRunner()
FAST = ["--gen-length", "16", "--block-length", "16", "--steps", "4", "--seeds", "0", "--no-leaderboard"]


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory):
    """(base folder, LoRA checkpoint of `igpo train` after 4 steps)."""
    from test_training import _recipe, _write_data

    root = tmp_path_factory.mktemp("lora")
    base = save_tiny_checkpoint(root / "base")
    result = runner.invoke(
        app, ["train", "--recipe", str(_recipe(root, _write_data(root), base)), "--out", str(root / "run")]
    )
    assert result.exit_code == 0, result.output
    ckpt = root / "run" / "checkpoints" / "step-000004"
    assert (ckpt / "adapter_config.json").is_file() and not (ckpt / "config.json").exists()
    return base, ckpt


def _eval(model_args: list[str], out: Path, data: Path):
    return runner.invoke(
        app,
        ["eval", *model_args, "--tasks", "gsm8k", "--data-dir", str(data), "--limit", "3", "--out", str(out), *FAST],
    )


def test_eval_of_a_lora_checkpoint_equals_base_plus_adapter(lora_checkpoint, tmp_path, shared_data):
    from safetensors.torch import load_file

    base, ckpt = lora_checkpoint
    assert any(
        bool(t.abs().sum() > 0) for k, t in load_file(str(ckpt / "adapter_model.safetensors")).items() if "lora_B" in k
    )
    as_model = _eval(["--model", str(ckpt)], tmp_path / "a", shared_data)
    assert as_model.exit_code == 0, as_model.output
    explicit = _eval(["--model", str(base), "--adapter", str(ckpt)], tmp_path / "b", shared_data)
    assert explicit.exit_code == 0, explicit.output
    [run_a] = [p.parent for p in (tmp_path / "a").rglob("results.json")]
    [run_b] = [p.parent for p in (tmp_path / "b").rglob("results.json")]
    assert run_a.name == run_b.name == "base-step-000004-igpo"
    a, b = load_results(run_a), load_results(run_b)
    assert (a.model.name_or_path, a.model.adapter) == (str(base), str(ckpt))
    assert a.model == b.model and a.label == b.label
    assert a.provenance["requests_decoded"] == b.provenance["requests_decoded"] == 3
    rows_a, rows_b = load_samples(run_a), load_samples(run_b)
    assert len(rows_a) == 3 and [(s.doc_id, s.response, s.correct) for s in rows_a] == [
        (s.doc_id, s.response, s.correct) for s in rows_b
    ]


def test_an_adapter_whose_base_is_gone_fails_in_one_line(lora_checkpoint, tmp_path, shared_data):
    base, ckpt = lora_checkpoint
    moved = tmp_path / "ckpt"
    shutil.copytree(ckpt, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    result = _eval(["--model", str(moved)], tmp_path / "out", shared_data)
    assert result.exit_code == 2, result.output
    text = result.stderr.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in result.output, text
    assert f"base model {tmp_path / 'gone'}" in text and f"--model BASE --adapter {moved}" in text
    assert not (tmp_path / "out").exists()
    both = _eval(["--model", str(moved), "--adapter", str(ckpt)], tmp_path / "out", shared_data)
    assert both.exit_code == 2 and "is an adapter folder" in both.stderr, both.output
    del config["base_model_name_or_path"]
    (moved / "adapter_config.json").write_text(json.dumps(config))
    unnamed = _eval(["--model", str(moved)], tmp_path / "out", shared_data)
    assert unnamed.exit_code == 2 and "names no base model" in unnamed.stderr, unnamed.output


def test_lm_eval_pretrained_adapter_folder_loads_its_base(lora_checkpoint, tmp_path):
    from harness.lmeval import DiffusionLM
    from igpo.errors import MissingInput

    base, ckpt = lora_checkpoint
    lm = DiffusionLM(pretrained=str(ckpt), device="cpu")
    assert (lm.args.pretrained, lm.args.adapter) == (str(base), str(ckpt))
    explicit = DiffusionLM(pretrained=str(base), adapter=str(ckpt), device="cpu")
    for name, value in explicit.model.state_dict().items():
        assert value.equal(lm.model.state_dict()[name]), name
    moved = tmp_path / "ckpt"
    shutil.copytree(ckpt, moved)
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "./nowhere"}))
    with pytest.raises(MissingInput, match=r"base model \./nowhere .*pretrained=BASE,adapter="):
        DiffusionLM(pretrained=str(moved), device="cpu")


def test_check_takes_the_base_an_adapter_names(lora_checkpoint, tmp_path):
    from harness.check.candidate import model_and_adapter
    from harness.errors import UserError
    from harness.eval.records import ModelInfo, RunRecord

    base, ckpt = lora_checkpoint
    baseline = RunRecord(tasks={}, model=ModelInfo(name_or_path="baseline-model"))
    assert model_and_adapter(str(ckpt), baseline, None) == (str(base), str(ckpt))
    plain = tmp_path / "plain-adapter"  # an adapter folder without igpo's checkpoint marker
    plain.mkdir()
    shutil.copy(ckpt / "adapter_config.json", plain / "adapter_config.json")
    assert model_and_adapter(str(plain), baseline, None) == (str(base), str(plain))
    assert model_and_adapter(str(plain), baseline, "other") == ("other", str(plain))
    config = json.loads((plain / "adapter_config.json").read_text())
    (plain / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "/no/such/base"}))
    with pytest.raises(UserError, match="base model /no/such/base .*--base-model"):
        model_and_adapter(str(plain), baseline, None)
    (plain / "adapter_config.json").write_text(json.dumps({k: v for k, v in config.items() if "base_model" not in k}))
    assert model_and_adapter(str(plain), baseline, None) == ("baseline-model", str(plain))


def test_adapter_alone_runs_on_its_recorded_base(lora_checkpoint, tmp_path, shared_data):
    """`eval --adapter CK` without --model: CK's recorded base (not the default testbed); an
    explicit other --model only with --allow-base-mismatch, recorded as given."""
    from harness.lmeval.adapters import base_for_adapter, same_model
    from igpo.models.loading import EMBEDDED_MODELS

    base, ckpt = lora_checkpoint
    alone = _eval(["--adapter", str(ckpt)], tmp_path / "a", shared_data)
    assert alone.exit_code == 0, alone.output
    [run] = [p.parent for p in (tmp_path / "a").rglob("results.json")]
    assert (load_results(run).model.name_or_path, load_results(run).model.adapter) == (str(base), str(ckpt))
    other = save_tiny_checkpoint(tmp_path / "other")
    refused = _eval(["--model", str(other), "--adapter", str(ckpt)], tmp_path / "b", shared_data)
    assert refused.exit_code == 2 and str(base) in refused.output and not (tmp_path / "b").exists()
    assert base_for_adapter(str(other), str(ckpt), allow_mismatch=True) == str(other)
    assert same_model("testbed", str(EMBEDDED_MODELS["testbed"])) and not same_model("testbed", "testbed-sign")


def test_readme_documents_the_base_mismatch_flag() -> None:
    """The flag the base-mismatch error names is documented in the README's evaluation section,
    where a user who meets the error looks."""
    from harness.lmeval.adapters import ANY_BASE_FLAG

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Evaluating a real checkpoint", 1)[1].split("\n## ", 1)[0]
    assert f"`{ANY_BASE_FLAG}` applies the adapter" in " ".join(section.split())
