"""The error contract, case by case: bad input ends in one `error:` line naming the culprit and
exit code 2, with no traceback and nothing half-written; crash leftovers never block a resume.

Each case runs the real CLI in-process (typer's runner), on the embedded testbed model or a tiny
model folder built here. More cases live beside the features they guard (test_eval,
test_training, test_check, test_lmeval_*); this file is the table a hostile user would try first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from tasks.registry import DATA_DIR_ENV

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
TIMEOUT_S = 300
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def igpo(*args, cwd: Path | None = None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return runner.invoke(app, [str(a) for a in args])
    finally:
        os.chdir(old)


def assert_one_error(result, needle: str, folder: Path | None = None) -> None:
    """Exit 2, one `error:` line containing `needle`, no traceback, nothing written under `folder`."""
    text = (result.stderr if hasattr(result, "stderr") and result.stderr else result.output).strip()
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output, result.output
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    assert needle.lower() in lines[0].lower(), lines[0]
    if folder is not None and folder.exists():
        assert not [p for p in folder.rglob("*") if p.is_file()], list(folder.rglob("*"))


def _model_with_config(tmp_path: Path, **changes) -> Path:
    from conftest import save_tiny_checkpoint

    folder = save_tiny_checkpoint(tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


EVAL_CASES = [
    (["--temperature", "nan"], "temperature"),
    (["--temperature", "inf"], "temperature"),
    (["--tasks", "gsm9k"], "unknown task"),
    (["--name", "../../escape"], "name"),
    (["--name", "/abs/run"], "name"),
    (["--seeds", ",,,"], "seeds"),
    (["--batch-size", "0"], "batch"),
    (["--device", "tpu:7"], "device"),
    (["--model", "/no/such/model"], "model path not found"),
    (["--steps", "7"], "steps"),
    (["--cfg-scale", "-1"], "cfg_scale"),
    (["--threshold", "1.5"], "threshold"),
    (["--seeds", "1,1", "--temperature", "0.7"], "seed 1 more than once"),
    (["--seeds", "99999999999999999999999"], "--seeds: seed 99999999999999999999999 is out of range"),
    (["--seeds", "0,4294967296", "--temperature", "0.7"], "--seeds: seed 4294967296 is out of range"),
]


SIZE_CASES = [  # sizes that would overflow or try to allocate terabytes: refused before any allocation
    (["--steps", "99999999999999999999"], "steps=99999999999999999999 is more than gen_length=48"),
    (["--steps", "96"], "steps=96 is more than gen_length=48"),
    (["--gen-length", "1099511627776"], "gen_length=1099511627776 is over the maximum of 16384 tokens"),
    (["--gen-length", "16400", "--block-length", "16400", "--steps", "1"], "over the maximum of 16384"),
    (["--limit", "99999999999999999999999"], "--limit must be a positive number of problems <= 1000000000"),
    (["--batch-size", "99999999999999999999"], "--batch-size must be >= 1 and <= 4096"),
    (["--batch-size", "4097"], "--batch-size must be >= 1 and <= 4096"),
]


@pytest.mark.parametrize(
    "extra, needle", EVAL_CASES + SIZE_CASES, ids=[" ".join(c[0]) for c in EVAL_CASES + SIZE_CASES]
)
def test_eval_bad_flags(tmp_path, extra, needle):
    out = tmp_path / "out"
    args = ["eval", "--tasks", "arith", "--limit", "2", "--out", out, "--no-leaderboard"]
    assert_one_error(igpo(*args, *extra), needle, out)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--tasks", ""], "--tasks '' names no task"),
        (["--tasks", " , "], "names no task"),
        (["--tasks", "arith", "--steps", "999"], "igpo_arith: steps=999 is more than gen_length=48"),
        (["--tasks", "arith", "--protocol", "d1", "--steps", "999"], "--steps does not apply"),
    ],
    ids=["empty", "commas", "steps-over-arith-canvas", "steps-under-d1"],
)
def test_eval_empty_tasks_and_steps_over_the_canvas(tmp_path, extra, needle):
    """`--tasks ''` is no request for the default tasks (gsm8k / math500 / amc from the Hub); 999
    steps on arith's 48-token canvas are refused, not recorded."""
    out = tmp_path / "out"
    assert_one_error(igpo("eval", "--limit", "2", "--out", out, "--no-leaderboard", *extra), needle, out)


def test_check_empty_tasks(tmp_path):
    baseline = Path(__file__).resolve().parents[1] / "results" / "baselines" / "testbed-arith"
    assert_one_error(igpo("check", baseline, "--baseline", baseline, "--tasks", ""), "names no task")


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"n_layers": "four"}, "n_layers"),
        ({"vocab_size": -3}, "vocab_size"),
        ({"rms_norm_eps": "tiny"}, "rms_norm_eps"),
    ],
)
def test_model_config_of_the_wrong_type(tmp_path, changes, needle):
    model = _model_with_config(tmp_path, **changes)
    out = tmp_path / "out"
    assert_one_error(
        igpo("eval", "--model", model, "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard"),
        needle,
        out,
    )


