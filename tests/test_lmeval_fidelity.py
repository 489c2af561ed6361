"""Every setting given to `dllm` through lm-eval reaches the decoder or fails loudly.

The rule of harness/lmeval/settings.py per request, then the same through lm-eval's real
`simple_evaluate` and CLI on the embedded testbed model: max_gen_toks, --seed, do_sample,
classifier-free guidance for log-likelihoods, LLaDA's argument names, the keyed --use_cache,
warnings for raw-text igpo tasks and truncated prompts, data-parallel padding copies.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.lmeval.settings import resolve
from igpo.decoding import DecodeConfig

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
MODEL = DecodeConfig()  # model_args gave nothing: 256 tokens, 128 steps (2 tokens per step)


def _testbed() -> str:
    from igpo.testbed import TESTBED_DIR

    return str(TESTBED_DIR)


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


# --------------------------------------------------------------------------- the rule, per request


def test_max_gen_toks_sets_the_length_and_keeps_tokens_per_step():
    s = resolve({"max_gen_toks": 64, "until": ["Q:"]}, MODEL, frozenset())
    assert (s.decode.gen_length, s.decode.block_length, s.decode.steps) == (64, 32, 32)
    assert s.max_tokens is None and s.until == ["Q:"]
    assert s.sources["gen_length"] == "lm-eval" and s.sources["steps"] == "lm-eval"
    assert s.sources["block_length"] == "default" and "2 tokens per step" in s.notes[0]
    # rounded up to whole blocks, responses cut back to max_gen_toks
    s = resolve({"max_gen_toks": 40}, MODEL, frozenset())
    assert (s.decode.gen_length, s.decode.steps, s.max_tokens) == (64, 32, 40)
    # shorter than a block: one block of exactly max_gen_toks
    s = resolve({"max_gen_toks": 8}, MODEL, frozenset())
    assert (s.decode.gen_length, s.decode.block_length, s.decode.steps, s.max_tokens) == (8, 8, 4, None)
    # model_args' own tokens per step are kept (4 here)
    s = resolve({"max_gen_toks": 64}, DecodeConfig(gen_length=128, steps=32), frozenset({"gen_length", "steps"}))
    assert s.decode.steps == 16


def test_diffusion_keys_beat_max_gen_toks_and_model_args():
    model = DecodeConfig(gen_length=128, block_length=32, steps=64, temperature=0.5)
    given = frozenset({"gen_length", "steps", "temperature"})
    s = resolve({"gen_length": 48, "block_length": 16, "steps": 24, "max_gen_toks": 64}, model, given)
    assert (s.decode.gen_length, s.decode.block_length, s.decode.steps) == (48, 16, 24)
    assert s.sources["gen_length"] == "request" and s.max_tokens is None
    s = resolve({"gen_length": 48, "block_length": 16, "steps": 24, "max_gen_toks": 20}, model, given)
    assert s.max_tokens == 20  # a smaller max_gen_toks still cuts the response
    s = resolve({}, model, given)
    assert (s.decode.gen_length, s.decode.temperature) == (128, 0.5)
    assert s.sources["temperature"] == "model_args" and s.sources["remasking"] == "default"
    s = resolve({"max_gen_toks": 32, "steps": 32}, model, given)  # steps given with it: kept as is
    assert (s.decode.gen_length, s.decode.steps) == (32, 32)


def test_do_sample_has_hugging_face_semantics():
    sampling_model = DecodeConfig(temperature=0.7)
    s = resolve({"do_sample": False, "temperature": 0.9}, MODEL, frozenset())
    assert s.decode.temperature == 0.0 and "greedy" in s.notes[0]
    assert resolve({"do_sample": False}, sampling_model, frozenset({"temperature"})).decode.temperature == 0.0
    assert resolve({"do_sample": True}, MODEL, frozenset()).decode.temperature == 1.0
    assert resolve({"do_sample": True}, sampling_model, frozenset({"temperature"})).decode.temperature == 0.7
    assert resolve({"do_sample": "True", "temperature": "0.3"}, MODEL, frozenset()).decode.temperature == 0.3
    with pytest.raises(ValueError, match="temperature 0"):
        resolve({"do_sample": True, "temperature": 0.0}, MODEL, frozenset())


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"top_p": 0.9}, "top_p"),
        ({"max_gen_toks": 0}, "max_gen_toks"),
        ({"max_gen_toks": "many"}, "max_gen_toks"),
        ({"do_sample": "maybe"}, "do_sample"),
        ({"steps": "x"}, "steps"),
    ],
)
def test_unusable_generation_settings_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        resolve(kwargs, MODEL, frozenset())


# --------------------------------------------------------------------------- model_args


LLADA_MODEL_ARGS = [
    # The model_args strings of LLaDA's eval_llada_lm_eval.sh (model path replaced by {path}).
    "model_path='{path}',cfg=0.5,is_check_greedy=False,mc_num=128",
    "model_path='{path}',cfg=2.0,is_check_greedy=False,mc_num=128",
    "model_path='{path}',cfg=0.0,is_check_greedy=False,mc_num=128",
    "model_path='{path}',cfg=0.0,is_check_greedy=False,mc_num=1",
    "model_path='{path}',gen_length=1024,steps=1024,block_length=1024",
]


@pytest.mark.parametrize("template", LLADA_MODEL_ARGS)
def test_llada_argument_names_parse(template):
    from lm_eval.utils import simple_parse_args_string

    from harness.lmeval.args import parse_args

    text = shlex.split(template.format(path="/m/LLaDA"))[0]  # the shell removes the quotes
    args = parse_args({**simple_parse_args_string(text), "batch_size": 8})
    assert args.pretrained == "/m/LLaDA" and args.batch_size == 8
    if "cfg=" in text:
        assert args.decode.cfg_scale == float(text.split("cfg=")[1].split(",")[0])
        assert args.is_check_greedy is False and "cfg_scale" in args.decode_given
    else:
        assert (args.decode.gen_length, args.decode.steps, args.decode.block_length) == (1024, 1024, 1024)


def test_model_args_mistakes_are_named():
    from harness.lmeval.args import parse_args

    with pytest.raises(ValueError, match="given twice"):
        parse_args({"pretrained": "a", "model_path": "b"})
    with pytest.raises(ValueError, match="unknown dllm model_arg 'gen_len'"):
        parse_args({"pretrained": "a", "gen_len": 3})
    with pytest.raises(ValueError, match="mc_num must be a positive"):
        parse_args({"pretrained": "a", "mc_num": 0})
    auto = parse_args({"pretrained": "a", "batch_size": "auto"})
    assert auto.batch_size_requested == "auto" and auto.batch_size == 8


def test_llada_eos_options_reach_the_decoder(tiny_checkpoint):
    from harness.lmeval import DiffusionLM

    lm = DiffusionLM(
        pretrained=str(tiny_checkpoint),
        device="cpu",
        logits_eos_inf=True,
        confidence_eos_eot_inf=True,
        batch_size="auto",
    )
    assert lm.decode.suppress_eos and lm.decode.eos_last
    assert any("batch_size=auto" in w for w in lm.warnings)
    # the switches reach the decoder as the spec's ids: the same tokens as naming the ids
    from igpo.decoding import generate

    prompt = torch.tensor([[5, 6, 7, 8]])
    cfg = lm.decode.replace(gen_length=16, block_length=8, steps=8, temperature=0.0)
    by_ids = cfg.replace(
        suppress_eos=False,
        eos_last=False,
        suppress_tokens=(lm.spec.eos_id,),
        last_tokens=(lm.spec.eos_id, lm.spec.eot_id),
    )
    switched = generate(lm.model, prompt, cfg, tokens=lm.spec).sequences
    assert torch.equal(switched, generate(lm.model, prompt, by_ids, tokens=lm.spec).sequences)


def test_last_tokens_are_committed_after_every_other_candidate():
    """With EOS made the most confident candidate, LLaDA's confidence_eos_eot_inf still commits
    every non-EOS candidate of a block first."""
    from conftest import EOS_ID, decode, tiny_model

    class EosHeavy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config, self.token_spec = inner, inner.config, inner.token_spec

        def forward(self, input_ids, attention_mask=None):
            out = self.inner(input_ids, attention_mask=attention_mask)
            out.logits[..., EOS_ID] += 5.0
            return out

    model = EosHeavy(tiny_model())
    prompt = torch.tensor([[5, 6, 7, 8]])
    kwargs = dict(gen_length=8, block_length=8, steps=8, mask_id=model.token_spec.mask_id, record_steps=True)
    plain = decode(model, prompt, **kwargs)
    late = decode(model, prompt, last_tokens=(EOS_ID,), **kwargs)
    plain_eos = plain.commit_step[0][plain.completions[0] == EOS_ID]
    assert plain_eos.numel() >= 2 and int(plain_eos.min()) == 0  # the bias makes EOS go first
    steps, tokens = late.commit_step[0], late.completions[0]
    eos, other = steps[tokens == EOS_ID], steps[tokens != EOS_ID]
    assert other.numel() > 0 and eos.numel() > 0
    assert int(eos.min()) > int(other.max())
    assert not torch.equal(plain.commit_step, late.commit_step)


# --------------------------------------------------------------------------- through simple_evaluate


def _evaluate(model_args: str, limit: int, **kwargs):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import harness.lmeval  # noqa: F401
    from harness.lmeval import DiffusionLM
    from tasks.registry import TASK_DIR

    out = simple_evaluate(
        model="dllm",
        model_args=model_args,
        tasks=["igpo_arith"],
        limit=limit,
        task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        **kwargs,
    )
    responses = [s["filtered_resps"][0] for s in out["samples"]["igpo_arith"]]
    return out, responses, DiffusionLM.latest


def test_max_gen_toks_reaches_the_decoder_through_lm_eval():
    _, responses, lm = _evaluate(f"pretrained={_testbed()}", 4, gen_kwargs="max_gen_toks=16", apply_chat_template=True)
    log = lm.request_log
    assert len(log) == 4 and all(r["tokens"] <= 16 for r in log)
    assert all(r["decode"]["gen_length"] == 16 and r["decode"]["steps"] == 8 for r in log)
    assert any(r["hit_length"] for r in log)  # 16 tokens cannot hold a 4-operation answer
    for text in (t if isinstance(t, str) else t[0] for t in responses):
        assert len(lm.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 16


def test_lm_eval_seed_reaches_sampling():
    sample = "do_sample=true,temperature=1.0"

    def run(seed: int):
        _, responses, lm = _evaluate(
            f"pretrained={_testbed()}",
            12,
            gen_kwargs=sample,
            apply_chat_template=True,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
        )
        assert {r["seed"] for r in lm.request_log} == {seed}
        return responses

    one = run(1)
    assert run(1) == one
    assert run(2) != one


def test_raw_text_igpo_task_and_truncated_prompts_warn():
    _, _, lm = _evaluate(f"pretrained={_testbed()},max_prompt_tokens=6", 2)
    assert any("without the chat template" in w for w in lm.warnings)
    assert any("max_prompt_tokens=6" in w for w in lm.warnings)
    assert all(r["prompt_tokens_cut"] > 0 for r in lm.request_log)
    _, _, lm = _evaluate(f"pretrained={_testbed()}", 2, apply_chat_template=True)
    assert lm.warnings == []


# --------------------------------------------------------------------------- log-likelihood


def _ll_requests(lm, pairs):
    from lm_eval.api.instance import Instance

    return [
        Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i, metadata=("t", i, 1))
        for i, p in enumerate(pairs)
    ]


def test_cfg_scale_and_greedy_check_reach_log_likelihoods(tiny_checkpoint):
    from harness.lmeval import DiffusionLM

    pairs = [("how many is 3 and", " 4 5"), ("what is 7", " 8")]

    def run(**kw):
        lm = DiffusionLM(pretrained=str(tiny_checkpoint), device="cpu", mc_num=16, batch_size=8, seed=0, **kw)
        return lm.loglikelihood(_ll_requests(lm, pairs))

    plain, guided, llada_cfg = run(), run(cfg_scale=1.0), run(cfg=1.0)
    assert all(a[0] != b[0] for a, b in zip(plain, guided, strict=True))
    assert guided == llada_cfg  # LLaDA's name for the same setting
    assert all(flag is False for _, flag in run(is_check_greedy=False))


def test_encode_pair_moves_trailing_whitespace_into_the_continuation(tiny_checkpoint):
    from harness.lmeval import DiffusionLM

    lm = DiffusionLM(pretrained=str(tiny_checkpoint), device="cpu")
    head, tail = lm.encode_pair("how many is 3 and ", "4")
    whole = lm.tokenizer("how many is 3 and 4")["input_ids"]
    assert head == lm.tokenizer("how many is 3 and")["input_ids"]
    assert head + tail == whole and tail == whole[len(head) :]
    assert lm.tokenizer.decode(tail).strip() == "4"


# --------------------------------------------------------------------------- data parallel padding


def test_padding_copies_never_reach_a_requests_responses(tiny_checkpoint):
    """lm-eval pads a rank by re-sending its last request object and appends every response to it."""
    from lm_eval.api.instance import Instance

    from harness.lmeval import DiffusionLM

    lm = DiffusionLM(pretrained=str(tiny_checkpoint), device="cpu", gen_length=8, block_length=8, steps=4)
    reqs = [
        Instance(
            request_type="generate_until",
            doc={},
            arguments=(f"what is {i}", {"until": []}),
            idx=0,
            metadata=("t", i, 1),
        )
        for i in range(2)
    ]
    cloned = [reqs[0], reqs[1], reqs[1], reqs[1]]  # two padding copies of the last request
    responses = lm.generate_until(cloned)
    for text, req in zip(responses, cloned, strict=True):  # lm-eval's own loop
        req.resps.append(text)
    assert [len(r.resps) for r in reqs] == [1, 1]
    assert len(lm.request_log) == 2


# --------------------------------------------------------------------------- the CLI


def test_use_cache_is_keyed_by_dllm_settings():
    from harness.lmeval.cli import keyed_cache_path

    base = ["--model", "dllm", "--use_cache", "/c/run"]
    a = keyed_cache_path([*base, "--model_args", "pretrained=x,gen_length=64,steps=64"])
    b = keyed_cache_path([*base, "--model_args", "pretrained=x,gen_length=128,steps=64"])
    c = keyed_cache_path(
        ["--model_args", "steps=64,gen_length=64,pretrained=x", "--model", "dllm", "--use_cache=/c/run"]
    )
    path = lambda args: args[args.index("--use_cache") + 1]  # noqa: E731
    assert path(a) != path(b) and path(a) == path(c) and path(a).startswith("/c/run.dllm-")
    assert keyed_cache_path(["--model", "dllm"]) == ["--model", "dllm"]


@pytest.mark.slow
def test_lm_eval_cli_matches_igpo_eval_response_for_response(tmp_path):
    """Acceptance: plain lm-eval (no decoding setting in model_args) decodes igpo_arith exactly as
    `igpo eval --tasks arith` does; the request log lands beside lm-eval's output."""
    limit = "20"
    ev = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "eval",
            "--tasks",
            "arith",
            "--limit",
            limit,
            "--out",
            str(tmp_path / "runs"),
            "--name",
            "ref",
            "--no-leaderboard",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert ev.returncode == 0, ev.stderr[-3000:]
    lm = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "lm-eval",
            "--",
            "--model",
            "dllm",
            "--model_args",
            f"pretrained={_testbed()}",
            "--tasks",
            "igpo_arith",
            "--apply_chat_template",
            "--limit",
            limit,
            "--log_samples",
            "--output_path",
            str(tmp_path / "lm"),
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert lm.returncode == 0, lm.stderr[-3000:]
    record = json.loads((tmp_path / "runs" / "ref" / "results.json").read_text())
    assert record["protocol"]["seeds_run"] == record["protocol"]["seeds"] and record["label_given"] is False
    ours = {r["doc_id"]: r for r in map(json.loads, (tmp_path / "runs" / "ref" / "samples.jsonl").open())}
    [samples] = (tmp_path / "lm").rglob("samples_igpo_arith_*.jsonl")
    theirs = {r["doc_id"]: r["filtered_resps"][0] for r in map(json.loads, samples.open())}
    theirs = {k: v[0] if isinstance(v, list) else v for k, v in theirs.items()}
    assert len(ours) == len(theirs) == int(limit)
    assert all(ours[k]["response"] == theirs[k] for k in ours)
    assert all(r["decoding"]["gen_length"] == 48 and r["tokens"] <= 48 for r in ours.values())
    log = [json.loads(line) for line in (tmp_path / "lm" / "dllm_requests.jsonl").open()]
    assert {(r["decode"]["gen_length"], r["decode"]["block_length"], r["decode"]["steps"]) for r in log} == {
        (48, 16, 24)
    }


