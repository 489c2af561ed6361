"""The measurements of the GPU check (harness.bench.gpu): model, floors, decodes, numerics, peers."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from functools import partial

from harness.bench.common import peak_memory

GIB = 2**30
MASK_OFFSET = 1
"""The mask id is the last vocabulary entry; prompts draw tokens below it."""
WARMUP_OPEN = 4
"""Masked tokens left open in the warm-up decode's first block: one full pass and three window
passes at the timed decode's shapes (so CUDA graphs are captured before timing)."""
NUMERICS_TOKENS = 256


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def build(shape: dict, device, fused: bool = True):
    """A random-weight native LLaDA-family model, bf16 on GPU (float32 on CPU); fused for decoding."""
    import torch

    from igpo.models import ArchConfig, BidirectionalLM, TokenSpec, fuse_projections

    arch = ArchConfig(**shape)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = BidirectionalLM(arch, family="llada").to(dtype)
    model.init_weights(torch.Generator(device=device).manual_seed(0))
    vocab = arch.vocab_size
    model.token_spec = TokenSpec(mask_id=vocab - MASK_OFFSET, eos_id=vocab - 2, eot_id=None, pad_id=0)
    if fused:
        fuse_projections(model)
    return model.eval()


@dataclass
class ModelBytes:
    params: int
    weight_bytes: int
    read_bytes: int
    """Bytes a pass reads: every weight but the embedding table (only B*n rows of it are read)."""
    matmul_params: int
    """Parameters in matmuls (layers and output head): 2 FLOPs each per token."""
    dtype: str


def model_bytes(model) -> ModelBytes:
    params = sum(p.numel() for p in model.parameters())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    embed = model.embed.weight
    norms = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 1)
    return ModelBytes(
        params=params,
        weight_bytes=size,
        read_bytes=size - embed.numel() * embed.element_size(),
        matmul_params=params - embed.numel() - norms,
        dtype=str(embed.dtype).removeprefix("torch."),
    )


@dataclass
class Floors:
    bandwidth: float
    """Bytes/s of a large device-to-device copy (read + write)."""
    flops: float
    """FLOP/s of a large square matmul in the model's dtype."""