@pytest.mark.parametrize("damage", ["random", "empty", "truncated"])
def test_damaged_weights(tmp_path, damage):
    from conftest import save_tiny_checkpoint

    model = save_tiny_checkpoint(tmp_path / "m")
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"random": os.urandom(len(data)), "empty": b"", "truncated": data[: len(data) // 2]}[damage])
    out = tmp_path / "out"
    assert_one_error(
        igpo("eval", "--model", model, "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard"),
        "model.safetensors",
        out,
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("everywhere", [True, False], ids=["all", "one"])
def test_non_finite_weights_refused_at_load(tmp_path, value, everywhere):
    """All-NaN (or one inf) weights would decode garbage and score 0% with no word: refused at
    load, one line naming the file and the tensor."""
    from conftest import save_tiny_checkpoint
    from safetensors.torch import load_file, save_file

    model = save_tiny_checkpoint(tmp_path / "m")
    weights = model / "model.safetensors"
    state = load_file(weights)
    for i, name in enumerate(sorted(state)):
        if everywhere or i == 1:
            state[name] = state[name].clone()
            state[name].view(-1)[slice(None) if everywhere else 0] = value  # every value, or the first
    save_file(state, weights, metadata={"format": "pt"})
    out = tmp_path / "out"
    result = igpo("eval", "--model", model, "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard")
    assert_one_error(result, f"weights file {weights} holds non-finite values", out)
    assert sorted(state)[0 if everywhere else 1] in result.output


@pytest.mark.parametrize(
    "adapter_config, needle",
    [
        ({"peft_type": "LORA", "base_model_name_or_path": "/no/such/base"}, "--model BASE --adapter"),
        ({"peft_type": "LORA"}, "names no base model"),
        ("{not json", "invalid JSON"),
    ],
)
def test_adapter_folder_as_model_without_its_base(tmp_path, adapter_config, needle):
    folder = tmp_path / "adapter"
    folder.mkdir()
    text = adapter_config if isinstance(adapter_config, str) else json.dumps(adapter_config)
    (folder / "adapter_config.json").write_text(text)
    out = tmp_path / "out"
    assert_one_error(
        igpo("eval", "--model", folder, "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard"),
        needle,
        out,
    )


def test_adapter_on_another_base_than_it_records(tmp_path):
    """`eval --model testbed --adapter CK` where CK records testbed-sign: one line naming both and
    the override."""
    folder = tmp_path / "ck"
    folder.mkdir()
    config = {"peft_type": "LORA", "base_model_name_or_path": "testbed-sign"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    args = ["--adapter", folder, "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard"]
    result = igpo("eval", "--model", "testbed", *args)
    assert_one_error(result, "--model testbed is not the base of --adapter", out)
    assert "as testbed-sign" in result.output and "--allow-base-mismatch" in result.output


TRAIN_CASES = [
    (["loss.beta=inf"], "beta"),
    (["decode.temperature=nan"], "temperature"),
    (["num_generations=0"], "num_generations"),
    (["optim.lr=-1"], "lr"),
    (["prompts_per_step=abc"], "prompts_per_step"),
    (["no_such_key=1"], "no_such_key"),
    (["num_generations=1000000000"], "num_generations"),
    (["prompts_per_step=100000000"], "prompts_per_step"),
    (["seed=99999999999999999999"], "seed must be an integer from 0 to 9223372036854775807"),
    (["seed=-1"], "seed must be an integer from 0"),
    # several limits of one kind: the message names the one that failed, with its value
    (["optim.grad_clip=-1"], "optim.grad_clip must be >= 0, got -1"),
    (["optim.warmup_steps=-3"], "optim.warmup_steps must be >= 0, got -3"),
    (["optim.weight_decay=-0.5"], "optim.weight_decay must be >= 0, got -0.5"),
    (["loss.epsilon_high=-0.1"], "loss.epsilon_high must be >= 0, got -0.1"),
    (["loss.beta=-1"], "loss.beta must be >= 0, got -1"),
    (["elbo_samples=0"], "elbo_samples must be >= 1, got 0"),
    (["trajectory_group_steps=0"], "trajectory_group_steps must be >= 1, got 0"),
]


@pytest.mark.parametrize("extra, needle", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_bad_overrides(tmp_path, extra, needle):
    out = tmp_path / "run"
    assert_one_error(igpo("train", "--recipe", "grpo_tiny", "--out", out, *extra), needle, out)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["batch_size=0"], "batch_size must be >= 1, got 0"),
        (["max_steps=0"], "max_steps must be >= 1, got 0"),
        (["data.max_completion_tokens=0"], "data.max_completion_tokens must be >= 1, got 0"),
        (["seed=9223372036854775808"], "seed must be an integer from 0 to 9223372036854775807"),
    ],
)
def test_sft_bad_overrides(tmp_path, extra, needle):
    out = tmp_path / "run"
    assert_one_error(igpo("sft", "--recipe", "sft_tiny", "--out", out, *extra), needle, out)


def test_each_limit_names_its_own_value():
    """Settings checked together are refused one by one, naming the value that failed."""
    from harness.rewrite.client import ClientSettings
    from igpo.arith import ArithConfig
    from igpo.errors import InvalidSetting

    url = "http://127.0.0.1:9/v1"
    for call, needle in (
        (lambda: ClientSettings(base_url=url, model="m", max_attempts=0), "--max-attempts must be >= 1, got 0"),
        (lambda: ClientSettings(base_url=url, model="m", concurrency=0), "--concurrency must be >= 1, got 0"),
        (lambda: ArithConfig(operand_max=0), "operand_max must be >= 1, got 0"),
        (lambda: ArithConfig(max_value=5, start_max=9), "max_value=5 must be >= start_max=9"),
    ):
        with pytest.raises(InvalidSetting) as err:
            call()
        assert str(err.value).startswith(needle), str(err.value)


DATA_ROW_CASES = [  # (command, data.source, the file's one row, what the error names)
    ("train", "gsm8k", {"answer": "#### 3"}, "missing field 'question' (the row has: 'answer')"),
    ("train", "gsm8k", {"question": "1+2?"}, "missing field 'answer'"),
    ("train", "gsm8k", {"question": ["1+2?"], "answer": "#### 3"}, "field 'question' is a list, not text"),
    ("train", "jsonl", {"prompt": "1+2?"}, "missing field 'answer'"),
    ("train", "jsonl", {"prompt": "1+2?", "answer": None}, "field 'answer' is null, not text"),
    ("train", "jsonl", {"prompt": {"q": 1}, "answer": "3"}, "field 'prompt' is an object, not text"),
    ("train", "jsonl", {"question": "1+2?", "answer": "3"}, "missing field 'prompt' (the row has: 'question'"),
    ("train", "math", {"problem": "1+2?", "answer": True, "solution": "3"}, "field 'answer' is a boolean"),
    ("sft", "jsonl", {"prompt": "1+2?"}, "missing field 'completion' (the row has: 'prompt')"),
    ("sft", "jsonl", {"prompt": "1+2?", "completion": [3]}, "field 'completion' is a list, not text"),
    ("sft", "gsm8k", {"question": "1+2?", "answer": False}, "field 'answer' is a boolean, not text"),
    ("sft", "gsm8k", {"answer": "#### 3"}, "missing field 'question'"),
]


@pytest.mark.parametrize(
    "command, source, row, needle", DATA_ROW_CASES, ids=[f"{c[0]} {c[1]} {c[3][:30]}" for c in DATA_ROW_CASES]
)
def test_training_data_rows_without_their_fields(tmp_path, command, source, row, needle):
    """A user's training file whose row lacks a field the source reads, or holds a non-text value
    there: one error naming the file, the line (2: after a good row) and the field."""
    good = {
        "gsm8k": {"question": "1+1?", "answer": "1+1=2\n#### 2"},
        "jsonl": {"prompt": "1+1?", "answer": "2", "completion": "2"},
        "math": {"problem": "1+1?", "answer": "2", "solution": "$\\boxed{2}$"},
    }[source]
    data = tmp_path / "data" / "rows.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    out = tmp_path / "run"
    recipe = "grpo_tiny" if command == "train" else "sft_tiny"
    result = igpo(command, "--recipe", recipe, "--out", out, f"data.source={source}", f"data.path={data}")
    assert_one_error(result, needle, out)
    assert f"{data}:2:" in result.output


@pytest.mark.parametrize("command, recipe", [("train", "grpo_tiny"), ("sft", "sft_tiny")])
def test_data_path_a_generating_source_would_ignore(tmp_path, command, recipe):
    """data.path with data.source=arith (which generates its problems): refused, not silently
    trained on something else than the file the user named."""
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "1+1?", "answer": "2"}) + "\n")
    out = tmp_path / "run"
    result = igpo(command, "--recipe", recipe, "--out", out, "data.source=arith", f"data.path={data}")
    assert_one_error(result, "not read by data.source=arith", out)
    assert str(data) in result.output


def test_check_refuses_nan_and_keeps_outputs_together(tmp_path):
    out = tmp_path / "runs"
    ok = igpo("eval", "--tasks", "arith", "--limit", "4", "--out", out, "--name", "base", "--no-leaderboard")
    assert ok.exit_code == 0, ok.output
    run = out / "base"
    assert_one_error(igpo("check", run, "--baseline", run, "--max-drop", "nan"), "max")
    (tmp_path / "adir").mkdir()
    summary = tmp_path / "summary.md"
    assert_one_error(igpo("check", run, "--baseline", run, "--json", tmp_path / "adir", "--summary", summary), "--json")
    assert not summary.exists()  # a failing --json leaves no --summary behind


