"""One length rule: a diffusion gen_length is the response budget (harness/lmeval/settings.py).

The task YAML's own max_gen_toks never cuts a response shorter than the canvas asked for; an
explicit, smaller max_gen_toks is a real conflict: one warning, a record per request, a run-level
table in results.json and a deviation mark in the leaderboard.
"""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.eval.results import load_results, load_samples
from harness.lmeval.settings import resolve
from igpo.decoding import DecodeConfig

runner = CliRunner()
TEMPLATE = 512  # tasks/_igpo_template.yaml's max_gen_toks


@pytest.fixture(scope="module")
def endless_testbed(tmp_path_factory):
    """The embedded testbed with its EOS / end-of-turn output rows zeroed: it never ends a
    response, so every response fills the whole canvas it is given."""
    from safetensors.torch import load_file, save_file

    from igpo.models.loading import EMBEDDED_MODELS

    folder = tmp_path_factory.mktemp("endless") / "testbed-endless"
    shutil.copytree(EMBEDDED_MODELS["testbed"], folder)
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    weights["lm_head.weight"][[config["eos_token_id"], config["eot_token_id"]]] = 0.0
    save_file(weights, str(folder / "model.safetensors"))
    return folder


@pytest.fixture
def gsm8k_folder(tmp_path, shared_data):
    """A local data folder holding the first two GSM8K test problems."""
    folder = tmp_path / "data"
    (folder / "gsm8k").mkdir(parents=True)
    lines = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:2]
    (folder / "gsm8k" / "test.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# --------------------------------------------------------------------------- the rule, per request


def test_the_tasks_own_max_gen_toks_never_cuts_an_asked_for_canvas():
    asked = {"gen_length": 1024, "block_length": 1024, "steps": 64, "max_gen_toks": TEMPLATE}
    s = resolve(asked, DecodeConfig(), frozenset(), task_default=TEMPLATE)
    assert (s.decode.gen_length, s.max_tokens, s.length_conflict) == (1024, None, None)
    assert "does not cut" in s.notes[0]
    # model_args' gen_length is asked for too: the task's default neither cuts nor resizes it
    model = DecodeConfig(gen_length=1024, block_length=32, steps=512)
    s = resolve({"max_gen_toks": TEMPLATE}, model, frozenset({"gen_length"}), task_default=TEMPLATE)
    assert (s.decode.gen_length, s.decode.steps, s.max_tokens, s.sources["gen_length"]) == (
        1024,
        512,
        None,
        "model_args",
    )
    # nothing asked for: the task's default is the budget, as before
    s = resolve({"max_gen_toks": TEMPLATE}, DecodeConfig(), frozenset(), task_default=TEMPLATE)
    assert (s.decode.gen_length, s.max_tokens, s.length_conflict) == (512, None, None)


def test_an_explicit_smaller_max_gen_toks_is_a_recorded_conflict():
    asked = {"gen_length": 1024, "block_length": 1024, "steps": 64, "max_gen_toks": 300}
    s = resolve(asked, DecodeConfig(), frozenset(), task_default=TEMPLATE)
    assert (s.decode.gen_length, s.max_tokens) == (1024, 300)
    assert s.length_conflict == {"max_gen_toks": 300, "gen_length": 1024, "source": "request"}
    assert s.record()["length_conflict"] == s.length_conflict
    model = DecodeConfig(gen_length=1024, block_length=32, steps=512)
    s = resolve({"max_gen_toks": 256}, model, frozenset({"gen_length"}), task_default=TEMPLATE)
    assert s.decode.gen_length == 256 and s.length_conflict["source"] == "model_args"
    # a larger budget, or a length nobody asked for, is no conflict
    assert resolve({**asked, "max_gen_toks": 2048}, DecodeConfig(), frozenset()).length_conflict is None
    assert resolve({"max_gen_toks": 300}, DecodeConfig(), frozenset()).length_conflict is None


# --------------------------------------------------------------------------- end to end


def test_eval_gen_length_1024_keeps_responses_of_1024_tokens(endless_testbed, gsm8k_folder, tmp_path):
    """`igpo eval --gen-length 1024 --block-length 1024` on GSM8K: the template's max_gen_toks 512
    used to cut every response to 512 tokens; now the whole canvas is kept."""
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(endless_testbed),
            "--tasks",
            "gsm8k",
            "--data-dir",
            str(gsm8k_folder),
            "--gen-length",
            "1024",
            "--block-length",
            "1024",
            "--steps",
            "64",
            "--seeds",
            "0",
            "--no-leaderboard",
            "--out",
            str(tmp_path / "runs"),
        ],
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "testbed-endless-igpo"
    samples = load_samples(run)
    assert len(samples) == 2
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in rows] == [1024, 1024] and all(r["hit_length"] for r in rows)
    assert all(len(s.response.split()) > TEMPLATE for s in samples)  # word-level tokenizer
    record = load_results(run)
    assert record.tasks["igpo_gsm8k"].decoding["gen_length"] == 1024 and record.length_conflicts == {}
    assert "max_gen_toks" not in result.output


