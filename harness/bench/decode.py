"""Decoder benchmarks: the exact decoder's cost, and fast decoding (KV caches, parallel rules)
measured against it on the same model and prompts.

Part 1 (decoder baseline): tokens/s, NFE and peak memory of exact decoding on --model, else a random
tiny model at gen_length 256, block 32, steps 128.
Part 2 (fast decoding): on --model (default: the embedded testbed; `make bench-fast` uses the
testbed continued on 256- and 512-token canvases, which decodes well at both) and igpo_arith
prompts (plus a GSM8K subset with a data folder), every cache mode x parallel rule at gen_length
256 and 512 (block 32; exact decoding commits one token per step, as Fast-dLLM's baseline; the d1
schedule, two per step, is one of the modes; so is the dual cache refreshed every k passes):
tokens/s, NFE per token, peak memory, speed-up over exact measured pair by pair, share of tokens
identical to exact, accuracy and the problems solved by only one of the two. With a GPU, part 3
times the same modes on a randomly initialised LLaDA-8B-sized model in bf16.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.bench.common import machine_line, peak_memory, write_markdown
from harness.markdown import table
from igpo.errors import MissingInput

BENCH_ARCH = dict(vocab_size=256, d_model=128, n_layers=4, n_heads=4, mlp_hidden=512)
"""Part 1's random tiny model."""
PROMPT_LENGTH = 64
PROMPT_VOCAB = 1000
"""Part 1's random prompts draw ids below this (and below the vocabulary size)."""
FAST_BLOCK = 32
"""Block length of parts 2 and 3 (the issue's and Fast-dLLM's setting)."""
FAST_MODES: list[tuple[str, dict]] = [
    ("exact", {}),
    ("2 tokens / step (d1 schedule)", {"steps_per_token": 0.5}),
    ("prefix cache", {"cache": "prefix"}),
    ("dual cache", {"cache": "dual"}),
    ("threshold 0.9", {"threshold": 0.9}),
    ("factor 1.0", {"factor": 1.0}),
    ("prefix + threshold 0.9", {"cache": "prefix", "threshold": 0.9}),
    ("dual + threshold 0.9", {"cache": "dual", "threshold": 0.9}),
    ("dual + factor 1.0", {"cache": "dual", "factor": 1.0}),
    ("dual + threshold 0.9, refresh 4", {"cache": "dual", "threshold": 0.9, "cache_refresh": 4}),
    ("dual + threshold 0.9, refresh 2", {"cache": "dual", "threshold": 0.9, "cache_refresh": 2}),
    ("dual + threshold 0.9, refresh per 4 tokens", {"cache": "dual", "threshold": 0.9, "cache_refresh_tokens": 4}),
    ("dual + threshold 0.9, refresh per 8 tokens", {"cache": "dual", "threshold": 0.9, "cache_refresh_tokens": 8}),
    ("dual + threshold 0.9, refresh per 16 tokens", {"cache": "dual", "threshold": 0.9, "cache_refresh_tokens": 16}),
]
"""Part 2's modes: decoder options, plus `steps_per_token` where a mode changes the step count.
The d1 schedule (gen_length / 2 steps, the eval protocols' default) is itself a fixed parallel rule,
two tokens per step, so it is measured against exact decoding like the others. The refresh rows
refill the dual cache with a full pass every k passes of a block (`cache_refresh`), trading part
of the speed for agreement with exact decoding; the per-token rows (the grid fixed before
measuring: 4, 8, 16 of a 32-token block) refill it once a row has committed n tokens since the
last fill (`cache_refresh_tokens`), so the refresh follows what the cache has not seen."""