def one_error_line(cmd: list[str], env: dict[str, str], cwd: Path = REPO) -> str:
    """Run a command in a subprocess; it must exit 2 with one `error:` line and no traceback."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def test_lm_eval_bad_model_arg():
    cmd = [sys.executable, "-m", "harness.lm_eval", "--model", "dllm", "--tasks", "igpo_arith"]
    line = one_error_line(
        cmd + ["--model_args", "pretrained=testbed,gen_length=abc", "--limit", "1"], {**os.environ, **OFFLINE_ENV}
    )
    assert "gen_length" in line


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """No network, an empty Hugging Face cache and no data folder: a benchmark task cannot load."""
    env = {k: v for k, v in os.environ.items() if k != DATA_DIR_ENV}
    return {**env, **OFFLINE_ENV, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_CACHE": str(tmp_path / "hf" / "ds")}


def test_eval_benchmark_offline_without_data_dir(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from harness.cli import app; app()", "eval", "--model", "testbed"]
    line = one_error_line(
        cmd + ["--tasks", "gsm8k", "--limit", "1", "--out", str(out), "--no-leaderboard"],
        _offline_env(tmp_path),
        tmp_path,
    )
    assert "openai/gsm8k" in line and "--data-dir" in line, line
    assert not out.exists() or not [f for f in out.rglob("*") if f.is_file()]


def test_lm_eval_benchmark_offline_without_data_dir(tmp_path):
    cmd = [sys.executable, "-m", "harness.lm_eval", "--model", "dllm", "--tasks", "igpo_gsm8k"]
    line = one_error_line(cmd + ["--model_args", "pretrained=testbed", "--limit", "1"], _offline_env(tmp_path))
    assert DATA_DIR_ENV in line, line


@pytest.mark.parametrize(
    "task, gold, needle",
    [
        ("amc", float("nan"), "amc/test.jsonl:5: the gold answer is 'nan'"),
        ("amc", "-Infinity", "amc/test.jsonl:5: the gold answer is '-Infinity'"),
        ("gsm8k", "He has 3.\n#### nan", "gsm8k/test.jsonl:5: the gold answer is 'nan'"),
    ],
)
def test_non_finite_gold_answer(tmp_path, task, gold, needle):
    """A NaN or infinite gold would be scored against every response: refused by file and line."""
    from tasks.registry import SPECS, TASKS

    spec = SPECS[TASKS[task]]
    data = tmp_path / "data"
    (data / spec.local_file).parent.mkdir(parents=True)
    source = Path(os.environ.get(DATA_DIR_ENV, REPO.parent / "shared" / "data")) / spec.local_file
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()[:8]]
    rows[4]["answer"] = gold
    (data / spec.local_file).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    args = ["eval", "--tasks", task, "--data-dir", data, "--limit", "1", "--out", out, "--no-leaderboard"]
    assert_one_error(igpo(*args), needle, out)


def test_protocol_file_mistakes(tmp_path):
    base = (REPO / "harness" / "eval" / "protocols" / "igpo.yaml").read_text()
    out = tmp_path / "out"
    for text, needle in (
        (base.replace("seeds: [0, 1, 2]", "seeds: []"), "seeds"),
        (base.replace("seeds: [0, 1, 2]", "seeds: [0, 1, 1]"), "more than once"),
        (base.replace("igpo_arith:", "igpo_arihtm:"), "igpo_arihtm"),
        (base.replace("temperature: 0.0", "temperature: .nan", 1), "temperature"),
    ):
        path = tmp_path / "p.yaml"
        path.write_text(text)
        assert_one_error(
            igpo("eval", "--tasks", "arith", "--limit", "1", "--protocol", path, "--out", out, "--no-leaderboard"),
            needle,
            out,
        )


@pytest.mark.parametrize("seed", ["99999999999999999999999", "4294967296"])
def test_protocol_seed_out_of_range(tmp_path, seed):
    """A seed numpy's generator (seeded by lm-eval) would reject: one error naming the file,
    before any model loads; 2**32 - 1 itself is accepted (the plan is made)."""
    base = (REPO / "harness" / "eval" / "protocols" / "igpo.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(base.replace("seeds: [0, 1, 2]", f"seeds: [0, {seed}]"))
    out = tmp_path / "out"
    result = igpo("eval", "--tasks", "arith", "--limit", "1", "--protocol", path, "--out", out, "--no-leaderboard")
    assert_one_error(result, f"seed {seed} is out of range", out)
    assert str(path) in result.output

    from harness.eval.protocols import MAX_SEED, load_protocol

    path.write_text(base.replace("seeds: [0, 1, 2]", f"seeds: [0, {MAX_SEED}]"))
    assert load_protocol(str(path)).seeds == [0, MAX_SEED]


USAGE_CASES = [  # what typer / click cannot parse: (command line, the option named, whose help)
    (["eval", "--limit", "1e23"], "Invalid value for '--limit'", "igpo eval"),
    (["eval", "--limit", "abc"], "Invalid value for '--limit'", "igpo eval"),
    (["eval", "--batch-size", "x"], "Invalid value for '--batch-size'", "igpo eval"),
    (["eval", "--temperature", "warm"], "Invalid value for '--temperature'", "igpo eval"),
    (["eval", "--no-such-flag"], "No such option: --no-such-flag", "igpo eval"),
    (["train", "--recipe"], "Option '--recipe' requires an argument", "igpo train"),
    (["sft", "--recipe", "sft_tiny", "--resume=maybe"], "--resume", "igpo sft"),
    (["check"], "Missing argument 'candidate'", "igpo check"),
    (["leaderboard", "--format"], "--format", "igpo leaderboard"),
    (
        ["rewrite-traces", "x.jsonl", "--concurrency", "many"],
        "Invalid value for '--concurrency'",
        "igpo rewrite-traces",
    ),
    (["bench", "decode", "--repeats", "x"], "Invalid value for '--repeats'", "igpo bench decode"),
    (["bench", "nosuch"], "No such command 'nosuch'", "igpo bench"),
    (["nosuchcmd"], "No such command 'nosuchcmd'", "igpo"),
    (["--no-such-flag"], "No such option: --no-such-flag", "igpo"),
]


@pytest.mark.parametrize("args, needle, command", USAGE_CASES, ids=[" ".join(c[0]) for c in USAGE_CASES])
def test_unparsable_command_line_is_one_error_line(tmp_path, args, needle, command):
    """typer's own type and usage errors read like every other bad input: one `error:` line
    naming the option and the command whose --help to read, exit 2, no usage box."""
    result = igpo(*args, cwd=tmp_path)
    assert_one_error(result, needle, tmp_path)
    assert result.stderr.rstrip().endswith(f"(see '{command} --help')"), result.stderr
    assert "Usage:" not in result.output and "\u256d" not in result.output  # no box


def test_no_arguments_still_show_the_help():
    for args in ([], ["bench"]):
        result = igpo(*args)
        assert "Usage:" in result.output and "error:" not in result.output, result.output


# --------------------------------------------------------------------------- crash leftovers


def test_torn_response_cache_line_is_not_glued_to_the_next(tmp_path):
    from harness.lmeval.cache import ResponseCache

    path = tmp_path / "responses.jsonl"
    cache = ResponseCache(path)
    cache.put("a", "first")
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"key": "b", "respo')  # the process died mid-line
    again = ResponseCache(path)
    assert again.get("a")["response"] == "first" and again.get("b") is None
    again.put("c", "third")
    final = ResponseCache(path)
    assert final.get("c")["response"] == "third" and final.get("a")["response"] == "first"


def test_interrupted_eval_resumes_from_its_cache(tmp_path):
    """A run killed after some responses (simulated: a responses.jsonl with a torn last line and no
    results.json) finishes with the same samples as an uninterrupted run, decoding only the rest."""
    out = tmp_path / "runs"
    args = ["eval", "--tasks", "arith", "--limit", "6", "--out", out, "--no-leaderboard"]
    full = igpo(*args, "--name", "full")
    assert full.exit_code == 0, full.output
    from igpo.outputs import MARKER

    cut = out / "cut"
    cut.mkdir(parents=True)
    shutil.copy(out / "full" / MARKER, cut / MARKER)  # a killed run keeps the marker igpo writes first
    lines = (out / "full" / "responses.jsonl").read_text().splitlines()
    (cut / "responses.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    again = igpo(*args, "--name", "cut")
    assert again.exit_code == 0, again.output
    record = json.loads((cut / "results.json").read_text())
    assert record["provenance"]["requests_from_cache"] == 3 and record["provenance"]["requests_decoded"] == 3
    same = [json.loads(x)["response"] for x in (out / "full" / "samples.jsonl").read_text().splitlines()]
    assert [json.loads(x)["response"] for x in (cut / "samples.jsonl").read_text().splitlines()] == same


def test_stray_results_file_under_out_is_skipped(tmp_path):
    out = tmp_path / "runs"
    (out / "junk").mkdir(parents=True)
    (out / "junk" / "results.json").write_text('{"not": "a run"}')
    result = igpo("eval", "--tasks", "arith", "--limit", "2", "--out", out, "--name", "ok")
    assert result.exit_code == 0, result.output
    assert (out / "ok" / "results.json").is_file() and "skips" in result.output


def test_leftover_tmp_checkpoint_does_not_block_eval_run(tmp_path):
    """`igpo eval --run` over a training folder holding a crash leftover `step-N.tmp`."""
    from igpo.testbed import TESTBED_DIR
    from igpo.training.checkpoints import MARKER_FILE

    train = tmp_path / "train"
    for name in ("step-000002", "step-000003.tmp"):  # the .tmp one holds its marker already
        shutil.copytree(TESTBED_DIR, train / "checkpoints" / name)
        (train / "checkpoints" / name / MARKER_FILE).write_text(
            json.dumps({"step": 2, "kind": "full", "base_model": str(TESTBED_DIR)})
        )
    result = igpo(
        "eval", "--run", train, "--tasks", "arith", "--limit", "2", "--out", tmp_path / "ev", "--no-leaderboard"
    )
    assert result.exit_code == 0, result.output
    assert "000003.tmp" not in result.output or "skip" in result.output.lower()


# --------------------------------------------------------------------------- output paths


def _paths(tmp_path: Path, args: list[str]) -> list[str]:
    """FILE: an existing file; DIR: an existing folder; LONG: a 300-character name; under tmp_path."""
    (tmp_path / "afile").write_text("mine\n")
    (tmp_path / "adir").mkdir(exist_ok=True)
    names = {"FILE": "afile", "DIR": "adir", "LONG": "x" * 300}
    return [
        str(tmp_path / "/".join(names.get(p, p) for p in a[1:].split("/"))) if a.startswith("@") else a for a in args
    ]


_EVAL = ["eval", "--tasks", "arith", "--limit", "1"]
OUTPUT_CASES = [
    ([*_EVAL, "--no-leaderboard", "--out", "@FILE"], "--out"),
    ([*_EVAL, "--no-leaderboard", "--out", "@FILE/runs"], "--out"),
    ([*_EVAL, "--no-leaderboard", "--out", "@DIR", "--name", "x" * 300], "--name"),
    ([*_EVAL, "--no-leaderboard", "--out", "@LONG"], "--out"),
    ([*_EVAL, "--no-leaderboard", "--out", "@DIR", "--html", "@FILE/r.html"], "--html"),
    ([*_EVAL, "--no-leaderboard", "--out", "@DIR", "--html", "@DIR"], "--html"),
    ([*_EVAL, "--out", "@DIR", "--leaderboard", "@DIR"], "--leaderboard"),
    ([*_EVAL, "--out", "@DIR", "--leaderboard", "@FILE/lb.md"], "--leaderboard"),
    (["train", "--recipe", "grpo_tiny", "--out", "@FILE"], "--out"),
    (["sft", "--recipe", "sft_tiny", "--out", "@FILE/run"], "--out"),
    (["train", "--recipe", "grpo_tiny", "--out", "@DIR/LONG"], "--out"),
    (["report", "@DIR", "--out", "@DIR"], "--out"),
    (["report", "@DIR", "--out", "@FILE/r.html"], "--out"),
    (["leaderboard", "@DIR", "--out", "@DIR"], "--out"),
    (["leaderboard", "@DIR", "--out", "@FILE/lb.md"], "--out"),
    (["ablate", "--quick", "--out", "@FILE"], "--out"),
    (["ablate", "--quick", "--out", "@DIR", "--results", "@FILE"], "--results"),
    (["ablate", "--quick", "--out", "@DIR", "--html", "@DIR"], "--html"),
    (["check", "@DIR", "--baseline", "@DIR", "--summary", "@DIR"], "--summary"),
    (["check", "@DIR", "--baseline", "@DIR", "--json", "@FILE/c.json"], "--json"),
    (["check", "@DIR", "--baseline", "@DIR", "--out", "@FILE"], "--out"),
    (["check", "@DIR", "--baseline", "@DIR", "--html", "@DIR"], "--html"),
    (["rewrite-traces", "@FILE", "--out", "@DIR", "--base-url", "http://127.0.0.1:9", "--model", "m"], "--out"),
    (
        ["rewrite-traces", "@FILE", "--out", "@FILE/k.jsonl", "--base-url", "http://127.0.0.1:9", "--model", "m"],
        "--out",
    ),
    (["bench", "decode", "--out", "@DIR"], "--out"),
    (["bench", "ops", "--out", "@FILE/ops.md"], "--out"),
    (["bench", "train", "--out", "@DIR"], "--out"),
    (["bench", "eval", "--out", "@DIR"], "--out"),
    (["bench", "decode", "--repeats", "0", "--out", "@DIR/d.md"], "--repeats"),
    (["bench", "decode", "--steps", "0", "--out", "@DIR/d.md"], "--steps"),
    (["bench", "decode", "--batch-size", "-1", "--out", "@DIR/d.md"], "--batch-size"),
    (["bench", "eval", "--limit", "0", "--out", "@DIR/e.md"], "--limit"),
    (["bench", "train", "--steps", "0", "--out", "@DIR/t.md"], "--steps"),
]


@pytest.mark.parametrize(
    "args, needle", OUTPUT_CASES, ids=[" ".join(c[0][:4]) + f"-{i}" for i, c in enumerate(OUTPUT_CASES)]
)
def test_output_paths_checked_before_any_work(tmp_path, args, needle):
    """An output that cannot be written is refused at once, naming its flag; nothing is written."""
    result = igpo(*_paths(tmp_path, args))
    assert_one_error(result, needle)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert written == ["adir", "afile"], written
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_version_prints_the_version():
    from importlib.metadata import version

    result = igpo("--version")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"igpo {version('igpo')}"


def test_error_after_a_progress_bar_starts_its_own_line(capsys):
    """An error raised while a tqdm bar is drawn is printed on a line of its own."""
    from tqdm import tqdm

    from harness.errors import friendly
    from igpo.errors import BadFile

    @friendly
    def command():
        bar = tqdm(total=3, desc="work", file=sys.stderr)
        bar.update(1)
        raise BadFile("data.jsonl: line 3: not JSON")

    with pytest.raises(SystemExit) as exit_info:
        command()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "\nerror: data.jsonl: line 3: not JSON" in err or err.startswith("error:"), repr(err)
    assert [line for line in err.splitlines() if "error:" in line] == ["error: data.jsonl: line 3: not JSON"]


# --------------------------------------------------------------------------- model, tokenizer, adapter files


def _damage_model(folder: Path, damage: str) -> None:
    cfg_file = folder / "config.json"
    if damage == "config list":
        cfg_file.write_text("[1, 2]")
    elif damage == "config string":
        cfg_file.write_text('"llada"')
    elif damage == "config deep":
        cfg_file.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "config shape":
        cfg = json.loads(cfg_file.read_text())
        cfg["d_model"] *= 2
        cfg_file.write_text(json.dumps(cfg))
    elif damage == "config binary":
        cfg_file.write_bytes(b"\xff\xfe\x00junk")
    elif damage == "tokenizer truncated":
        data = (folder / "tokenizer.json").read_bytes()
        (folder / "tokenizer.json").write_bytes(data[: len(data) // 2])
    elif damage == "tokenizer binary":
        (folder / "tokenizer.json").write_bytes(os.urandom(300))
    elif damage == "no chat template":
        tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
        tok_cfg.pop("chat_template", None)
        (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
        (folder / "chat_template.jinja").unlink(missing_ok=True)
    elif damage == "adapter folder":
        cfg_file.unlink()
        (folder / "adapter_config.json").write_text("{}")


MODEL_DAMAGE = [
    ("config list", "config.json"),
    ("config string", "config.json"),
    ("config deep", "config.json"),
    ("config shape", "config.json"),
    ("config binary", "config.json"),
    ("tokenizer truncated", "tokenizer.json"),
    ("tokenizer binary", "tokenizer.json"),
    ("no chat template", "chat template"),
]


@pytest.mark.parametrize("damage, needle", MODEL_DAMAGE, ids=[c[0] for c in MODEL_DAMAGE])
def test_damaged_model_folder(tmp_path, damage, needle):
    from conftest import save_tiny_checkpoint

    model = save_tiny_checkpoint(tmp_path / "m")
    _damage_model(model, damage)
    out = tmp_path / "out"
    result = igpo("eval", "--model", model, "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard")
    assert_one_error(result, needle, out)
    assert str(model) in result.output


@pytest.mark.parametrize("damage", ["config list", "config shape", "adapter folder"])
def test_damaged_model_folder_in_training(tmp_path, damage):
    from conftest import save_tiny_checkpoint

    model = save_tiny_checkpoint(tmp_path / "m")
    _damage_model(model, damage)
    out = tmp_path / "run"
    needle = "adapter folder" if damage == "adapter folder" else "config.json"
    assert_one_error(igpo("train", "--recipe", "grpo_tiny", "--out", out, f"model.path={model}"), needle, out)


@pytest.fixture(scope="module")
def lora_pair(tmp_path_factory):
    """(base model folder, a LoRA adapter folder of rank 4 on it that names it as its base)."""
    from conftest import save_tiny_checkpoint
    from peft import LoraConfig, get_peft_model

    from igpo.models import load_model

    root = tmp_path_factory.mktemp("adapter")
    base = save_tiny_checkpoint(root / "base")
    peft_model = get_peft_model(load_model(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(str(root / "adapter"), save_embedding_layers=False)
    cfg = json.loads((root / "adapter" / "adapter_config.json").read_text())
    (root / "adapter" / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(base)}))
    return base, root / "adapter"


ADAPTER_DAMAGE = [
    ("[1, 2]", None, "expected a JSON object"),
    ("{truncated", None, "invalid JSON"),
    (b"\xff\xfe junk", None, "not UTF-8"),
    ({"r": 0}, None, "r (the adapter rank)"),
    ({"r": -4}, None, "r (the adapter rank)"),
    ({"r": "four"}, None, "r (the adapter rank)"),
    ({"r": 2.5}, None, "r (the adapter rank)"),
    ({"r": True}, None, "r (the adapter rank)"),
    ({"r": 8}, None, "size mismatch"),
    ({"lora_alpha": "x"}, None, "lora_alpha"),
    ({"lora_alpha": -1}, None, "lora_alpha"),
    ({"lora_dropout": 2}, None, "lora_dropout"),
    ({"target_modules": 5}, None, "target_modules"),
    ({"target_modules": ["nope_proj"]}, None, "does not fit"),
    ({"peft_type": 7}, None, "peft_type"),
    ({"base_model_name_or_path": 7}, None, "base_model_name_or_path"),
    (None, "missing", "no adapter weights"),
    (None, "truncated", "adapter_model.safetensors"),
    (None, "empty", "adapter_model.safetensors"),
    (None, "random", "adapter_model.safetensors"),
]


def _damaged_adapter(tmp_path: Path, adapter: Path, config, weights) -> Path:
    folder = tmp_path / "adapter"
    shutil.copytree(adapter, folder)
    cfg_file, weights_file = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if isinstance(config, dict):
        cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), **config}))
    elif config is not None:
        cfg_file.write_bytes(config if isinstance(config, bytes) else config.encode())
    data = weights_file.read_bytes()
    if weights == "missing":
        weights_file.unlink()
    elif weights is not None:
        junk = {"truncated": data[: len(data) // 2], "empty": b"", "random": os.urandom(len(data))}
        weights_file.write_bytes(junk[weights])
    return folder


@pytest.mark.parametrize("as_model", [False, True], ids=["--adapter", "adapter as --model"])
@pytest.mark.parametrize(
    "config, weights, needle", ADAPTER_DAMAGE, ids=[c[2] + f"-{i}" for i, c in enumerate(ADAPTER_DAMAGE)]
)
def test_damaged_adapter_folder(tmp_path, lora_pair, as_model, config, weights, needle):
    """A damaged, foreign or incomplete adapter folder: one line naming it (never a Hub lookup of
    its path, never peft's or torch's traceback), before any decoding."""
    base, adapter = lora_pair
    folder = _damaged_adapter(tmp_path, adapter, config, weights)
    if as_model and config == {"base_model_name_or_path": 7}:
        pytest.skip("as --model the base is what is read first: covered by the other id")
    model = ["--model", folder] if as_model else ["--model", base, "--adapter", folder]
    out = tmp_path / "out"
    result = igpo("eval", *model, "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard")
    assert_one_error(result, needle, out)
    assert str(folder) in result.output


def test_non_finite_adapter_weights_refused(tmp_path, lora_pair):
    from safetensors.torch import load_file, save_file

    base, adapter = lora_pair
    folder = _damaged_adapter(tmp_path, adapter, None, None)
    weights = folder / "adapter_model.safetensors"
    state = {k: v.clone().fill_(float("nan")) for k, v in load_file(weights).items()}
    save_file(state, weights, metadata={"format": "pt"})
    out = tmp_path / "out"
    model = ["--model", base, "--adapter", folder]
    result = igpo("eval", *model, "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard")
    assert_one_error(result, f"weights file {weights} holds non-finite values", out)


def test_damaged_adapter_in_training(tmp_path, lora_pair):
    base, adapter = lora_pair
    folder = _damaged_adapter(tmp_path, adapter, None, "missing")
    out = tmp_path / "run"
    result = igpo("train", "--recipe", "grpo_tiny", "--out", out, f"model.path={base}", f"model.adapter={folder}")
    assert_one_error(result, "no adapter weights", out)


LORA_CASES = [
    ("model.lora.r=0", "lora.r"),
    ("model.lora.r=-8", "lora.r"),
    ("model.lora.alpha=0", "lora.alpha"),
    ("model.lora.dropout=1", "lora.dropout"),
    ("model.lora.dropout=-0.1", "lora.dropout"),
    ("model.lora.target_modules=[]", "lora.target_modules"),
]


@pytest.mark.parametrize("override, needle", LORA_CASES, ids=[c[0] for c in LORA_CASES])
def test_lora_settings(tmp_path, override, needle):
    out = tmp_path / "run"
    assert_one_error(igpo("train", "--recipe", "grpo_tiny", "--out", out, override), needle, out)
    assert_one_error(igpo("sft", "--recipe", "sft_tiny", "--out", out, override), needle, out)


# --------------------------------------------------------------------------- igpo lm-eval, early


LM_EVAL_EARLY = [
    (["--model_args", "pretrained=testbed,gen_length=abc"], "gen_length"),
    (["--model_args", "pretrained=testbed,no_such_arg=1"], "no_such_arg"),
    (["--model_args", "gen_length=16"], "pretrained"),
    (["--model_args", "pretrained=testbed,steps"], "key=value"),
    (["--model_args", "pretrained=testbed,batch_size=0"], "batch_size"),
    (["--model_args", "pretrained=testbed,batch_size=4", "--batch_size", "8"], "batch_size"),
    (["--model_args", "pretrained=testbed", "mc_num=-1"], "mc_num"),
    (["--model_args=pretrained=testbed,is_check_greedy=maybe"], "is_check_greedy"),
    (["--model_args", "pretrained=testbed", "--limit", "1e23"], "--limit"),
    (["--model_args", "pretrained=testbed", "--limit", "nan"], "--limit"),
    (["--model_args", "pretrained=testbed", "--limit", "-3"], "--limit"),
    (["--model_args", "pretrained=testbed", "--limit", "2.5"], "--limit"),
]


@pytest.mark.parametrize("extra, needle", LM_EVAL_EARLY, ids=[" ".join(c[0]) for c in LM_EVAL_EARLY])
def test_lm_eval_refuses_before_loading_lm_eval(extra, needle):
    """Bad model_args / --limit: one line, and lm-eval's evaluator was never imported."""
    code = (
        "import sys\nfrom harness.lmeval.cli import main\ntry:\n    main(sys.argv[1:])\nfinally:\n"
        "    print('evaluator imported' if 'lm_eval.evaluator' in sys.modules else 'not imported', file=sys.stderr)"
    )
    cmd = [sys.executable, "-c", code, "--model", "dllm", "--tasks", "igpo_arith", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **OFFLINE_ENV}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1] == "not imported" and len(lines) == 2 and lines[0].startswith("error:"), proc.stderr
    assert needle in lines[0], lines[0]


