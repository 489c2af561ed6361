"""Masked-diffusion SFT (LLaDA's objective) on (prompt, completion) pairs, with length alignment.

Per example: t ~ U(eps, 1]; each completion token (EOS padding included, so the model learns to
stop) is masked with probability t; cross-entropy on masked positions weighted by 1/t, summed and
divided by the completion length; the prompt is never masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from igpo.config import coerce
from igpo.data import render_prompt
from igpo.models.logits import token_logits
from igpo.progress import say
from igpo.prompts import source_instruction
from igpo.training.loop import open_session, run_steps
from igpo.training.seeds import Stream, per_process, process_count, step_generator
from igpo.training.settings import CheckpointSettings, LogSettings, ModelSettings, OptimSettings, TrainingError
from igpo.training.sharding import as_float

Overlong = Literal["drop", "truncate"]
"""What SFT does with a completion over its token budget (SFTDataSettings.overlong)."""
MIN_MASK_RATE = 1e-3
"""Lower end of t so the 1/t weight stays bounded (LLaDA uses the same epsilon)."""


@dataclass
class SFTDataSettings:
    """SFT examples: JSONL rows with `prompt` and `completion`, or a built-in source."""

    source: str = "jsonl"
    """jsonl | gsm8k | math | metamath | arith: built-in sources use their reference traces."""
    path: str | None = None
    """JSONL file (source jsonl) or MetaMathQA JSON (source metamath)."""
    data_dir: str | None = None
    """Offline data folder (layout of shared/data); default $IGPO_DATA_DIR."""
    limit: int | None = None
    max_completion_tokens: int = 256
    """Length alignment budget: completions longer than this are dropped or truncated."""
    overlong: Overlong = "drop"
    """drop | truncate: what to do with completions over the budget (the count is reported)."""
    canvas_lengths: list[int] = field(default_factory=list)
    """Completion canvases to EOS-pad to, one drawn per step (seeded); each >= max_completion_tokens.
    Several lengths teach the model to fill every decode length it will meet with EOS; empty:
    every batch is padded to max_completion_tokens."""
    max_prompt_tokens: int = 512
    arith: dict = field(default_factory=dict)
    """source arith: igpo.arith.ArithConfig fields (see igpo.data.DataConfig.arith)."""
    arith_size: int = 20000
    """source arith: number of generated problems."""
    instruction: str | None = None
    """Text before the question in the user turn; None: the source's default (see RLConfig)."""


@dataclass
class SFTConfig:
    """Masked-diffusion supervised fine-tuning."""

    model: ModelSettings = field(default_factory=ModelSettings)
    data: SFTDataSettings = field(default_factory=SFTDataSettings)
    optim: OptimSettings = field(
        default_factory=lambda: OptimSettings(lr=1e-5, warmup_steps=20, grad_clip=1.0, weight_decay=0.0)
    )
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    log: LogSettings = field(default_factory=LogSettings)
    batch_size: int = 8
    """Examples per optimiser step over all processes (split evenly between them; refused when it
    does not divide)."""
    max_steps: int = 1000
    seed: int = 0
    """Seeds data order, mask rates and masks (one torch.Generator), and dropout."""


@dataclass
class SFTBatch:
    ids: torch.Tensor
    """[B, P + T]: left-padded prompt then completion padded with EOS."""
    prompt_len: int
    attention_mask: torch.Tensor
    completion_len: torch.Tensor
    """[B] tokens of each completion before EOS padding (+1 for the first EOS)."""


def encode_pairs(pairs, tokenizer, spec, cfg: SFTDataSettings) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Token pairs after length alignment; returns (pairs, number dropped or truncated)."""
    out, changed = [], 0
    for prompt, completion in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"][-cfg.max_prompt_tokens :]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if len(c) + 1 > cfg.max_completion_tokens:
            changed += 1
            if cfg.overlong == "drop":
                continue
            c = c[: cfg.max_completion_tokens - 1]
        out.append((p, c + [spec.eos_id]))
    return out, changed


def collate(pairs, spec, completion_length: int, width: int | None = None) -> SFTBatch:
    """Left-padded prompts (to `width`, default the widest here) and completions on a canvas of
    `completion_length`; every process pads to the whole step's widest, so a row's positions do
    not depend on which process trains it."""
    width = width or max(len(p) for p, _ in pairs)
    pad = spec.pad_id if spec.pad_id is not None else spec.eos_id
    ids = torch.full((len(pairs), width + completion_length), spec.eos_id, dtype=torch.long)
    mask = torch.zeros(len(pairs), width, dtype=torch.long)
    lengths = []
    for row, (p, c) in enumerate(pairs):
        ids[row, : width - len(p)] = pad
        ids[row, width - len(p) : width] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
        ids[row, width : width + len(c)] = torch.tensor(c)
        lengths.append(len(c))
    return SFTBatch(ids=ids, prompt_len=width, attention_mask=mask, completion_len=torch.tensor(lengths))


def local_batch(cfg: SFTConfig, processes: int) -> int:
    """Each process's share of batch_size (seeds.per_process)."""
    return per_process(cfg.batch_size, processes, "batch_size", "examples")


def canvas_length(cfg: SFTDataSettings, seed: int, step: int, rank: int) -> int:
    """This step's completion canvas: one of cfg.canvas_lengths, drawn from its own seeded stream
    (so a run without them draws exactly what it did before they existed)."""
    if not cfg.canvas_lengths:
        return cfg.max_completion_tokens
    pick = torch.randint(
        len(cfg.canvas_lengths), (1,), generator=step_generator(seed, step, rank, stream=Stream.SFT_CANVAS)
    )
    return cfg.canvas_lengths[int(pick)]