def mode_options(mode: dict, length: int, steps_per_token: float) -> tuple[int, dict]:
    """(steps, decoder options) of one FAST_MODES entry at `length`: at least one step per block."""
    steps = max(length // FAST_BLOCK, int(length * mode.get("steps_per_token", steps_per_token)))
    return steps, {k: v for k, v in mode.items() if k != "steps_per_token"}


LLADA_8B = dict(vocab_size=126464, d_model=4096, n_layers=32, n_heads=32, mlp_hidden=12288, rope_theta=500000.0)


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
    fast: bool = True
    """Also run part 2 (fast decoding vs exact)."""
    fast_lengths: list[int] = field(default_factory=lambda: [256, 512])
    fast_problems: list[int] = field(default_factory=lambda: [300, 300])
    """igpo_arith problems (levels 1-6, stratified) decoded per mode, one count per fast length;
    300 is the whole task, so its accuracies are igpo_arith's."""
    fast_batch_size: int = 100
    """Prompts decoded together in part 2."""
    data_dir: Path | None = None
    """Offline data folder (layout of shared/data): adds a GSM8K subset to part 2."""
    gsm8k_problems: int = 16
    """GSM8K test problems decoded per mode when data_dir is given."""
    steps_per_token: float = 1.0
    """Exact decoding's steps = gen_length x this: one token per forward pass, Fast-dLLM's baseline
    (steps = gen_length); the parallel rules use the same steps as their cap."""


def _timed(fn, device: str):
    import torch

    with peak_memory(device) as peak:
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return out, seconds, peak.bytes


def part_one(cfg: DecodeBenchConfig) -> str:
    import torch

    from igpo.decoding import DecodeConfig, generate
    from igpo.models import ArchConfig, TokenSpec, load_model, new_model

    if cfg.model:
        model, name = load_model(cfg.model), cfg.model
    else:
        vocab = BENCH_ARCH["vocab_size"]
        model = new_model(
            ArchConfig(**BENCH_ARCH), TokenSpec(mask_id=vocab - 1, eos_id=None, eot_id=None, pad_id=0), seed=cfg.seed
        )
        name = "random tiny ({d_model}x{n_layers}, vocab {vocab_size})".format(**BENCH_ARCH)
    spec, device = model.token_spec, str(model.device)
    g = torch.Generator().manual_seed(cfg.seed)
    high = min(model.config.vocab_size, PROMPT_VOCAB)
    prompts = torch.randint(0, high, (cfg.batch_size, PROMPT_LENGTH), generator=g)
    prompts[prompts == spec.mask_id] = (spec.mask_id + 1) % high  # a prompt never holds the mask token
    prompts = prompts.to(model.device)
    decoding = DecodeConfig(gen_length=cfg.gen_length, block_length=cfg.block_length, steps=cfg.steps, early_exit=False)
    generate(model, prompts[:1], decoding.replace(gen_length=cfg.block_length, steps=1))  # warm-up
    runs = [_timed(lambda: generate(model, prompts, decoding), device) for _ in range(cfg.repeats)]
    wall = statistics.median(r[1] for r in runs)
    nfe = runs[0][0].nfe
    peak = max(r[2] for r in runs) / 2**20
    tokens = cfg.batch_size * cfg.gen_length
    return (
        "## 1. Exact decoding\n\n"
        f"Prompt length {PROMPT_LENGTH}; median of {cfg.repeats} runs; `igpo bench decode` (also `make bench`).\n\n"
        + table(
            ["model", "batch", "gen_length", "block", "steps", "s / batch", "tokens/s", "NFE", "NFE/token"]
            + ["peak memory (MiB)"],
            [
                [name, cfg.batch_size, cfg.gen_length, cfg.block_length, cfg.steps, f"{wall:.2f}"]
                + [f"{tokens / wall:.1f}", nfe, f"{nfe / cfg.gen_length:.2f}"]
                + [f"{peak:.1f} ({'cuda' if device.startswith('cuda') else 'rss'})"]
            ],
        )
        + "\n\n"
        "NFE counts forward passes of the batch; tokens/s counts completion tokens of all rows.\n"
    )


def _fast_model(path: str | None):
    """The model part 2 measures: `path`, else the embedded testbed (random weights if not built)."""
    from igpo.models import load_model, load_tokenizer
    from igpo.models.loading import EMBEDDED_MODELS

    if path:
        return load_model(path, device="cpu"), load_tokenizer(path), str(path)
    if (EMBEDDED_MODELS["testbed"] / "config.json").is_file():
        return load_model("testbed", device="cpu"), load_tokenizer("testbed"), "embedded testbed model"
    import tempfile

    from igpo.testbed.build import init_model

    folder = Path(tempfile.mkdtemp()) / "init"
    init_model(folder)
    return load_model(folder, device="cpu"), load_tokenizer(folder), "untrained testbed-sized model (random weights)"


@dataclass
class ProblemSet:
    """Prompts decoded by every mode, with the golds their accuracy is scored against."""

    name: str
    ids: object
    mask: object
    golds: list[str]


def arith_problems(tok, spec, count: int) -> ProblemSet:
    """`count` igpo_arith test problems, stratified over levels 1-6 (the task's own pool)."""
    from igpo.arith import test_set
    from igpo.testbed.measure import LEVELS, arith_prompts

    problems = test_set(n_per_level=max(1, count // len(LEVELS)))
    ids, mask = arith_prompts(tok, [p.question for p in problems], spec.pad_id or 0)
    return ProblemSet(f"igpo_arith ({len(problems)} problems, levels 1-6)", ids, mask, [p.answer for p in problems])


def gsm8k_problems(tok, spec, data_dir: Path, count: int) -> ProblemSet:
    """The first `count` GSM8K test problems in the d1/IGPO prompt (chat template + prefill)."""
    from igpo.data import GSM8K_TEST, load_gsm8k_file, render_prompt
    from igpo.decoding.text import left_pad

    path = Path(data_dir) / GSM8K_TEST
    if not path.is_file():
        raise MissingInput(f"GSM8K test file not found: {path}")
    examples = load_gsm8k_file(path)[:count]
    rows = [tok(render_prompt(tok, e.prompt), add_special_tokens=False)["input_ids"] for e in examples]
    ids, mask = left_pad(rows, spec.pad_id or 0)
    return ProblemSet(f"GSM8K test, first {len(examples)}", ids, mask, [e.answer for e in examples])


def identical_share(comp, ref, eos_id: int | None) -> float:
    """Share of `comp`'s tokens equal to `ref`'s, counted up to each row's first EOS in `ref`."""
    from igpo.training.loss import completion_mask

    valid = completion_mask(ref, eos_id)
    return int(((comp == ref) & valid).sum()) / int(valid.sum())


def part_two(cfg: DecodeBenchConfig) -> tuple[str, dict]:
    """Every mode of FAST_MODES against exact decoding, per length and problem set."""
    import torch

    from harness.check.stats import mcnemar_exact_p
    from igpo.decoding import DecodeConfig, generate
    from igpo.decoding.text import completion_texts, stop_ids
    from igpo.scoring.pool import verify_answer

    model, tok, name = _fast_model(cfg.model)
    spec = model.token_spec
    stops = stop_ids(spec)
    lines = [
        "## 2. Fast decoding against exact decoding\n",
        f"Model: {name}. Block {FAST_BLOCK}; exact decoding uses steps = {cfg.steps_per_token:g} x gen_length "
        "(one token per forward pass when 1, Fast-dLLM's baseline), the parallel rules use that as their "
        "cap; the d1 schedule row decodes two tokens per step (gen_length / 2 steps, the eval protocols' "
        f"default); EOS early exit on for every mode; prompts decoded in batches of {cfg.fast_batch_size}. Speed-up = exact wall time / mode wall time, same prompts, measured back "
        "to back. Identical tokens: share of completion tokens equal to exact decoding's, up to each row's "
        "first EOS in the exact output. Accuracy: math-verify against the gold answer (the tasks' scoring); "
        "the last column counts problems solved by the mode but not by exact decoding, and the reverse, "
        "with the exact McNemar p-value of that split (paired: a small p says the accuracy difference "
        "is more than noise). Peak MiB on CPU is the sampled growth of resident memory during the mode, "
        "above what the process held when it started: memory freed by earlier modes is reused, so it can "
        "read near 0 and compares modes only roughly (on GPU it is the allocator's peak).\n",
    ]
    summary: dict = {}
    for length, count in zip(cfg.fast_lengths, cfg.fast_problems, strict=True):
        sets = [arith_problems(tok, spec, count)]
        if cfg.data_dir is not None and cfg.gsm8k_problems > 0:
            sets.append(gsm8k_problems(tok, spec, cfg.data_dir, cfg.gsm8k_problems))
        for pset in sets:
            lines.append(f"### gen_length {length}: {pset.name}\n")
            rows = []
            base = None
            for label, mode in FAST_MODES:
                steps, opts = mode_options(mode, length, cfg.steps_per_token)
                decoding = DecodeConfig(gen_length=length, block_length=FAST_BLOCK, steps=steps, **opts)

                def decode(decoding=decoding, pset=pset):
                    outs = [
                        generate(
                            model,
                            pset.ids[i : i + cfg.fast_batch_size],
                            decoding,
                            attention_mask=pset.mask[i : i + cfg.fast_batch_size],
                        )
                        for i in range(0, len(pset.golds), cfg.fast_batch_size)
                    ]
                    return torch.cat([o.completions for o in outs]), sum(o.nfe for o in outs) / len(outs)

                (comp, nfe), seconds, peak = _timed(decode, "cpu")
                texts = completion_texts(tok, comp, stops)
                right = [verify_answer(g, t).correct for g, t in zip(pset.golds, texts, strict=True)]
                if base is None:
                    base = (comp, seconds, right)
                same = identical_share(comp, base[0], spec.eos_id)
                acc = sum(right) / len(right)
                gained = sum(r and not e for r, e in zip(right, base[2], strict=True))
                lost = sum(e and not r for r, e in zip(right, base[2], strict=True))
                speed = base[1] / seconds
                summary[(pset.name.split(" ")[0], length, label)] = (speed, acc, same)
                rows.append(
                    [label, f"{seconds:.2f}", f"{comp.numel() / seconds:.0f}", f"{nfe / length:.3f}"]
                    + [f"{peak / 2**20:.0f}", f"{speed:.2f}x", f"{100 * same:.1f}%", f"{100 * acc:.1f}%"]
                    + [f"{gained} / {lost} ({mcnemar_exact_p(lost, gained):.2f})"]
                )
            headers = ["mode", "s", "tokens/s", "NFE/token", "peak MiB", "speed-up", "identical tokens", "accuracy"]
            lines += [table([*headers, "solved only by mode / only by exact (McNemar p)"], rows), ""]
    return "\n".join(lines) + "\n", summary


def part_three() -> str:
    import torch

    if not torch.cuda.is_available():
        return "## 3. LLaDA-8B-sized model (GPU)\n\nNot run: no GPU on this machine.\n"
    from igpo.decoding import DecodeConfig, generate
    from igpo.models import ArchConfig, TokenSpec, new_model

    model = new_model(ArchConfig(**LLADA_8B), TokenSpec(mask_id=126336, eos_id=None, eot_id=None, pad_id=0))
    model = model.to(device="cuda", dtype=torch.bfloat16).eval()
    prompts = torch.randint(0, 126000, (1, 128), device="cuda")
    lines = [
        "## 3. LLaDA-8B-sized model, random weights, bf16 (throughput only)\n",
        f"{torch.cuda.get_device_name(0)}; batch 1, prompt 128, block {FAST_BLOCK}, steps = gen_length.\n",
    ]
    rows = []
    for length in (256, 512):
        base = None
        for label, mode in FAST_MODES:
            steps, opts = mode_options(mode, length, 1.0)
            decoding = DecodeConfig(gen_length=length, block_length=FAST_BLOCK, steps=steps, **opts)
            _, seconds, peak = _timed(lambda decoding=decoding: generate(model, prompts, decoding), "cuda")
            base = base or seconds
            rows.append([length, label, f"{length / seconds:.1f}", f"{base / seconds:.2f}x", f"{peak / 2**30:.1f}"])
    lines.append(table(["gen_length", "mode", "tokens/s", "speed-up", "peak GiB"], rows))
    return "\n".join(lines) + "\n"


def run(cfg: DecodeBenchConfig) -> str:
    sections = [f"# Decoder benchmark\n\nMachine: {machine_line()}.\n", part_one(cfg)]
    if cfg.fast:
        text, _ = part_two(cfg)
        sections += [text, part_three()]
    report = "\n".join(sections)
    write_markdown(cfg.out, report)
    print(report)
    return report


if __name__ == "__main__":
    run(DecodeBenchConfig())