def test_lm_eval_batch_size_in_model_args_is_the_batch_size():
    from harness.lmeval.cli import _dllm_model_args

    args = ["--model", "dllm", "--model_args", "model_path=testbed,batch_size=32,gen_length=256"]
    assert _dllm_model_args(args) == [
        "--model",
        "dllm",
        "--batch_size",
        "32",
        "--model_args",
        "model_path=testbed,gen_length=256",
    ]
    same = _dllm_model_args([*args, "--batch_size", "32"])
    assert same.count("--batch_size") == 1 and "batch_size=32" not in " ".join(same)


def test_lm_eval_git_call_is_quiet_outside_a_checkout(tmp_path, capfd):
    import lm_eval.evaluator

    import harness.lmeval.model  # noqa: F401  (replaces lm-eval's git call)

    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert lm_eval.evaluator.get_git_commit_hash() is None
    finally:
        os.chdir(old)
    assert "fatal" not in capfd.readouterr().err


# --------------------------------------------------------------------------- bytes in logs and records


def test_response_cache_torn_inside_a_multibyte_character(tmp_path, capsys):
    """A kill inside a UTF-8 character (responses.jsonl is written as raw UTF-8) is a torn line:
    that response is decoded again, the rest are reused, nothing blocks the rerun."""
    from harness.lmeval.cache import ResponseCache

    path = tmp_path / "responses.jsonl"
    ResponseCache(path).put("a", "first é")
    with open(path, "ab") as f:
        f.write('{"key": "b", "response": "café'.encode()[:-1] + b"\n\xff\xfe binary junk\n")
    again = ResponseCache(path)
    assert again.get("a")["response"] == "first é" and again.get("b") is None
    assert "skipped 2 damaged" in capsys.readouterr().err
    again.put("c", "third")
    assert ResponseCache(path).get("c")["response"] == "third"