def floors(device) -> Floors:
    """Measure copy bandwidth and matmul rate (after a warm-up each)."""
    import torch

    big = device.type == "cuda"
    n = 2**28 if big else 2**22  # 1 GiB / 16 MiB of float32
    src = torch.empty(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    reps = 10
    t = time.perf_counter()
    for _ in range(reps):
        dst.copy_(src)
    sync(device)
    bandwidth = 2 * n * 4 * reps / (time.perf_counter() - t)
    del src, dst
    dim = 8192 if big else 512
    dtype = torch.bfloat16 if big else torch.float32
    a = torch.randn(dim, dim, device=device, dtype=dtype)
    b = torch.randn(dim, dim, device=device, dtype=dtype)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return Floors(bandwidth=bandwidth, flops=2 * dim**3 * reps / (time.perf_counter() - t))


@dataclass
class DecodeResult:
    seconds: float
    passes: int
    tokens: int
    blocks: int
    peak_bytes: int
    passes_by_kind: dict[str, int] = field(default_factory=dict)


def _hints(model, batch, gen, block, open_blocks, open_tokens, generator, device):
    """Hints fixing every position but the first `open_blocks` blocks (or `open_tokens` of the
    first block): the canvas keeps its full shape while only those positions are decoded."""
    import torch

    mask_id = model.token_spec.mask_id
    hints = torch.randint(1, mask_id - 2, (batch, gen), generator=generator, device=device)
    if open_tokens is not None:
        hints[:, :open_tokens] = mask_id
    else:
        hints[:, : open_blocks * block] = mask_id
    return hints


def decode(model, cfg, gen: int, batch: int, settings: dict, blocks: int, device) -> DecodeResult:
    """Warm up at the decode's shapes, then time decoding `blocks` blocks (all when it is every block)."""
    import torch

    from igpo.decoding import DecodeConfig, generate

    g = torch.Generator(device=device).manual_seed(gen * 1000 + batch)
    mask_id = model.token_spec.mask_id
    prompt = torch.randint(1, mask_id - 2, (batch, cfg.prompt_tokens), generator=g, device=device)
    decoding = DecodeConfig(
        gen_length=gen, block_length=cfg.block_length, steps=gen // cfg.tokens_per_pass, early_exit=False, **settings
    )
    if settings.get("compile") == "graphs" and device.type != "cuda":
        from igpo.decoding.graphs import GraphedPasses

        if getattr(model, "_graphed_passes", None) is None:  # CPU: the same buffers, no capture
            model._graphed_passes = GraphedPasses(model, capture=False)
    warm = _hints(model, batch, gen, cfg.block_length, 1, WARMUP_OPEN, g, device)
    generate(model, prompt, decoding, hints=warm)
    all_blocks = gen // cfg.block_length
    hints = None if blocks >= all_blocks else _hints(model, batch, gen, cfg.block_length, blocks, None, g, device)
    with peak_memory(device.type) as peak:
        sync(device)
        started = time.perf_counter()
        out = generate(model, prompt, decoding, hints=hints)
        sync(device)
        seconds = time.perf_counter() - started
    done = min(blocks, all_blocks)
    full = out.nfe if settings.get("cache") is None else done
    return DecodeResult(
        seconds=seconds,
        passes=out.nfe,
        tokens=batch * done * cfg.block_length,
        blocks=done,
        peak_bytes=peak.bytes,
        passes_by_kind={"full": full, "window": out.nfe - full},
    )


def decode_floor(model, info: ModelBytes, fl: Floors, cfg, gen, batch, settings, passes_by_kind) -> dict[str, float]:
    """Seconds the same passes would take at the weight-read floor and at the compute floor."""
    arch = model.config
    canvas = cfg.prompt_tokens + gen
    kv_bytes = 2 * arch.n_layers * batch * canvas * arch.n_kv_heads * arch.head_dim * model.embed.weight.element_size()
    weight_s = compute_s = roof_s = 0.0
    for kind, count in passes_by_kind.items():
        tokens = batch * (canvas if kind == "full" else cfg.block_length)
        flops = 2 * info.matmul_params * tokens + 4 * tokens * canvas * arch.d_model * arch.n_layers
        w, c = info.read_bytes / fl.bandwidth, flops / fl.flops
        weight_s += count * w
        compute_s += count * c
        roof_s += count * max(w + kv_bytes / fl.bandwidth, c)
    return {"weight_s": weight_s, "compute_s": compute_s, "roof_s": roof_s}


def decode_cells(r: DecodeResult, floor: dict[str, float]) -> list[str]:
    passes = max(r.passes, 1)
    tok_s = r.tokens / r.seconds
    floor_tok_s = r.tokens / floor["roof_s"] if floor["roof_s"] else float("nan")
    return [
        str(r.blocks),
        str(r.passes),
        f"{r.seconds / passes * 1e3:.2f}",
        f"{r.passes / r.seconds:.1f}",
        f"{tok_s:.1f}",
        f"{floor['weight_s'] / passes * 1e3:.2f}",
        f"{floor['compute_s'] / passes * 1e3:.2f}",
        f"{floor_tok_s:.0f}",
        f"{tok_s / floor_tok_s:.0%}",
        f"{r.peak_bytes / GIB:.2f}",
    ]


def load_peer(path):
    """The peer's generate module, or the reason it is unavailable (a string)."""
    from harness.bench.peers import PeerUnavailable, load

    if path is None:
        return "no --peer folder given"
    try:
        return load(path)
    except PeerUnavailable as err:
        return str(err)


def numerics(model, peer, device) -> list[list[str]]:
    """Our bf16 forward (and the peer's) against a float32 copy of the same weights."""
    import torch

    from harness.bench.peers import PeerUnavailable, peer_model

    mask_id = model.token_spec.mask_id
    g = torch.Generator(device=device).manual_seed(7)
    canvas = torch.randint(1, mask_id - 2, (1, NUMERICS_TOKENS), generator=g, device=device)
    canvas[:, NUMERICS_TOKENS // 2 :] = mask_id
    low = model if model.dtype == torch.bfloat16 else copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        reference = (model if model.dtype == torch.float32 else copy.deepcopy(model).float())(canvas).logits.float()
        rows = [_error_cells("ours, bf16", low(canvas).logits.float(), reference)]
        if isinstance(peer, str):
            rows.append(["LLaDA's published modeling code, bf16", f"skipped: {peer}", "", ""])
        else:
            try:
                theirs = peer_model(peer, low)
                rows.append(
                    _error_cells("LLaDA's published modeling code, bf16", theirs(canvas).logits.float(), reference)
                )
            except PeerUnavailable as err:
                rows.append(["LLaDA's published modeling code, bf16", f"skipped: {err}", "", ""])
    return rows


def _error_cells(name, logits, reference) -> list[str]:
    err = (logits - reference).abs()
    agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    return [name, f"{err.max().item():.4f}", f"{err.mean().item():.5f}", f"{agree:.1%}"]


def peer_rows(model, peer, cfg, device, deadline: float) -> list[list[str]]:
    """Batch-1 full decodes: ours (exact, dual) next to LLaDA's generate and Fast-dLLM's dual cache."""
    import torch

    from harness.bench.peers import PeerUnavailable, peer_model
    from igpo.decoding import DecodeConfig, generate

    if isinstance(peer, str):
        return [["", "peers", f"skipped: {peer}", "", "", ""]]
    try:
        theirs = peer_model(peer, model)
    except PeerUnavailable as err:
        return [["", "peers", f"skipped: {err}", "", "", ""]]
    mask_id = model.token_spec.mask_id
    rows = []
    pairs = (
        ("exact", None, "LLaDA generate (reference)", peer.generate),
        ("dual", "dual", "Fast-dLLM dual cache", peer.generate_with_dual_cache),
    )
    for gen in cfg.gen_lengths:
        g = torch.Generator(device=device).manual_seed(11 + gen)
        prompt = torch.randint(1, mask_id - 2, (1, cfg.prompt_tokens), generator=g, device=device)
        kw = dict(gen_length=gen, block_length=cfg.block_length, steps=gen // cfg.tokens_per_pass)
        for ours_name, cache, name, fn in pairs:
            if time.perf_counter() > deadline:
                rows.append([str(gen), name, "skipped: time budget", "", "", ""])
                continue
            fn(
                theirs,
                prompt,
                temperature=0.0,
                mask_id=mask_id,
                gen_length=cfg.block_length,
                block_length=cfg.block_length,
                steps=cfg.block_length // cfg.tokens_per_pass,
            )
            with torch.no_grad():
                t_theirs, (x_theirs, _) = _timed(
                    partial(fn, theirs, prompt, temperature=0.0, mask_id=mask_id, **kw), device
                )
                ours = DecodeConfig(**kw, cache=cache, early_exit=False)
                t_ours, out = _timed(partial(generate, model, prompt, ours), device)
            equal = (x_theirs[:, cfg.prompt_tokens :] == out.completions).float().mean().item()
            rows.append(
                [
                    str(gen),
                    f"{name} vs ours {ours_name}",
                    f"{gen / t_theirs:.1f}",
                    f"{gen / t_ours:.1f}",
                    f"{t_theirs / t_ours:.2f}x",
                    f"{equal:.0%}",
                ]
            )
    return rows


def _timed(fn, device):
    sync(device)
    started = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - started, out


def rl_step(shape: dict, cfg, device) -> dict[str, float]:
    """One LoRA step on a fresh unfused model: rollouts, trajectory log-probs, backward, AdamW."""
    import torch
    from peft import LoraConfig, get_peft_model

    from igpo.decoding import DecodeConfig

    model = build(shape, device, fused=False)
    policy = get_peft_model(
        model,
        LoraConfig(r=cfg.lora_r, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]),
    )
    policy.get_base_model().gradient_checkpointing = True
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6)
    g = torch.Generator(device=device).manual_seed(1)
    spec = policy.token_spec
    prompt = torch.randint(1, spec.mask_id - 2, (1, cfg.prompt_tokens), generator=g, device=device)
    prompt = prompt.repeat(cfg.rl_generations, 1)
    decode = DecodeConfig(
        gen_length=cfg.rl_gen_length,
        block_length=cfg.block_length,
        steps=cfg.rl_gen_length // 2,
        temperature=1.0,
        early_exit=False,
    )
    with peak_memory(device.type) as peak:
        times = _timed_step(policy, optimizer, prompt, decode, cfg, device, g)
    return {**times, "peak_gib": peak.bytes / GIB}


def _timed_step(policy, optimizer, prompt, decode, cfg, device, g) -> dict[str, float]:
    import torch

    from igpo.decoding import generate
    from igpo.logprobs import trajectory_logprobs

    spec = policy.token_spec
    t0 = time.perf_counter()
    policy.eval()
    with torch.no_grad():
        out = generate(policy, prompt, decode, record_steps=True, generator=g)
    sync(device)
    t1 = time.perf_counter()
    policy.train()
    est = trajectory_logprobs(
        policy, prompt, out.completions, out.commit_step, mask_id=spec.mask_id, temperature=1.0, group_steps=4
    )
    advantages = torch.linspace(-1, 1, cfg.rl_generations, device=device)
    loss = -(est.logp.float().mean(dim=1) * advantages).mean()
    loss.backward()
    sync(device)
    t2 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    t3 = time.perf_counter()
    return {"generation": t1 - t0, "logprob_backward": t2 - t1, "optimizer": t3 - t2, "step": t3 - t0}