def test_lm_eval_gen_kwargs_conflict_warns_once_and_is_recorded(endless_testbed, capsys):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import harness.lmeval  # noqa: F401  (registers dllm)
    from harness.lmeval import DiffusionLM
    from tasks.registry import TASK_DIR

    simple_evaluate(
        model="dllm",
        model_args=f"pretrained={endless_testbed}",
        tasks=["igpo_arith"],
        limit=3,
        gen_kwargs="gen_length=64,block_length=16,steps=16,max_gen_toks=20",
        task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False),
        apply_chat_template=True,
        bootstrap_iters=0,
    )
    log = DiffusionLM.latest.request_log
    assert len(log) == 3 and all(r["tokens"] == 20 for r in log)
    assert all(r["length_conflict"] == {"max_gen_toks": 20, "gen_length": 64, "source": "request"} for r in log)
    err = capsys.readouterr().err
    assert err.count("max_gen_toks is shorter than the diffusion gen_length") == 1, err
    assert "cut to 20 tokens of the 64-token canvas" in err


def test_eval_records_a_length_conflict_for_the_run_and_marks_the_leaderboard(endless_testbed, tmp_path, monkeypatch):
    """A task config whose max_gen_toks is below the run's gen_length (what an explicit lm-eval
    max_gen_toks does): one warning, results.json's length_conflicts, a deviation footnote."""
    import harness.eval.run as evaluate

    plain = evaluate.task_config

    def smaller_budget(*args, **kwargs):
        cfg = plain(*args, **kwargs)
        return {**cfg, "generation_kwargs": {**cfg["generation_kwargs"], "max_gen_toks": 20}}

    monkeypatch.setattr(evaluate, "task_config", smaller_budget)
    out = tmp_path / "runs"
    args = ["eval", "--model", str(endless_testbed), "--tasks", "arith", "--limit", "3", "--out", str(out)]
    result = runner.invoke(app, [*args, "--seeds", "0", "--no-leaderboard", "--name", "cut"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("max_gen_toks is shorter than the diffusion gen_length") == 1, result.stderr
    record = load_results(out / "cut")
    assert record.length_conflicts == {
        "igpo_arith": {"max_gen_toks": 20, "gen_length": 48, "source": "request", "responses": 3}
    }
    assert json.loads((out / "cut" / "results.json").read_text())["length_conflicts"] == record.length_conflicts
    assert any("max_gen_toks 20 < gen_length 48 (3 responses)" in d for d in record.deviations())
    board = runner.invoke(app, ["leaderboard", str(out / "cut")])
    assert board.exit_code == 0, board.output
    assert "igpo*" in board.output and "igpo_arith: max_gen_toks 20 < gen_length 48" in board.output