def test_metrics_log_with_junk_lines_and_string_metrics(tmp_path, capsys):
    from harness.eval.curves import metrics_rows

    train = tmp_path / "train"
    train.mkdir()
    (train / "metrics.jsonl").write_bytes(
        b'{"step": 1, "loss": 0.5}\n[1, 2]\n{"step": 2, "loss": "high"}\n\xff\xfe junk\n"text"\n'
        b'{"loss": 0.1}\n{"step": 3, "loss": 0.4}\n{"step": 4, "lo'
    )
    rows = metrics_rows(train)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss"] == 0.5 and rows[1]["loss"] != rows[1]["loss"]  # a string metric reads as NaN
    assert "metrics.jsonl" in capsys.readouterr().err
    result = igpo("report", train, "--out", tmp_path / "r.html")
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "runs"
    fast = ["--gen-length", "16", "--block-length", "16", "--steps", "4", "--seeds", "0"]
    result = igpo("eval", "--tasks", "arith", "--limit", "2", "--out", out, "--name", "a", "--no-leaderboard", *fast)
    assert result.exit_code == 0, result.output
    return out / "a"


RECORD_DAMAGE = [
    ("samples.jsonl", lambda b: b + b"\xff\xfe\x00junk\n", "not UTF-8"),
    ("samples.jsonl", lambda b: b + b"{not json\n", "not valid JSON"),
    ("samples.jsonl", lambda b: b + b"[" * 100_000 + b"\n", "not valid JSON"),
    ("results.json", lambda b: b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("results.json", lambda b: b[: len(b) // 2], "not valid JSON"),
    ("results.json", lambda b: b"\xff\xfe" + b, "not valid JSON"),
]


@pytest.mark.parametrize("command", ["check", "report", "leaderboard"])
@pytest.mark.parametrize(
    "name, damage, needle", RECORD_DAMAGE, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(RECORD_DAMAGE)]
)
def test_damaged_run_records(tmp_path, small_run, command, name, damage, needle):
    if command == "leaderboard" and name == "samples.jsonl":
        pytest.skip("the leaderboard reads results.json only")
    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / name).write_bytes(damage((run / name).read_bytes()))
    args = {
        "check": ["check", run, "--baseline", small_run],
        "report": ["report", run, "--out", tmp_path / "out" / "r.html"],
        "leaderboard": ["leaderboard", run / "results.json", "--out", tmp_path / "out" / "lb.md"],
    }[command]
    result = igpo(*args)
    assert_one_error(result, needle, tmp_path / "out")
    assert name in result.output


REWRITE_CASES = [
    (["--price-in", "nan"], "--price-in"),
    (["--price-out", "-1"], "--price-out"),
    (["--price-in", "inf"], "--price-in"),
    (["--temperature", "inf"], "--temperature"),
    (["--temperature", "nan"], "--temperature"),
    (["--temperature", "-0.5"], "--temperature"),
]


@pytest.mark.parametrize("extra, needle", REWRITE_CASES, ids=[" ".join(c[0]) for c in REWRITE_CASES])
def test_rewrite_traces_prices_and_temperature(tmp_path, extra, needle):
    data = tmp_path / "in" / "rows.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps({"question": "1+1?", "answer": "2", "solution": "1+1=2"}) + "\n")
    out = tmp_path / "out"
    args = ["rewrite-traces", data, "--out", out / "kept.jsonl", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]
    assert_one_error(igpo(*args, "--preset", "gsm8k", *extra), needle, out)


def test_rewrite_traces_exits_1_when_every_request_failed(tmp_path):
    from harness.rewrite.fake_server import FakeRewriter, cli_args, write_rows

    data = write_rows(tmp_path / "rows.jsonl", 3, ["#always500"])
    out = tmp_path / "o" / "kept.jsonl"
    with FakeRewriter() as server:
        result = igpo(*cli_args(data, out, server.base_url, timeout_s=1, max_attempts=1))
    assert result.exit_code == 1, result.output
    assert "error: every request failed" in result.output and "kept.failures.jsonl" in result.output
    assert len((tmp_path / "o" / "kept.failures.jsonl").read_text().splitlines()) == 3


# --------------------------------------------------------------------------- sizes and bombs (issue 34)
# (eval's size flags: SIZE_CASES, with the other eval flags above)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("decode.steps=99999999999999999999", "steps=99999999999999999999 is more than gen_length"),
        ("decode.gen_length=1099511627776", "over the maximum of 16384"),
    ],
)
def test_train_decoding_sizes_out_of_bounds(tmp_path, override, needle):
    out = tmp_path / "run"
    assert_one_error(igpo("train", "--recipe", "grpo_tiny", "--out", out, override), needle, out)


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The billion laughs: each level lists the one before `width` times (width**levels leaves)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * width)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


