"""GPU check: decoding and one LoRA RL step of an LLaDA-8B-shaped native model, random weights, bf16.

No network and no checkpoint: the model is built in place (LLaDA-8B's shape: width 4096, 32
layers, 32 heads, MLP 12288, vocabulary 126464). Measured:
- decoding tokens/s, exact vs the dual KV cache (same steps: 2 tokens per pass), at 256 and 512
  generated tokens after a 128-token prompt, batch 1 / 8 / 32, with peak memory. (Threshold
  decoding is left out: a random model's confidences never reach a threshold, so its speed here
  would mean nothing.)
- one LoRA (r 128) RL step as in igpo_llada: G 8 rollouts of 256 tokens (block 32, 128 steps),
  trajectory log-probs with 4 passes per canvas and gradient checkpointing, backward, AdamW step;
  its time split (generation / log-prob + backward / optimiser) and peak memory.
`igpo bench gpu` (default shape llada8b, about 5 minutes on one H100/H200) writes
results/bench/gpu.md; `--shape tiny` runs the same code in seconds on a CPU (the test suite does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness.bench.common import machine_line, peak_memory, write_markdown
from harness.markdown import table

SHAPES = {
    "llada8b": dict(vocab_size=126464, d_model=4096, n_layers=32, n_heads=32, mlp_hidden=12288),
    "tiny": dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, mlp_hidden=128),
}
PROMPT_TOKENS = 128
GIB = 2**30
MASK_OFFSET = 1
"""The mask id is the last vocabulary entry; prompts draw tokens below it."""


@dataclass
class GPUBenchConfig:
    shape: str = "llada8b"
    """llada8b (the real check) or tiny (a seconds-long CPU run that keeps the code from rotting)."""
    gen_lengths: tuple[int, ...] = (256, 512)
    batches: tuple[int, ...] = (1, 8, 32)
    rl_generations: int = 8
    rl_gen_length: int = 256
    lora_r: int = 128
    out: Path = Path("results/bench/gpu.md")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def build(shape: str, device):
    """A random-weight native LLaDA-family model of `shape`, bf16 on GPU (float32 on CPU)."""
    import torch

    from igpo.models import ArchConfig, BidirectionalLM, TokenSpec

    if shape not in SHAPES:
        from igpo.errors import InvalidSetting

        raise InvalidSetting(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")
    arch = ArchConfig(**SHAPES[shape])
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = BidirectionalLM(arch, family="llada").to(dtype)
    model.init_weights(torch.Generator(device=device).manual_seed(0))
    vocab = arch.vocab_size
    model.token_spec = TokenSpec(mask_id=vocab - MASK_OFFSET, eos_id=vocab - 2, eot_id=None, pad_id=0)
    return model.eval()


def decode_rows(model, cfg: GPUBenchConfig, device) -> list[list[str]]:
    import torch

    from igpo.decoding import generate

    rows = []
    mask_id = model.token_spec.mask_id
    g = torch.Generator(device=device).manual_seed(0)
    for gen_length in cfg.gen_lengths:
        for batch in cfg.batches:
            prompt = torch.randint(1, mask_id - 2, (batch, PROMPT_TOKENS), generator=g, device=device)
            line = [str(gen_length), str(batch)]
            for cache in (None, "dual"):
                with peak_memory(device.type) as peak, torch.no_grad():
                    started = time.perf_counter()
                    generate(
                        model,
                        prompt,
                        gen_length=gen_length,
                        block_length=32,
                        steps=gen_length // 2,
                        mask_id=mask_id,
                        cache=cache,
                    )
                    _sync(device)
                    seconds = time.perf_counter() - started
                line += [f"{batch * gen_length / seconds:.1f}", f"{peak.bytes / GIB:.1f}"]
            rows.append(line)
    return rows


def rl_step(model, cfg: GPUBenchConfig, device) -> dict[str, float]:
    """One LoRA step: rollouts, trajectory log-probs (4 passes per canvas), backward, AdamW."""
    import torch
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(
        model,
        LoraConfig(r=cfg.lora_r, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]),
    )
    spec = policy.token_spec
    base = policy.get_base_model()
    base.gradient_checkpointing = True
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6)
    g = torch.Generator(device=device).manual_seed(1)
    prompt = torch.randint(1, spec.mask_id - 2, (1, PROMPT_TOKENS), generator=g, device=device).repeat(
        cfg.rl_generations, 1
    )
    decode = dict(gen_length=cfg.rl_gen_length, block_length=32, steps=cfg.rl_gen_length // 2, temperature=1.0)
    with peak_memory(device.type) as peak:
        times = _timed_step(policy, optimizer, prompt, decode, cfg, device, g)
    return {**times, "peak_gib": peak.bytes / GIB}


def _timed_step(policy, optimizer, prompt, decode, cfg: GPUBenchConfig, device, g) -> dict[str, float]:
    import torch

    from igpo.decoding import generate
    from igpo.logprobs import trajectory_logprobs

    spec = policy.token_spec
    t0 = time.perf_counter()
    policy.eval()
    with torch.no_grad():
        out = generate(policy, prompt, mask_id=spec.mask_id, record_steps=True, generator=g, **decode)
    _sync(device)
    t1 = time.perf_counter()
    policy.train()
    est = trajectory_logprobs(
        policy, prompt, out.completions, out.commit_step, mask_id=spec.mask_id, temperature=1.0, group_steps=4
    )
    advantages = torch.linspace(-1, 1, cfg.rl_generations, device=device)
    loss = -(est.logp.float().mean(dim=1) * advantages).mean()
    loss.backward()
    _sync(device)
    t2 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    t3 = time.perf_counter()
    return {"generation": t1 - t0, "logprob_backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0}


def run(cfg: GPUBenchConfig) -> str:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (no GPU)"
    started = time.perf_counter()
    model = build(cfg.shape, device)
    params = sum(p.numel() for p in model.parameters())
    decoding = decode_rows(model, cfg, device)
    step = rl_step(model, cfg, device)
    peak = f"{step['peak_gib']:.1f}"
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / GIB
    lines = [
        "# GPU check: LLaDA-8B-shaped native model, random weights",
        "",
        f"{machine_line()}; device: {name}. `igpo bench gpu --shape {cfg.shape}`; {params / 1e9:.2f}B parameters.",
        "",
        f"Weights: {weights:.1f} GiB. Peak memory below is above what was in use when each measurement began "
        "(harness.bench.common.peak_memory: CUDA allocator on GPU, resident set on CPU).",
        "",
        "Decoding, prompt 128 tokens, block 32, 2 tokens per pass (tokens/s, peak GiB):",
        "",
        table(["gen tokens", "batch", "exact tok/s", "exact peak", "dual cache tok/s", "dual cache peak"], decoding),
        "",
        f"One LoRA r {cfg.lora_r} RL step, G {cfg.rl_generations} x {cfg.rl_gen_length} tokens, trajectory log-probs "
        "(4 passes per canvas), gradient checkpointing:",
        "",
        table(
            ["generation s", "log-prob + backward s", "optimiser s", "step s", "peak GiB"],
            [[f"{step[k]:.2f}" for k in ("generation", "logprob_backward", "optimizer", "step")] + [peak]],
        ),
        "",
        f"Wall time {time.perf_counter() - started:.0f} s.",
        "",
    ]
    text = "\n".join(lines)
    write_markdown(cfg.out, text)
    return text
