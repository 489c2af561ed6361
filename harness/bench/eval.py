"""Evaluation benchmark: the harness's own overhead per sample, and answer-scoring throughput.

(a) Overhead (here): one full `run_eval` of a model on N GSM8K problems (greedy, one seed), after
    a small warm-up run; its run record gives wall time, model-load time, time inside decoding
    and time inside model forward passes, so overhead = wall - forward, per sample.
(b) Scoring (harness/bench/scoring.py): `verify_answer` and `strict_correct` one call at a time,
    `verify_answers` per pool size, and MATH500 scored as `igpo eval` scores a task.
This module also writes the report of both.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bench.common import machine_line, write_markdown
from harness.bench.scoring import (
    POOL_REPEATS,
    REWRITE_SHARE,
    UNBOXED_SHARE,
    WRONG_SHARE,
    measure_eval_scoring,
    measure_pool,
    measure_scoring,
    pool_sizes,
    scoring_cases,
)
from harness.markdown import table
from igpo.errors import InvalidSetting, MissingInput

DEFAULT_OUT = Path("results/bench/eval.md")
DEFAULT_LIMIT = 50
WARMUP_LIMIT = 2
"""Problems of the untimed warm-up run (imports, dataset cache, first forward passes)."""
SIBLING_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
"""Offline data beside the checkout, used when neither --data-dir nor $IGPO_DATA_DIR is set."""

DECODING = {"gen_length": 64, "block_length": 32, "steps": 32}
"""Short decoding, so the run is dominated by what the harness itself costs."""
BENCH_ARCH = {"d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden": 128}
"""The random tiny model used when no --model is given."""
BENCH_WORDS = [
    "<reasoning>",
    "</reasoning>",
    "<answer>",
    "</answer>",
    "\\boxed{",
    "}",
    "the",
    "is",
    "a",
    "of",
    "and",
    "to",
    "how",
    "many",
    "much",
    "what",
    "she",
    "he",
    "each",
    "per",
    "total",
    "$",
    ".",
    ",",
    "+",
    "-",
    "*",
    "/",
    "=",
    "?",
    *map(str, range(100)),
]

SEED = 0


@dataclass
class EvalBenchConfig:
    model: str | None = None
    data_dir: Path | None = None
    limit: int = DEFAULT_LIMIT
    batch_size: int = 8
    out: Path = DEFAULT_OUT


# --------------------------------------------------------------------------- (a) overhead


def build_tiny_model(folder: Path, seed: int = SEED) -> Path:
    """A random tiny dLLM with a word-level tokenizer and chat template, saved to `folder`."""
    from igpo.models import ArchConfig, TokenSpec, new_model, save_model
    from igpo.models.tokenizer import EOT, build_word_tokenizer

    tok = build_word_tokenizer(BENCH_WORDS)
    spec = TokenSpec(
        mask_id=tok.mask_token_id,
        eos_id=tok.eos_token_id,
        eot_id=tok.convert_tokens_to_ids(EOT),
        pad_id=tok.pad_token_id,
    )
    save_model(new_model(ArchConfig(vocab_size=len(tok), **BENCH_ARCH), spec, seed=seed), folder)
    tok.save_pretrained(folder)
    return folder


def _eval_once(model: str, data_dir: Path, limit: int, batch_size: int, out: Path) -> dict[str, Any]:
    from harness.eval.run import EvalRequest, run_eval
    from igpo.decoding import DecodeOverrides

    path = run_eval(
        EvalRequest(
            model=model,
            tasks=["gsm8k"],
            limit=limit,
            seeds=[SEED],
            data_dir=data_dir,
            out=out,
            batch_size=batch_size,
            overrides=DecodeOverrides(**DECODING),
            leaderboard=None,
        )
    )
    return json.loads(Path(path).read_text(encoding="utf-8"))


def measure_overhead(model: str, data_dir: Path, limit: int, batch_size: int) -> dict[str, float]:
    """Timing of one fresh `run_eval` (no cached responses) after an untimed warm-up run."""
    with tempfile.TemporaryDirectory(prefix="igpo_bench_eval_") as tmp:
        _eval_once(model, data_dir, WARMUP_LIMIT, batch_size, Path(tmp) / "warmup")
        record = _eval_once(model, data_dir, limit, batch_size, Path(tmp) / "timed")
    prov = record["provenance"]
    samples = int(prov["requests_decoded"])
    if samples == 0 or prov["requests_from_cache"]:
        raise RuntimeError("the timed run decoded nothing or reused cached responses")
    wall, load = prov["wall_time_s"], prov["load_seconds"]
    forward, decode = prov["forward_seconds"], prov["decode_seconds"]
    if not 0 < forward <= decode <= wall:
        raise RuntimeError(f"inconsistent timings: forward {forward}, decode {decode}, wall {wall}")
    return {
        "samples": samples,
        "wall_s": wall,
        "load_s": load,
        "forward_s": forward,
        "decode_s": decode,
        "sampler_s": decode - forward,
        "rest_s": wall - load - decode,
        "overhead_ms": 1000 * (wall - forward) / samples,
        "overhead_no_load_ms": 1000 * (wall - load - forward) / samples,
        "forward_ms": 1000 * forward / samples,
    }


# --------------------------------------------------------------------------- report


def resolve_data_dir(data_dir: Path | None) -> Path:
    from tasks.registry import data_dir_or_env

    found = data_dir_or_env(data_dir) or (SIBLING_DATA if SIBLING_DATA.is_dir() else None)
    if found is None:
        raise MissingInput("no data folder: pass --data-dir or set $IGPO_DATA_DIR")
    for part in ("gsm8k/test.jsonl", "math500/test.jsonl"):
        if not (found / part).is_file():
            raise MissingInput(f"missing data file: {found / part}")
    return found


def render(
    model_name: str,
    limit: int,
    batch_size: int,
    overhead: dict[str, float],
    scoring: list[dict[str, Any]],
    startup: float,
    load_average: float,
    pool: list[dict[str, Any]],
    eval_scoring: list[dict[str, Any]],
) -> str:
    """The benchmark's markdown page: harness overhead, scoring throughput (one call at a time,
    per worker count, inside an evaluation) and how each was measured."""
    lines = _overhead_lines(model_name, limit, batch_size, overhead, load_average)
    lines += _scoring_lines(scoring)
    lines += _pool_lines(pool)
    lines += _eval_scoring_lines(eval_scoring)
    lines += _method_lines(limit, startup)
    return "\n".join(lines)


def _overhead_lines(
    model_name: str, limit: int, batch_size: int, o: dict[str, float], load_average: float
) -> list[str]:
    import torch

    return [
        "# Evaluation benchmark",
        "",
        f"Machine: {machine_line()}; {torch.get_num_threads()} torch threads; load average "
        f"{load_average:.1f} at the start (1-minute; near the core count, other processes competed "
        "for the CPUs and timings are noisy). "
        f"Command: `igpo bench eval --limit {limit}`.",
        "",
        "## Harness overhead (`igpo eval`, GSM8K, greedy, one seed)",
        "",
        f"Model: {model_name}; decoding gen_length {DECODING['gen_length']}, block "
        f"{DECODING['block_length']}, steps {DECODING['steps']}; batch {batch_size}; default device and dtype.",
        "",
        table(
            ["samples", "wall s", "model load s", "forward s", "sampler s", "rest s", "overhead ms/sample"]
            + ["overhead excl. load ms/sample", "forward ms/sample"],
            [
                [o["samples"]]
                + [f"{o[k]:.2f}" for k in ("wall_s", "load_s", "forward_s", "sampler_s", "rest_s")]
                + [f"{o[k]:.1f}" for k in ("overhead_ms", "overhead_no_load_ms", "forward_ms")]
            ],
        ),
        "",
    ]


def _scoring_lines(scoring: list[dict[str, Any]]) -> list[str]:
    return [
        "## Scoring throughput",
        "",
        table(
            ["dataset", "metric", "samples", "seconds", "samples/s", "correct %", "math-verify worker share"]
            + ["timeouts"],
            [
                [r["dataset"], r["metric"], r["samples"], f"{r['seconds']:.3f}", f"{r['per_s']:.0f}"]
                + [f"{100 * r['correct']:.1f}"]
                + ["-" if r["metric"] != "verify_answer" else f"{100 * r['worker_share']:.0f}%", r["timeouts"]]
                for r in scoring
            ],
        ),
    ]


def _pool_lines(pool: list[dict[str, Any]]) -> list[str]:
    return [
        "",
        "## Scoring throughput per worker count (MATH500, `verify_answers`)",
        "",
        table(
            ["math-verify workers", "samples", "seconds (median)", "samples/s", "passes samples/s", "speed-up"]
            + ["correct %", "load average before"]
            + ["math-verify worker share", "timeouts"],
            [
                [r["workers"], r["samples"], f"{r['seconds']:.3f}", f"{r['per_s']:.0f}"]
                + [", ".join(f"{v:.0f}" for v in r["all_per_s"]), f"{r['per_s'] / pool[0]['per_s']:.2f}x"]
                + [f"{100 * r['correct']:.1f}", f"{r['load']:.1f}"]
                + [f"{100 * r['worker_share']:.0f}%", r["timeouts"]]
                for r in pool
            ],
        ),
    ]


def _eval_scoring_lines(eval_scoring: list[dict[str, Any]]) -> list[str]:
    return [
        "",
        "## Scoring inside an evaluation (MATH500, lm-eval's filter, metric per document, samples rows)",
        "",
        table(
            ["responses verified", "math-verify workers used", "samples", "seconds (median)", "passes seconds"]
            + ["samples/s", "speed-up", "correct %"],
            [
                [r["mode"], r["workers"], r["samples"], f"{r['seconds']:.3f}"]
                + [", ".join(f"{v:.2f}" for v in r["all_seconds"]), f"{r['per_s']:.0f}"]
                + [f"{eval_scoring[0]['seconds'] / r['seconds']:.2f}x", f"{100 * r['correct']:.1f}"]
                for r in eval_scoring
            ],
        ),
    ]


def _method_lines(limit: int, startup: float) -> list[str]:
    from igpo.scoring.worker import WARMUP_PAIRS

    return [
        "",
        "How it is measured. Overhead: `run_eval` runs once untimed on "
        f"{WARMUP_LIMIT} problems (imports, dataset cache, first passes), then on {limit} fresh problems "
        "with an empty response cache; its run record's provenance gives the wall time (model load to "
        "the last sample scored, results writing excluded), the model-load time, the time inside "
        "`generate` (decode) and the time inside the model's forward passes (forward hooks). "
        "Overhead per sample is (wall - forward) / samples: everything that is not the network, "
        "i.e. lm-eval task building, prompt rendering, tokenisation, the sampler's own work "
        "(sampler s = decode - forward) and scoring (rest s = wall - load - decode); the second "
        "column leaves model loading out. Scoring: every GSM8K test problem and every MATH500 problem "
        "gets one synthetic response `<reasoning>..</reasoning><answer>\\boxed{..}</answer>` built "
        f"from its real gold and reference solution: GSM8K {100 * WRONG_SHARE:.0f}% wrong numbers and "
        f"{100 * UNBOXED_SHARE:.0f}% unboxed answers; MATH500 {100 * WRONG_SHARE:.0f}% another "
        f"problem's gold and {100 * REWRITE_SHARE:.0f}% equivalent rewrites (\\dfrac, 5.0, spacing). "
        "Each scorer scores every response once in one thread; samples/s = responses / seconds. The "
        "worker share is the fraction of `verify_answer` calls that needed a math-verify worker "
        "process (the rest were decided in-process by `igpo.scoring.answers.fast_verdict`: a canonical "
        "number in the response's only box against a canonical numeric gold, where math-verify's "
        "verdict follows from its own rules; everything else, the whole response, goes to "
        "math-verify). Per worker count: the same MATH500 responses scored by one "
        f"`verify_answers` call with the pool set to that many workers, {POOL_REPEATS} passes each "
        "with freshly started workers (started untimed, so no pass finds sympy's caches warm from "
        "an earlier one; the one-call-at-a-time rows above reuse one worker and do); the pool "
        "defaults to the usable cores. Starting a worker took "
        f"{startup:.2f} s, excluded above: it includes verifying {len(WARMUP_PAIRS)} answer shapes "
        "(igpo.scoring.worker.WARMUP_PAIRS) once, which moves sympy's first-use costs out of the "
        "first responses, and `igpo eval` starts the worker in a background thread when a task is "
        "a benchmark, so an evaluation pays it while the model decodes. Inside an evaluation: the "
        "MATH500 responses go through tasks/utils.py as lm-eval sends them (the filter over the "
        "whole task, `process_results_math` per document, then each samples row's verdict) inside "
        "`shared_verdicts()`, once with the math tasks' filter, which verifies every response at "
        "once on the pool before the metrics (`igpo.scoring.pool.verify_ahead`), once with the identity "
        f"filter, where each document's metric verifies its own response on one worker; "
        f"{POOL_REPEATS} alternating passes each with the pool freshly started (untimed); both "
        "give the same verdict for every response (checked).",
        "",
    ]


def run(cfg: EvalBenchConfig) -> dict[str, Any]:
    """Measure, write the markdown table, return the numbers."""
    if cfg.limit <= 0:
        raise InvalidSetting(f"--limit must be a positive number of problems, got {cfg.limit}")
    data_dir = resolve_data_dir(cfg.data_dir)
    load_average = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="igpo_bench_model_") as tmp:
        if cfg.model:
            model, name = cfg.model, cfg.model
        else:
            model = str(build_tiny_model(Path(tmp) / "tiny-dllm"))
            name = "random tiny ({d_model}x{n_layers})".format(**BENCH_ARCH)
        overhead = measure_overhead(model, data_dir, cfg.limit, cfg.batch_size)
    scoring, startup = measure_scoring(data_dir)
    from igpo.scoring.pool import default_worker_count

    pool = measure_pool(scoring_cases(data_dir)["MATH500"], pool_sizes(default_worker_count()))
    eval_scoring = measure_eval_scoring(data_dir)
    text = render(name, cfg.limit, cfg.batch_size, overhead, scoring, startup, load_average, pool, eval_scoring)
    write_markdown(cfg.out, text)
    print(text)
    return {
        "overhead": overhead,
        "scoring": scoring,
        "pool": pool,
        "eval_scoring": eval_scoring,
        "worker_startup_s": startup,
        "load_average": load_average,
    }


if __name__ == "__main__":
    run(EvalBenchConfig())