YAML_BOMBS = {  # (text, what the error says)
    "alias bomb": (_alias_bomb(), "expands to more than"),
    "nested lists": ("deep: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 100 levels"),
    "nested mappings": ("".join(" " * n + f"k{n}:\n" for n in range(300)), "nested deeper than 100 levels"),
    "aliases nesting deeper": (
        "a: &a " + "[" * 90 + "1" + "]" * 90 + "\nb: " + "[" * 20 + "*a" + "]" * 20 + "\n",
        "once its aliases are expanded",
    ),
    "alias inside itself": ("a: &a [1, *a]\n", "an alias refers to the node that holds it"),
    "two megabytes": ("# padding\n" * 200_000 + "name: x\n", "over the 1048576 a YAML input may hold"),
}


@pytest.mark.parametrize("where", ["recipe", "protocol", "override"])
@pytest.mark.parametrize("kind", list(YAML_BOMBS))
def test_yaml_bombs_and_deep_nesting_are_refused_fast(tmp_path, where, kind):
    """A recipe, protocol or override value that would take minutes and all memory to expand, or
    recurse past Python's stack: one error naming the file and line, in well under a second of work."""
    import time

    text, needle = YAML_BOMBS[kind]
    if where == "override" and kind in ("nested mappings", "two megabytes"):
        pytest.skip("a command-line value is one line")
    path = tmp_path / "in" / "bad.yaml"
    path.parent.mkdir()
    path.write_text(text)
    out = tmp_path / "out"
    args = {
        "recipe": ["train", "--recipe", path, "--out", out],
        "protocol": ["eval", "--tasks", "arith", "--protocol", path, "--out", out, "--no-leaderboard"],
        "override": ["train", "--recipe", "grpo_tiny", "--out", out, f"data.extra={{{', '.join(text.splitlines())}}}"],
    }[where]
    started = time.perf_counter()
    result = igpo(*args)
    assert time.perf_counter() - started < 20, "the bound was not enforced while reading"
    assert_one_error(result, needle, out)
    if where != "override":
        assert str(path) in result.output


