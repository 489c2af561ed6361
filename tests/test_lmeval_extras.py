"""The lm-eval side beyond `igpo eval`: the `igpo lm-eval` CLI, loglikelihood through `dllm`
(LLaDA's Monte-Carlo ELBO), LoRA adapters, and the task files shipped in the wheel."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, TINY_WORDS, save_tiny_checkpoint
from torch import nn
from typer.testing import CliRunner

from harness.cli import app
from harness.eval.results import load_results, load_samples

REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT_S = 300
FAST = [
    "--gen-length",
    "32",
    "--block-length",
    "16",
    "--steps",
    "8",
    "--seeds",
    "0",
    "--no-leaderboard",
    "--device",
    "cpu",
]
PREFERRED_LOGIT = 6.0
"""Logit of the token the constant model prefers; every other token has logit 0."""
CONTEXT = "how many is 3 and 4"
ADAPTER_SEED = 0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _needs_data() -> None:
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.skip("shared/data is not beside this checkout")


# --------------------------------------------------------------------------- igpo lm-eval


def test_lm_eval_help_exits_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "harness.lm_eval", "--help"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage" in proc.stdout.lower()


def test_igpo_lm_eval_runs_dllm_on_local_data(tiny_checkpoint, tmp_path):
    """lm-eval's own CLI (through `igpo lm-eval --`) with local data via an include folder."""
    _needs_data()
    from tasks.registry import local_task_dir

    include = local_task_dir(SHARED_DATA, ["gsm8k"], dest=tmp_path / "tasks")
    args = [
        "--model",
        "dllm",
        "--model_args",
        f"pretrained={tiny_checkpoint},gen_length=32,block_length=16,steps=8",
        "--tasks",
        "igpo_gsm8k",
        "--limit",
        "2",
        "--include_path",
        str(include),
        "--apply_chat_template",
    ]  # no --device: lm-eval then passes cuda:0, even on CPU machines
    proc = subprocess.run(
        [sys.executable, "-m", "harness.cli", "lm-eval", "--", *args],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    table = proc.stdout
    assert "igpo_gsm8k" in table and "exact_match" in table and "strict_match" in table
    assert "|" in table  # the markdown results table
    assert "CUDA is not available" not in proc.stderr  # lm-eval's default cuda:0 was not asked for


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU fallback happens without CUDA")
@pytest.mark.parametrize(
    "device, unasked, warned",
    [("cuda:0", None, True), ("cuda:0", "cuda:0", False), ("cuda:1", "cuda:0", True), ("cpu", "cuda:0", False)],
)
def test_cuda_fallback_warns_only_when_cuda_was_asked_for(
    tiny_checkpoint, caplog, monkeypatch, device, unasked, warned
):
    """dllm runs on the CPU without CUDA; it says so only for a CUDA device the user named, not
    for the cuda:0 lm-eval passes by default (`igpo lm-eval` sets that as unasked_device)."""
    import logging

    from harness.lmeval.model import DiffusionLM

    monkeypatch.setattr(DiffusionLM, "unasked_device", unasked)
    with caplog.at_level(logging.WARNING, logger="harness.lmeval.model"):
        lm = DiffusionLM(pretrained=str(tiny_checkpoint), device=device)
    assert next(lm.model.parameters()).device.type == "cpu"
    said = [r.getMessage() for r in caplog.records if "CUDA is not available" in r.getMessage()]
    assert bool(said) == warned, said
    assert not said or device in said[0]


# --------------------------------------------------------------------------- loglikelihood


class ConstantLogits(nn.Module):
    """Same logits at every position whatever the input.

    With position-independent logits, every Monte-Carlo sample of LLaDA's ELBO equals
    (T / l) * (sum of log p over the l masked tokens); when every continuation token has the
    same log-probability lp, that is exactly T * lp, whatever the masks: the estimate is exact.
    """

    def __init__(self, logits: torch.Tensor, spec) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone().float(), requires_grad=False)
        self.token_spec = spec

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        from igpo.models import DLLMOutput

        b, n = input_ids.shape
        return DLLMOutput(logits=self.logits.expand(b, n, -1))


def _tokenizer():
    from igpo.models.tokenizer import build_word_tokenizer

    return build_word_tokenizer(TINY_WORDS)


def _requests(*continuations: str, context: str = CONTEXT):
    from lm_eval.api.instance import Instance

    return [
        Instance(request_type="loglikelihood", doc={}, arguments=(context, c), idx=i)
        for i, c in enumerate(continuations)
    ]


@pytest.fixture(scope="module")
def constant_lm():
    from harness.lmeval import DiffusionLM
    from igpo.models import TokenSpec

    tok = _tokenizer()
    preferred = tok.convert_tokens_to_ids("7")
    logits = torch.zeros(len(tok))
    logits[preferred] = PREFERRED_LOGIT
    spec = TokenSpec(mask_id=tok.mask_token_id, eos_id=tok.eos_token_id, eot_id=None, pad_id=tok.pad_token_id)
    lm = DiffusionLM(model=ConstantLogits(logits, spec), tokenizer=tok, mc_num=32, batch_size=8, device="cpu")
    logp = torch.log_softmax(logits, dim=0)
    return lm, float(logp[preferred]), float(logp[tok.convert_tokens_to_ids("5")])


