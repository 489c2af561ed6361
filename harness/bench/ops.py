"""Eager op counts of decoding, measurable without a GPU: aten ops per layer and per pass, host reads.

On a GPU at batch 1 a decoding pass is launch-bound: each aten op costs ~5-10 us of host time, so
the op count per pass, not the FLOPs, sets its time. This benchmark counts, on a CPU, what one
pass dispatches: inside each transformer layer, in the rest of the model (embedding, rotary,
norm, head) and in the decoder around it (sampling, confidence, commit), plus every host
synchronisation (`.item()`, `bool(tensor)`, `nonzero`, boolean indexing, the decoder's own
`host_read`). The model has LLaDA-8B's layout (no biases, as many KV heads as heads) at a tiny
width: the counts do not depend on the width. `igpo bench ops` writes results/bench/ops.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness.bench.common import machine_line, write_markdown
from harness.markdown import table

LAYOUT = dict(vocab_size=512, d_model=64, n_layers=4, n_heads=4, mlp_hidden=128)
"""LLaDA-8B's layout at a tiny width (the counts per layer do not depend on the sizes)."""
SYNC_OPS = frozenset({"aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.equal"})
"""aten ops that read a device value on the host (a CUDA synchronisation)."""


@dataclass
class OpCount:
    """What one decode dispatched, split by where it ran."""

    passes: int = 0
    layer_ops: int = 0
    model_ops: int = 0
    """Ops inside the model's forward outside its layers (embedding, rotary, final norm, head)."""
    decoder_ops: int = 0
    """Ops of the decoder around the model (sampling, confidence, commit, cache bookkeeping)."""
    syncs: int = 0
    """Host synchronisations: the decoder's `host_read` calls plus any op that reads a value."""
    stray_syncs: int = 0
    """Of those, the ones outside `host_read` (`.item()`, `bool(tensor)`, `nonzero`, ...)."""
    blocks: int = 0
    n_layers: int = 0
    by_name: Counter = field(default_factory=Counter)

    @property
    def per_layer(self) -> float:
        return self.layer_ops / max(self.passes * self.n_layers, 1)

    @property
    def per_pass(self) -> float:
        return (self.layer_ops + self.model_ops + self.decoder_ops) / max(self.passes, 1)


def count_decode(model, prompt, cfg, **inputs) -> OpCount:
    """Run one `generate(model, prompt, cfg, **inputs)` under a dispatch mode that counts ops by
    scope and host reads."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from igpo.decoding import sampler

    count = OpCount(n_layers=len(model.layers))
    scope = ["decoder"]

    class Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket)
            bool_index = name == "aten.index" and any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in (args[1] if len(args) > 1 else [])
            )
            if name in SYNC_OPS or bool_index:
                count.syncs += 1
                count.stray_syncs += 1
            if name not in ("aten.detach", "aten.lift_fresh"):
                where = scope[-1]
                count.by_name[(where, name)] += 1
                if where == "layer":
                    count.layer_ops += 1
                elif where == "model":
                    count.model_ops += 1
                else:
                    count.decoder_ops += 1
            return func(*args, **(kwargs or {}))

    def enter(name):
        def hook(*_):
            scope.append(name)

        return hook

    def leave(*_):
        scope.pop()

    hooks = []
    for layer in model.layers:
        hooks += [layer.register_forward_pre_hook(enter("layer")), layer.register_forward_hook(leave)]
    hooks += [model.register_forward_pre_hook(enter("model")), model.register_forward_hook(leave)]
    forward = model.forward

    def counted_forward(*args, **kwargs):
        count.passes += 1
        return forward(*args, **kwargs)

    host_read = sampler.host_read

    def counted_read(*tensors):
        count.syncs += 1  # .tolist() dispatches no aten op: counted here
        return host_read(*tensors)

    model.forward = counted_forward
    sampler.host_read = counted_read
    try:
        with Counting():
            sampler.generate(model, prompt, cfg, **inputs)
    finally:
        model.forward = forward
        sampler.host_read = host_read
        for h in hooks:
            h.remove()
    count.blocks = cfg.gen_length // cfg.block_length
    return count


def build(fused: bool):
    """The tiny LLaDA-layout model, random weights, float32 on CPU (fused projections if asked)."""
    import torch

    from igpo.models import ArchConfig, BidirectionalLM, TokenSpec

    model = BidirectionalLM(ArchConfig(**LAYOUT), family="llada")
    model.init_weights(torch.Generator().manual_seed(0))
    model.token_spec = TokenSpec(
        mask_id=LAYOUT["vocab_size"] - 1, eos_id=LAYOUT["vocab_size"] - 2, eot_id=None, pad_id=0
    )
    if fused:
        from igpo.models import fuse_projections

        fuse_projections(model)
    return model.eval()


MODES = {
    "exact": dict(cache=None),
    "dual": dict(cache="dual"),
    "dual + threshold 0.9": dict(cache="dual", threshold=0.9),
    "prefix": dict(cache="prefix"),
}


@dataclass
class OpsBenchConfig:
    gen_length: int = 64
    block_length: int = 32
    tokens_per_pass: int = 2
    prompt_tokens: int = 16
    batch: int = 1
    fused: tuple[bool, ...] = (False, True)
    """Count with the checkpoint's separate projections and with fused ones (fuse_projections)."""
    out: Path = Path("results/bench/ops.md")