@pytest.mark.parametrize(
    "repeats, needle",
    [(0, "repeats must be from 1 to 1024, got 0"), (-2, "got -2"), ("many", "repeats: expected an integer")],
)
def test_protocol_task_repeats_below_one(tmp_path, repeats, needle):
    """`repeats: 0` would decode everything and then fail averaging nothing: refused at load."""
    base = (REPO / "harness" / "eval" / "protocols" / "igpo.yaml").read_text()
    path = tmp_path / "p.yaml"
    path.write_text(base.replace("igpo_arith: {", f"igpo_arith: {{repeats: {repeats}, ", 1))
    out = tmp_path / "out"
    result = igpo("eval", "--tasks", "arith", "--limit", "1", "--protocol", path, "--out", out, "--no-leaderboard")
    assert_one_error(result, needle, out)
    assert str(path) in result.output


EVAL_ROW_CASES = [  # (task, the bad row, what the error names)
    ("gsm8k", {"question": "1+2?"}, "missing field 'answer' (the row has: 'question')"),
    ("gsm8k", {"answer": "1+2=3\n#### 3"}, "missing field 'question' (the row has: 'answer')"),
    ("gsm8k", {"question": "", "answer": "#### 3"}, "field 'question' is empty"),
    ("gsm8k", {"question": "1+2?", "answer": "three"}, "field 'answer' has no '####'"),
    ("gsm8k", {"question": "1+2?", "answer": None}, "field 'answer' is null, not text"),
    ("amc", {"answer": 3.0}, "missing field 'problem' (the row has: 'answer')"),
    ("math500", {"problem": ["1+2?"], "answer": "3"}, "field 'problem' is a list, not text"),
]


@pytest.mark.parametrize("task, row, needle", EVAL_ROW_CASES, ids=[f"{c[0]} {c[2][:30]}" for c in EVAL_ROW_CASES])
def test_eval_data_rows_without_their_fields(tmp_path, task, row, needle):
    """A benchmark data file whose row lacks its question or answer: one error naming the file,
    the line and the field before any model loads (not a KeyError after decoding)."""
    from tasks.registry import SPECS, TASKS

    good = {"question": "1+1?", "problem": "1+1?", "answer": "1+1=2\n#### 2" if task == "gsm8k" else "2"}
    if task == "gsm8k":
        good.pop("problem")
    data = tmp_path / "data"
    file = data / SPECS[TASKS[task]].local_file
    file.parent.mkdir(parents=True)
    file.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    out = tmp_path / "out"
    result = igpo("eval", "--tasks", task, "--data-dir", data, "--limit", "1", "--out", out, "--no-leaderboard")
    assert_one_error(result, needle, out)
    assert f"{file.resolve()}:2:" in result.output


# --------------------------------------------------------------------------- secrets and injection (issue 34)


def test_redact_url_hides_credentials_only():
    from harness.rewrite.client import redact_url

    assert redact_url("http://user:KEY@host:8000/v1") == "http://***@host:8000/v1"
    assert redact_url("https://KEY@api.example.com/v1") == "https://***@api.example.com/v1"
    assert redact_url("http://u:p@ss@host/v1") == "http://***@host/v1"  # an unencoded @ in the password
    assert (
        redact_url("cannot reach http://a:b@h/x or https://c@d/y") == "cannot reach http://***@h/x or https://***@d/y"
    )
    for plain in ("http://127.0.0.1:8000/v1", "http://host/v1/path@x", "no url here", "mailto@example"):
        assert redact_url(plain) == plain


def test_rewrite_traces_never_writes_or_prints_base_url_credentials(tmp_path):
    from harness.rewrite.fake_server import FakeRewriter, cli_args, write_rows

    data = write_rows(tmp_path / "rows.jsonl", 2, [""])
    out = tmp_path / "o" / "kept.jsonl"
    with FakeRewriter() as server:
        url = server.base_url.replace("http://", "http://user:SECRET-KEY@")
        result = igpo(*cli_args(data, out, url, timeout_s=5))
    assert result.exit_code == 0, result.output
    assert "SECRET-KEY" not in result.output
    for file in (tmp_path / "o").iterdir():
        assert "SECRET-KEY" not in file.read_text(), file
    summary = json.loads((tmp_path / "o" / "kept.summary.json").read_text())
    assert summary["base_url"] == server.base_url.replace("http://", "http://***@")


def test_rewrite_traces_unreachable_url_error_hides_credentials(tmp_path):
    data = tmp_path / "in" / "rows.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps({"question": "1+1?", "answer": "1+1=2\n#### 2"}) + "\n")
    out = tmp_path / "out"
    url = "http://user:SECRET-KEY@127.0.0.1:9/v1"
    args = ["rewrite-traces", data, "--out", out / "kept.jsonl", "--base-url", url, "--model", "m", "--preset", "gsm8k"]
    result = igpo(*args, "--timeout", "2")
    assert_one_error(result, "cannot reach http://***@127.0.0.1:9/v1", out)
    assert "SECRET-KEY" not in result.output


HOSTILE_LABEL = '=HYPERLINK("http://evil.example","<!--<script>alert(1)</script>")'