def test_elbo_is_exact_for_constant_logits(constant_lm):
    lm, lp_preferred, lp_other = constant_lm
    (ll_pref, greedy_pref), (ll_rand, greedy_rand) = lm.loglikelihood(_requests(" 7 7 7", " 5 9 12"))
    assert ll_pref == pytest.approx(3 * lp_preferred, abs=1e-4)
    assert ll_rand == pytest.approx(3 * lp_other, abs=1e-4)  # 5, 9, 12 all have logit 0
    assert ll_pref > ll_rand + 10
    assert greedy_pref is True and greedy_rand is False


def test_elbo_is_unbiased_for_mixed_continuation(constant_lm):
    """Masks matter when token log-probs differ; the estimate's mean is still the exact sum."""
    lm, lp_preferred, lp_other = constant_lm
    exact = 2 * lp_preferred + lp_other
    old = lm.args.mc_num
    lm.args.mc_num = 2048
    try:
        [(ll, greedy)] = lm.loglikelihood(_requests(" 7 5 7"))
    finally:
        lm.args.mc_num = old
    assert ll == pytest.approx(exact, rel=0.05) and greedy is False


def test_elbo_is_seeded_and_depends_on_mc_num(tiny_checkpoint):
    from harness.lmeval import DiffusionLM

    def estimate(**kwargs) -> float:
        lm = DiffusionLM(pretrained=str(tiny_checkpoint), device="cpu", batch_size=4, **kwargs)
        [(ll, _)] = lm.loglikelihood(_requests(" 7 5 9 12 is a"))
        assert math.isfinite(ll) and ll < 0
        return ll

    base = estimate(mc_num=8, seed=0)
    assert estimate(mc_num=8, seed=0) == base  # same seed, same masks, same number
    assert estimate(mc_num=8, seed=1) != base
    assert estimate(mc_num=16, seed=0) != base


def test_loglikelihood_rolling_is_refused(constant_lm):
    lm, _, _ = constant_lm
    with pytest.raises(NotImplementedError, match="loglikelihood_rolling"):
        lm.loglikelihood_rolling(_requests("text"))


# --------------------------------------------------------------------------- LoRA adapters


def _make_adapter(model_dir: Path, out: Path) -> Path:
    """A LoRA adapter with random (non-zero) A and B, so it visibly changes the model."""
    from peft import LoraConfig, get_peft_model

    from igpo.models import load_model

    model = load_model(str(model_dir), device="cpu")
    torch.manual_seed(ADAPTER_SEED)  # peft draws the non-zero LoRA init from the global RNG
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    # save_embedding_layers=False: peft's "auto" check calls config.from_pretrained, which the
    # native ArchConfig dataclass does not have (and no embedding is adapted here anyway).
    peft_model.save_pretrained(str(out), save_embedding_layers=False)
    return out


def test_eval_with_adapter_changes_responses(tmp_path):
    _needs_data()
    model = save_tiny_checkpoint(tmp_path / "tiny-dllm")
    adapter = _make_adapter(model, tmp_path / "lora")
    runner = CliRunner()
    base = [
        "eval",
        "--model",
        str(model),
        "--tasks",
        "gsm8k",
        "--data-dir",
        str(SHARED_DATA),
        "--limit",
        "3",
        "--out",
        str(tmp_path / "runs"),
        *FAST,
    ]
    plain = runner.invoke(app, base)
    adapted = runner.invoke(app, [*base, "--adapter", str(adapter)])
    assert plain.exit_code == 0, plain.output
    assert adapted.exit_code == 0, adapted.output
    plain_run, adapted_run = tmp_path / "runs" / "tiny-dllm-igpo", tmp_path / "runs" / "tiny-dllm-lora-igpo"
    record = load_results(adapted_run)
    assert record.model.adapter == str(adapter)
    assert record.model.adapter_hash.startswith("sha256:")
    assert load_results(plain_run).model.adapter is None
    before = [s.response for s in load_samples(plain_run)]
    after = [s.response for s in load_samples(adapted_run)]
    assert len(before) == len(after) == 3 and before != after


def test_adapter_folder_without_config_is_refused(tmp_path):
    from harness.lmeval.model import apply_adapter

    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        apply_adapter(nn.Linear(2, 2), str(tmp_path))


# --------------------------------------------------------------------------- packaging


def test_wheel_ships_task_and_protocol_files(tmp_path):
    """Task YAMLs and protocols are package data: lm-eval finds them in an installed igpo."""
    src = tmp_path / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".ruff_cache",
            "runs",
            "results",
            "out",
        ),
    )
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [wheel] = wheels.glob("igpo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "tasks/igpo_gsm8k.yaml",
        "tasks/igpo_math500.yaml",
        "tasks/igpo_amc.yaml",
        "tasks/_igpo_template.yaml",
        "tasks/utils.py",
        "tasks/registry.py",
        "harness/eval/protocols/igpo.yaml",
        "harness/eval/protocols/d1.yaml",
        "harness/eval/protocols/igpo_fast.yaml",
        "harness/eval/reference.yaml",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(n.startswith(("results/", "tests/", "runs/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "igpo = harness.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--tasks", "igpo_nope", "--model_args", "pretrained=testbed"], "Tasks not found: igpo_nope"),
        (["--tasks", "igpo_arith", "--model_args", "pretrained=/no/such/model"], "model path not found"),
        (["--tasks", "igpo_arith", "--model_args", "pretrained=testbed,gen_length=abc"], "gen_length='abc'"),
    ],
)
def test_lm_eval_mistakes_end_in_one_error_line(args, needle):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("IGPO_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "harness.lm_eval", "--model", "dllm", *args, "--limit", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and needle in proc.stderr.strip().splitlines()[-1]