def _local_task(folder: Path, name: str, rows: list[dict], body: str) -> Path:
    """A task folder holding one lm-eval task `name` over `rows` (a local JSON-lines file)."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = folder / "tasks"
    tasks.mkdir(exist_ok=True)
    header = f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (tasks / f"{name}.yaml").write_text(header + body)
    return tasks


def _llada_line(line: str, tasks: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """One LLaDA eval_llada_lm_eval.sh argument string through `python -m harness.lm_eval`."""
    cmd = [
        sys.executable,
        "-m",
        "harness.lm_eval",
        *shlex.split(line),
        "--include_path",
        str(tasks),
        "--device",
        "cpu",
        *extra,
    ]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


QUESTION = "Ava has 6 apples . She finds 3 more apples . How many apples does Ava have now ?"


@pytest.mark.slow
def test_llada_likelihood_command_line_runs_with_dllm(tmp_path):
    """A conditional-likelihood line of LLaDA's eval_llada_lm_eval.sh, model and task swapped for
    the testbed and a two-question multiple-choice task on local data."""
    rows = [
        {"q": QUESTION, "choices": ["9", "4"], "label": 0},
        {
            "q": "Leo has 8 books . He loses 2 books . How many books does Leo have now ?",
            "choices": ["3", "6"],
            "label": 1,
        },
    ]
    tasks = _local_task(
        tmp_path,
        "tiny_mc",
        rows,
        "output_type: multiple_choice\ndoc_to_text: '{{q}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: label\nmetric_list:\n  - metric: acc\n",
    )
    line = (
        "--tasks tiny_mc --num_fewshot 0 --model dllm --batch_size 8 "
        f"--model_args model_path='{_testbed()}',cfg=0.5,is_check_greedy=False,mc_num=128"
    )
    proc = _llada_line(line, tasks, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny_mc" in proc.stdout and "acc" in proc.stdout


@pytest.mark.slow
def test_llada_generation_command_line_runs_with_dllm(tmp_path):
    """A conditional-generation line of LLaDA's eval_llada_lm_eval.sh (gen_length=1024, steps=1024,
    block_length=1024), model swapped for the testbed and gsm8k for a local generate_until task
    that, like lm-eval's gsm8k, gives no max_gen_toks: model_args' 1024 tokens are what decodes."""
    tasks = _local_task(
        tmp_path,
        "tiny_gen",
        [{"q": QUESTION, "a": "9"}],
        "output_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: a\n"
        "generation_kwargs:\n  until: ['Question:']\n  do_sample: false\n  temperature: 0.0\n"
        "metric_list:\n  - metric: exact_match\n",
    )
    line = f"--tasks tiny_gen --model dllm --model_args model_path='{_testbed()}',gen_length=1024,steps=1024,block_length=1024"
    out = tmp_path / "lm"
    proc = _llada_line(line, tasks, tmp_path, "--output_path", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = [json.loads(x) for x in (out / "dllm_requests.jsonl").open()]
    assert (record["decode"]["gen_length"], record["decode"]["steps"], record["decode"]["block_length"]) == (
        1024,
        1024,
        1024,
    )
    assert record["sources"]["gen_length"] == "model_args"