def rows(cfg: OpsBenchConfig) -> list[list[str]]:
    import torch

    from igpo.decoding import DecodeConfig

    out = []
    for fused in cfg.fused:
        model = build(fused)
        prompt = torch.randint(
            1, LAYOUT["vocab_size"] - 2, (cfg.batch, cfg.prompt_tokens), generator=torch.Generator().manual_seed(1)
        )
        for mode, extra in MODES.items():
            decode = DecodeConfig(
                gen_length=cfg.gen_length,
                block_length=cfg.block_length,
                steps=cfg.gen_length // cfg.tokens_per_pass,
                **extra,
            )
            c = count_decode(model, prompt, decode)
            out.append(
                [
                    "fused" if fused else "separate",
                    mode,
                    str(c.passes),
                    f"{c.per_layer:.1f}",
                    f"{c.model_ops / max(c.passes, 1):.1f}",
                    f"{c.decoder_ops / max(c.passes, 1):.1f}",
                    f"{c.layer_ops / max(c.passes, 1) * 32 / LAYOUT['n_layers'] + (c.model_ops + c.decoder_ops) / max(c.passes, 1):.0f}",
                    f"{c.syncs / max(c.passes, 1):.2f}",
                    str(c.syncs),
                    str(c.stray_syncs),
                ]
            )
    return out


HEADER = [
    "projections",
    "mode",
    "passes",
    "ops / layer / pass",
    "model ops / pass (outside layers)",
    "decoder ops / pass",
    "ops / pass at 32 layers",
    "host syncs / pass",
    "host syncs in all",
    "of them outside host_read",
]


def run(cfg: OpsBenchConfig) -> str:
    body = rows(cfg)
    text = "\n".join(
        [
            "# Eager op counts of one decoding pass (CPU)",
            "",
            f"{machine_line()}. `igpo bench ops`: LLaDA-8B's layout at a tiny width, float32, batch {cfg.batch}, "
            f"prompt {cfg.prompt_tokens}, {cfg.gen_length} tokens, block {cfg.block_length}, "
            f"{cfg.tokens_per_pass} tokens per pass (threshold: up to). aten ops counted with a dispatch mode; "
            "a host sync is an op that reads a device value on the host (the decoder's own reads go "
            "through `host_read`, one per call). Before this rewrite (commit cd85e37): "
            "[ops-before.md](ops-before.md).",
            "",
            table(HEADER, body),
            "",
        ]
    )
    write_markdown(cfg.out, text)
    return text