def draw_noise(generator: torch.Generator, rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(t [rows], masked [rows, length]): each row's mask rate and which completion tokens it masks."""
    t = MIN_MASK_RATE + (1 - MIN_MASK_RATE) * torch.rand(rows, generator=generator)
    return t, torch.rand(rows, length, generator=generator) < t[:, None]


def sft_loss(
    model,
    batch: SFTBatch,
    mask_id: int,
    generator: torch.Generator,
    shifted: bool = False,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """LLaDA's masked-diffusion loss on the completion part of a batch. `rows` = (first, total):
    the batch is rows first.. of a step of `total` rows, whose noise is drawn for all `total` and
    sliced, so a row is masked the same on any number of processes (default: the whole step)."""
    ids = batch.ids
    b, total = ids.shape
    plen = batch.prompt_len
    first, count = rows or (0, b)
    t, masked = draw_noise(generator, count, total - plen)
    t, masked = t[first : first + b], masked[first : first + b].to(ids.device)
    noisy = ids.clone()
    noisy[:, plen:] = torch.where(masked, torch.full_like(ids[:, plen:], mask_id), ids[:, plen:])
    attn = torch.cat([batch.attention_mask, torch.ones(b, total - plen, dtype=torch.long)], 1).to(ids.device)
    logits = model(noisy, attention_mask=attn).logits
    logits = token_logits(logits, plen, total, shifted)
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, plen:].reshape(-1), reduction="none")
    ce = ce.view(b, -1) * masked / t.to(ids.device)[:, None]
    length = torch.full((b,), total - plen, device=ids.device, dtype=torch.float)
    return (ce.sum(1) / length).mean()


def load_pairs(cfg: SFTDataSettings) -> list[tuple[str, str]]:
    """(question, completion) pairs from the configured source."""
    from igpo import data

    if cfg.source == "jsonl":
        if not cfg.path:
            raise TrainingError("data.path is required for data.source=jsonl")
        return [(r.prompt, strip_prefill(r.completion)) for r in data.load_sft_jsonl(cfg.path)][: cfg.limit]
    examples = data.load_examples(
        data.DataConfig(
            source=cfg.source,
            path=cfg.path,
            data_dir=cfg.data_dir,
            limit=cfg.limit,
            arith=cfg.arith,
            arith_size=cfg.arith_size,
        )
    )
    return [(e.prompt, strip_prefill(e.trace or "")) for e in examples]


def strip_prefill(completion: str) -> str:
    """Completions continue after the prompt's prefilled "<reasoning>": drop a leading copy."""
    from igpo.prompts import PREFILL

    text = completion.lstrip()
    return text[len(PREFILL) :].lstrip("\n") if text.startswith(PREFILL) else completion


def train_sft(cfg: SFTConfig, out: Path, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Run SFT; checkpoints under out/checkpoints, metrics in out/metrics.jsonl."""
    coerce(cfg.data.overlong, Overlong, "data.overlong")
    if not cfg.model.path:
        raise TrainingError("model.path is required")
    for name, value in (
        ("batch_size", cfg.batch_size),
        ("max_steps", cfg.max_steps),
        ("data.max_completion_tokens", cfg.data.max_completion_tokens),
    ):
        if value < 1:
            raise TrainingError(f"{name} must be >= 1, got {value}")
    short = [n for n in cfg.data.canvas_lengths if n < cfg.data.max_completion_tokens]
    if short:
        raise TrainingError(
            f"data.canvas_lengths {short} are shorter than data.max_completion_tokens={cfg.data.max_completion_tokens}"
        )
    pairs = load_pairs(cfg.data)
    if not pairs:
        raise TrainingError("no training examples")
    local_batch(cfg, process_count())  # refused before the output folder is touched
    session = open_session(cfg, out, resume=resume, overwrite=overwrite)
    spec, accelerator = session.spec, session.accelerator
    system = source_instruction(cfg.data.source, cfg.data.instruction)
    prompts = [render_prompt(session.tokenizer, q, system=system) for q, _ in pairs]
    encoded, changed = encode_pairs(zip(prompts, [c for _, c in pairs], strict=True), session.tokenizer, spec, cfg.data)
    if not encoded:
        raise TrainingError(f"every example is longer than data.max_completion_tokens={cfg.data.max_completion_tokens}")
    if session.main:
        verb = "dropped" if cfg.data.overlong == "drop" else "truncated"
        say("sft", f"{len(encoded)} examples; {changed} {verb} over {cfg.data.max_completion_tokens} tokens")
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    local = local_batch(cfg, session.world)
    model, optimizer, scheduler = session.model, session.optimizer, session.scheduler
    model.train()

    def step_fn(step: int, _generator: torch.Generator) -> dict[str, Any]:  # rank-keyed: unused
        step_rows = [encoded[order[(step * cfg.batch_size + i) % len(order)]] for i in range(cfg.batch_size)]
        first = session.rank * local
        width = max(len(p) for p, _ in step_rows)  # the whole step's, on every process
        batch = collate(step_rows[first : first + local], spec, canvas_length(cfg.data, cfg.seed, step, 0), width)
        batch.ids = batch.ids.to(accelerator.device)
        noise = step_generator(cfg.seed, step, 0)  # the step's draws, whole, on every process
        loss = sft_loss(model, batch, spec.mask_id, noise, spec.shifted_logits, rows=(first, cfg.batch_size))
        accelerator.backward(loss)
        grad_norm = (
            accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip) if cfg.optim.grad_clip else None
        )
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return {
            "loss": float(accelerator.reduce(loss.detach(), reduction="mean")),
            "grad_norm": as_float(grad_norm),
        }

    return run_steps(
        session, cfg, step_fn, resume=resume, desc="igpo sft", postfix=lambda m: {"loss": f"{m['loss']:.3f}"}
    )