@pytest.fixture
def hostile_run(tmp_path, small_run):
    """small_run copied with a label that is a spreadsheet formula holding an HTML comment opener."""
    run = tmp_path / "runs" / "hostile"
    shutil.copytree(small_run, run)
    record = json.loads((run / "results.json").read_text())
    record.update(label=HOSTILE_LABEL, label_given=True)
    (run / "results.json").write_text(json.dumps(record))
    return run


def test_report_data_block_escapes_every_angle_bracket(tmp_path, hostile_run):
    """`<!--` then `<script` in a label would keep the page's JSON block open and blank the page:
    the block holds no `<` at all, and still decodes to the original label."""
    page = tmp_path / "r.html"
    assert igpo("report", hostile_run, "--out", page).exit_code == 0
    html = page.read_text()
    opener = '<script type="application/json" id="payload">'
    block = html[html.index(opener) + len(opener) :]
    block = block[: block.index("</script>")]
    assert "<" not in block
    assert HOSTILE_LABEL in set(_strings(json.loads(block)))


def _strings(value):
    """Every string inside a decoded JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


def test_leaderboard_csv_neutralises_formulas(tmp_path, hostile_run):
    import csv
    import io

    result = igpo("leaderboard", hostile_run / "results.json", "--format", "csv", "--no-reference")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows[0]["model"] == "'" + HOSTILE_LABEL
    assert not [cell for row in rows for cell in row.values() if cell and cell[0] in "=+@"]


def test_csv_cell_keeps_numbers_and_quotes_formulas():
    from harness.eval.leaderboard import csv_cell

    for number in ("-1.5", "+2", "-0.125", "1e-3", "-2E+4", "-.5", "42", ""):
        assert csv_cell(number) == number
    for formula in ("=1+1", "+1+cmd", "-1+1", "@SUM(A1)", "-cmd|' /C calc'!A0", "\t=1", "-", "-1.5x"):
        assert csv_cell(formula) == "'" + formula


def _not_a_file(path: Path, kind: str) -> Path:
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    return path


NOT_A_FILE_CASES = [  # (what the error calls it, the command; @P is the path, @OUT the output)
    (
        "protocol file",
        ["eval", "--tasks", "arith", "--limit", "1", "--no-leaderboard", "--protocol", "@P", "--out", "@OUT"],
    ),
    ("recipe", ["train", "--recipe", "@P", "--out", "@OUT"]),
    ("results file", ["leaderboard", "--no-reference", "@P"]),  # a folder there is a folder of runs
    (
        "input file",
        [
            "rewrite-traces",
            "@P",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "m",
            "--preset",
            "gsm8k",
            "--out",
            "@OUT/o.jsonl",
        ],
    ),
    ("data file", ["sft", "--recipe", "sft_tiny", "data.source=jsonl", "data.path=@P", "max_steps=1", "--out", "@OUT"]),
]


@pytest.mark.parametrize("kind", ["folder", "fifo"])
@pytest.mark.parametrize("what, command", NOT_A_FILE_CASES, ids=[c[0] for c in NOT_A_FILE_CASES])
def test_a_folder_or_fifo_given_as_a_file_is_called_so(tmp_path, kind, what, command):
    """A folder or FIFO where a file is expected is not "not found": one line saying what it is
    (and a FIFO is never opened, which would wait forever)."""
    if what == "results file" and kind == "folder":
        pytest.skip("igpo leaderboard reads a folder as a folder of runs")
    path, out = _not_a_file(tmp_path / "given.yaml", kind), tmp_path / "out"
    args = [a.replace("@P", str(path)).replace("@OUT", str(out)) for a in command]
    said = "is a folder, not a file" if kind == "folder" else "is not a regular file"
    assert_one_error(igpo(*args), f"{what} {path} {said}", out)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_helpers_say_what_is_there_instead_of_a_file(tmp_path, kind):
    from harness.eval.results import ResultsError, load_samples
    from harness.rewrite.rows import load_prompt
    from igpo.config import ConfigError, read_yaml_mapping
    from igpo.data import jsonl_rows
    from igpo.errors import BadFile, MissingInput
    from igpo.jsonfile import read_json_object

    path = _not_a_file(tmp_path / "x", kind)
    said = "is a folder, not a file" if kind == "folder" else "is not a regular file"
    for call, error, what in (
        (lambda: read_json_object(path), BadFile, "JSON file"),
        (lambda: read_yaml_mapping(path, "grid"), ConfigError, "grid"),
        (lambda: list(jsonl_rows(path)), BadFile, "data file"),
        (lambda: load_prompt(path), BadFile, "prompt file"),
    ):
        with pytest.raises(error, match=f"^{what} {path} {said}"):
            call()
    run = tmp_path / "run"
    run.mkdir()
    _not_a_file(run / "samples.jsonl", kind)
    with pytest.raises(ResultsError, match=f"samples file {run / 'samples.jsonl'} {said}"):
        load_samples(run)
    with pytest.raises(MissingInput, match="no such data file"):  # what is not there is still not found
        list(jsonl_rows(tmp_path / "absent.jsonl"))


def _help_texts(name: str) -> dict[str, str]:
    """A command's help, by parameter name (the command's own under "")."""
    import typer.main

    from harness.cli import app

    command = typer.main.get_command(app).commands[name]
    return {"": command.help or "", **{p.name: getattr(p, "help", None) or "" for p in command.params}}


@pytest.mark.parametrize("name", ["sft", "train"])
def test_every_help_example_of_training_runs(name):
    """Each recipe `igpo sft/train --help` names loads, and each override it shows (`key=value`)
    parses into each of them through load_config: no example the command refuses."""
    import re

    from igpo.config import load_config, resolve_recipe
    from igpo.training.rl_config import RLConfig
    from igpo.training.sft import SFTConfig

    texts = _help_texts(name)
    recipes = re.search(r"shipped one \(([^)]*)\)", texts["recipe"])[1].replace("...", "").replace(",", " ").split()
    overrides = re.findall(r"\b[a-z_][a-z_.]*=[^\s,]+?(?=[\s,]|\.?$)", texts["overrides"])
    assert recipes and overrides, texts
    cls = SFTConfig if name == "sft" else RLConfig
    for recipe in recipes:
        for override in overrides:
            load_config(cls, resolve_recipe(recipe), [override])
        load_config(cls, resolve_recipe(recipe), overrides)
    for choice in re.findall(r"igpo\.resample: ([\w|]+)", texts[""]):  # train's own line
        for value in choice.split("|"):
            load_config(RLConfig, resolve_recipe(recipes[0]), [f"igpo.resample={value}"])


def test_every_help_example_of_eval_runs():
    """The names and values `igpo eval --help` shows are ones eval takes."""
    from harness.eval.protocols import load_protocol
    from igpo.decoding import DecodeConfig
    from igpo.models.loading import parse_dtype
    from tasks.registry import resolve_tasks

    texts = _help_texts("eval")
    tasks = texts["tasks"].split(":", 1)[1].replace("(group)", "").rstrip(".").split(",")
    assert len(resolve_tasks([t.strip() for t in tasks])) == 6
    for protocol in ("igpo", "igpo_fast", "d1", "llada", "llada15"):
        assert f"{protocol}:" in texts["protocol"]
        load_protocol(protocol)
    for value in ("float32", "bfloat16", "float16"):
        assert value in texts["dtype"] and parse_dtype(value) is not None
    for field, values in (
        ("remasking", ("low_confidence", "random")),
        ("cache", ("prefix", "dual", "none")),
        ("compile", ("none", "graphs", "inductor")),
    ):
        for value in values:
            assert value in texts[field]
            DecodeConfig(**{field: value})
