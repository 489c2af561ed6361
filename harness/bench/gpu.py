"""GPU check: decoding and one LoRA RL step of an LLaDA-8B-shaped native model, random weights, bf16.

A bounded, staged run (`igpo bench gpu`, about 3 minutes on one H100/H200): every row is
printed and written to results/bench/gpu.md as soon as it is measured, after a warm-up, so a
killed run keeps every finished row; rows past the time budget are listed as skipped.
1. Floors: the device's measured copy bandwidth and bf16 matmul rate, hence per pass the
   weight-read floor (weight bytes / bandwidth) and the compute floor (FLOPs / matmul rate).
2. Decoding (prompt 128, block 32, 2 tokens per pass): exact / dual cache / dual cache replayed
   from CUDA graphs, at 256 and 512 tokens, batch 1 and 32. Large batches time the first
   blocks only (the rest of the canvas is fixed by hints, so shapes stay those of the full
   decode) and derive tokens/s from them.
3. bf16 numerics: our bf16 logits against a float32 copy of the same weights, next to LLaDA's
   published modeling code in bf16 against the same reference (when the peer code is present).
4. Peers side by side (optional, `--peer`): LLaDA's reference `generate` and Fast-dLLM's
   `generate_with_dual_cache` on the same weights and prompt, batch 1, with our ratio.
5. One LoRA (r 128) RL step as in igpo_llada: G 8 x 256 tokens, trajectory log-probs (4 passes
   per canvas), gradient checkpointing, AdamW; its time split and peak memory.
6. FSDP2 (harness.bench.gpu_fsdp): the full-weight grpo_tiny_full recipe sharded with `igpo
   train --fsdp` on every visible GPU against one plain process: groups, rewards, weight diff.
`--shape tiny` runs every stage in seconds on a CPU (the test suite does); the 8B shape
refuses to start without a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness.bench import gpu_measure as measure
from harness.bench.common import machine_line, write_markdown
from harness.bench.peers import DEFAULT_DIR
from igpo.errors import InvalidSetting

SHAPES = {
    "llada8b": dict(vocab_size=126464, d_model=4096, n_layers=32, n_heads=32, mlp_hidden=12288),
    "tiny": dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, mlp_hidden=128),
}
MODES = {"exact": dict(cache=None), "dual": dict(cache="dual"), "dual + graphs": dict(cache="dual", compile="graphs")}
"""Decoding modes measured: name -> generate() settings."""
DECODE_HEADER = [
    "gen tokens",
    "batch",
    "mode",
    "blocks timed",
    "passes",
    "ms / pass",
    "passes / s",
    "tok / s",
    "weight-read floor ms / pass",
    "compute floor ms / pass",
    "floor tok / s",
    "of floor",
    "peak GiB",
]


@dataclass
class GPUBenchConfig:
    shape: str = "llada8b"
    """llada8b (the real check) or tiny (a seconds-long CPU run that keeps the code from rotting)."""
    gen_lengths: tuple[int, ...] = (256, 512)
    batches: tuple[int, ...] = (1, 32)
    modes: tuple[str, ...] = tuple(MODES)
    prompt_tokens: int = 128
    block_length: int = 32
    tokens_per_pass: int = 2
    full_decode_batch: int = 1
    """Batches up to this decode every block; larger ones time `timed_blocks` blocks."""
    timed_blocks: int = 2
    rl_generations: int = 8
    rl_gen_length: int = 256
    lora_r: int = 128
    peer: Path | None = DEFAULT_DIR
    """Peer code folder (Fast-dLLM's llada/); rows say why they are skipped when it is absent."""
    fsdp: bool = True
    """Run the FSDP stage (2 training runs through the CLI: about half a minute)."""
    budget_s: float = 210.0
    """Rows not started by then are listed as skipped (the whole run stays under ~4 minutes)."""
    out: Path = Path("results/bench/gpu.md")


TINY = dict(
    gen_lengths=(64,),
    batches=(1, 2),
    prompt_tokens=16,
    block_length=16,
    rl_generations=2,
    rl_gen_length=32,
    lora_r=4,
)
"""The tiny shape's sizes: every stage in seconds on a CPU."""


def config_for(shape: str, **settings) -> GPUBenchConfig:
    """The check's settings for `shape` (the tiny one shrinks every size)."""
    return GPUBenchConfig(shape=shape, **{**(TINY if shape == "tiny" else {}), **settings})


class Report:
    """The markdown file, rewritten atomically after every row (a killed run keeps them all)."""

    def __init__(self, path: Path, echo) -> None:
        self.path, self.echo = path, echo
        self.parts: list = []

    def text(self, line: str = "") -> None:
        self.parts.append(line)
        self.flush()
        self.echo(line)

    def table(self, header: list[str]) -> list[list[str]]:
        rows: list[list[str]] = []
        self.parts.append((header, rows))
        self.flush()
        self.echo("| " + " | ".join(header) + " |")
        return rows

    def row(self, rows: list[list[str]], cells: list[str]) -> None:
        rows.append(cells)
        self.flush()
        self.echo("| " + " | ".join(cells) + " |")

    def flush(self) -> None:
        out = [p if isinstance(p, str) else _pipe_table(*p) for p in self.parts]
        write_markdown(self.path, "\n".join(out) + "\n")


def _pipe_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table without tabulate (the GPU machine may have only torch, transformers, peft)."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def run(cfg: GPUBenchConfig, echo=print) -> str:
    import torch

    if cfg.shape not in SHAPES:
        raise InvalidSetting(f"unknown shape {cfg.shape!r} (known: {', '.join(SHAPES)})")
    cuda = torch.cuda.is_available()
    if cfg.shape != "tiny" and not cuda:
        raise InvalidSetting(
            f"igpo bench gpu --shape {cfg.shape} needs a CUDA GPU and none is visible; --shape tiny runs on a CPU"
        )
    device = torch.device("cuda" if cuda else "cpu")
    started = time.perf_counter()
    report = Report(cfg.out, echo)
    model = measure.build(SHAPES[cfg.shape], device)
    info = measure.model_bytes(model)
    report.text(f"# GPU check: LLaDA-8B-shaped native model ({cfg.shape}), random weights")
    report.text()
    report.text(
        f"{machine_line()}; device {device}; {info.params / 1e9:.2f}B parameters in {info.dtype}, "
        f"{info.weight_bytes / 2**30:.1f} GiB; `igpo bench gpu --shape {cfg.shape}`."
    )
    floors = measure.floors(device)
    report.text(
        f"Measured: copy bandwidth {floors.bandwidth / 1e12:.2f} TB/s, {info.dtype} matmul "
        f"{floors.flops / 1e12:.3g} TFLOP/s. Weight-read floor: {info.read_bytes / floors.bandwidth * 1e3:.2f} ms per pass."
    )
    report.text()
    report.text(
        f"## Decoding: prompt {cfg.prompt_tokens}, block {cfg.block_length}, {cfg.tokens_per_pass} tokens per pass, "
        "temperature 0 (floors: the same passes at the weight-read and compute floors)"
    )
    report.text()
    rows = report.table(DECODE_HEADER)
    for gen in cfg.gen_lengths:
        for batch in cfg.batches:
            for mode in cfg.modes:
                label = [str(gen), str(batch), mode]
                if time.perf_counter() - started > cfg.budget_s:
                    report.row(rows, label + ["skipped: time budget"] + [""] * (len(DECODE_HEADER) - 4))
                    continue
                blocks = gen // cfg.block_length if batch <= cfg.full_decode_batch else cfg.timed_blocks
                r = measure.decode(model, cfg, gen, batch, MODES[mode], blocks, device)
                floor = measure.decode_floor(model, info, floors, cfg, gen, batch, MODES[mode], r.passes_by_kind)
                report.row(rows, label + measure.decode_cells(r, floor))
    report.text()
    report.text("## bf16 numerics: logits against a float32 copy of the same weights (one 256-token canvas)")
    report.text()
    peer = measure.load_peer(cfg.peer)
    num_rows = report.table(["forward", "max abs logit error", "mean abs logit error", "argmax agreement"])
    for cells in measure.numerics(model, peer, device):
        report.row(num_rows, cells)
    report.text()
    report.text("## Published code side by side (batch 1, same weights and prompt, temperature 0)")
    report.text()
    peer_rows = report.table(["gen tokens", "decoder", "tok / s", "ours tok / s", "ours / theirs", "tokens equal"])
    for cells in measure.peer_rows(model, peer, cfg, device, deadline=started + cfg.budget_s):
        report.row(peer_rows, cells)
    del model  # the RL step builds its own unfused model (LoRA targets q/k/v by name)
    if cuda:
        torch.cuda.empty_cache()
    rl_stage(report, cfg, device, started)
    if cfg.fsdp:
        fsdp_stage(report, cuda, started + cfg.budget_s + FSDP_ALLOWANCE_S)
    report.text()
    report.text(f"Wall time {time.perf_counter() - started:.0f} s.")
    return cfg.out.read_text()


def rl_stage(report: Report, cfg: GPUBenchConfig, device, started: float) -> None:
    """Stage 5: one LoRA RL step as igpo_llada takes it; its time split and peak memory."""
    report.text()
    report.text(
        f"## One LoRA r {cfg.lora_r} RL step: G {cfg.rl_generations} x {cfg.rl_gen_length} tokens, "
        "trajectory log-probs (4 passes per canvas), gradient checkpointing"
    )
    report.text()
    step_rows = report.table(["generation s", "log-prob + backward s", "optimiser s", "step s", "peak GiB"])
    if time.perf_counter() - started > cfg.budget_s:
        report.row(step_rows, ["skipped: time budget", "", "", "", ""])
        return
    step = measure.rl_step(SHAPES[cfg.shape], cfg, device)
    report.row(
        step_rows,
        [f"{step[k]:.2f}" for k in ("generation", "logprob_backward", "optimizer", "step")]
        + [f"{step['peak_gib']:.1f}"],
    )


FSDP_ALLOWANCE_S = 90.0
"""The FSDP stage's time past the budget (its two runs are killed when it ends)."""


def fsdp_stage(report: Report, cuda: bool, deadline: float) -> None:
    """Stage 6: `igpo train --recipe grpo_tiny_full --fsdp` on every GPU (2 CPU processes without
    one) against one plain process (harness.bench.gpu_fsdp)."""
    import tempfile

    import torch

    from harness.bench.gpu_fsdp import HEADER, RECIPE, fsdp_rows

    processes = torch.cuda.device_count() if cuda else 2
    report.text()
    report.text(f"## FSDP2: {RECIPE} (full weights, 2 steps) sharded over {processes} process(es) vs one plain process")
    report.text()
    rows = report.table(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for cells in fsdp_rows(Path(tmp), processes, "cuda" if cuda else "cpu", deadline):
            report.row(rows, cells)


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.bench.gpu`: the same check without the CLI's dependencies (typer, lm-eval),
    for a GPU machine that has only torch, transformers and peft (tabulate is needed for tables)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="llada8b", choices=sorted(SHAPES))
    parser.add_argument("--peer", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--budget", type=float, default=GPUBenchConfig.budget_s)
    parser.add_argument("--out", type=Path, default=GPUBenchConfig.out)
    args = parser.parse_args(argv)
    try:
        run(config_for(args.shape, peer=args.peer, budget_s=args.budget, out=args.out))
    except InvalidSetting as err:
        print(f"error: {err}", file=__import__("sys").stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
