"""Decoder benchmark: tokens/s, NFE and peak memory of `igpo.decoding.generate`."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from harness.bench.common import machine_line, peak_memory, write_markdown

BENCH_ARCH = dict(vocab_size=256, d_model=128, n_layers=4, n_heads=4, mlp_hidden=512)
"""A random tiny model when no model is given: small enough for CPU, big enough to time."""
PROMPT_LENGTH = 64


@dataclass
class DecodeBenchConfig:
    model: str | None = None
    gen_length: int = 256
    block_length: int = 32
    steps: int = 128
    batch_size: int = 8
    repeats: int = 3
    seed: int = 0
    out: Path = Path("results/bench/decode.md")


def _load(cfg: DecodeBenchConfig):
    from igpo.models import ArchConfig, TokenSpec, load_model, new_model

    if cfg.model:
        return load_model(cfg.model), cfg.model
    vocab = BENCH_ARCH["vocab_size"]
    spec = TokenSpec(mask_id=vocab - 1, eos_id=None, eot_id=None, pad_id=0)
    name = "random tiny ({d_model}x{n_layers}, vocab {vocab_size})".format(**BENCH_ARCH)
    return new_model(ArchConfig(**BENCH_ARCH), spec, seed=cfg.seed), name


def run(cfg: DecodeBenchConfig) -> dict:
    """Time `repeats` decodes of one batch and write the median figures as markdown."""
    import torch

    from igpo.decoding import generate

    model, name = _load(cfg)
    spec = model.token_spec
    device = str(model.device)
    g = torch.Generator().manual_seed(cfg.seed)
    high = min(spec.mask_id, 1000)
    prompts = torch.randint(4, high, (cfg.batch_size, PROMPT_LENGTH), generator=g).to(model.device)
    kw = dict(gen_length=cfg.gen_length, block_length=cfg.block_length, steps=cfg.steps, mask_id=spec.mask_id)
    generate(model, prompts[:1], **{**kw, "gen_length": cfg.block_length, "steps": 1})  # warm-up
    times, peaks, nfe = [], [], 0
    for _ in range(cfg.repeats):
        with peak_memory(device) as peak:
            start = time.perf_counter()
            out = generate(model, prompts, **kw)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peaks.append(peak.bytes)
        nfe = out.nfe
    wall = statistics.median(times)
    tokens = cfg.batch_size * cfg.gen_length
    row = {
        "model": name, "batch": cfg.batch_size, "gen_length": cfg.gen_length,
        "block_length": cfg.block_length, "steps": cfg.steps, "seconds": wall,
        "tokens_per_s": tokens / wall, "nfe": nfe, "nfe_per_token": nfe / cfg.gen_length,
        "peak_mib": max(peaks) / 2**20, "peak_kind": peak.kind,
    }
    text = (
        "# Decoder benchmark\n\n"
        f"Machine: {machine_line()}. Prompt length {PROMPT_LENGTH}; median of {cfg.repeats} runs.\n"
        "Command: `igpo bench decode` (also `make bench`).\n\n"
        "| model | batch | gen_length | block | steps | s / batch | tokens/s | NFE | NFE/token | peak memory (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {name} | {row['batch']} | {row['gen_length']} | {row['block_length']} | {row['steps']} | "
        f"{wall:.2f} | {row['tokens_per_s']:.1f} | {nfe} | {row['nfe_per_token']:.2f} | "
        f"{row['peak_mib']:.1f} ({peak.kind}) |\n\n"
        "NFE counts forward passes of the batch; tokens/s counts completion tokens of all rows.\n"
        "Peak memory: on CPU the sampled resident-set growth during decoding, on GPU the allocator peak.\n"
    )
    write_markdown(cfg.out, text)
    print(text)
    return row


if __name__ == "__main__":
    run(DecodeBenchConfig())
