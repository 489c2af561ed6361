"""Does the SFT-data rewriting stage matter? A testbed-scale demonstration, fixed grid, one seed.

Training data: 4,000 arith problems (1-6 operations, seed 2, as `sft_tiny`) with *verbose*
traces (`igpo.arith.verbose_trace`: each step followed by a redundant inverse check and a
restated result; 16 tokens per operation, so 3+ operations overflow the 48-token canvas).
`igpo rewrite-traces` sends them to the deterministic local rewriter
(harness/rewrite/fake_server.py), which removes the checks, with `--max-tokens 48`. Then the
same `sft_tiny` SFT (LoRA, 60 steps of 16, seed 0) from the embedded model on:

- verbose, overlong dropped: only the problems whose verbose trace fits;
- verbose, overlong truncated: every problem, cut at the canvas (the answer often lost);
- rewritten (concise), overlong dropped;

each evaluated greedily on the fixed igpo_arith test set (300 problems) beside the start model.
`python -m harness.bench.sft_data` writes results/testbed/sft_data.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from harness.lmeval.model import apply_adapter
from harness.markdown import table
from harness.rewrite.client import ClientSettings
from harness.rewrite.fake_server import FakeRewriter
from harness.rewrite.rows import Preset
from harness.rewrite.run import RewriteJob, run
from igpo.arith import ArithConfig, generate_problems, test_set, verbose_trace
from igpo.atomic import atomic_write_text
from igpo.config import load_config, resolve_recipe
from igpo.models import load_model, load_tokenizer
from igpo.scoring.pool import verify_answer
from igpo.testbed import TESTBED_DECODE, TESTBED_DIR
from igpo.testbed.measure import solve
from igpo.training.sft import SFTConfig, train_sft

DEFAULT_OUT = Path("results/testbed/sft_data.md")
TRAIN_SEED = 2
TRAIN_SIZE = 4000
COMMON = ["data.source=jsonl", "data.instruction=", "seed=0", "log.progress=false", "checkpoint.every=60"]


def _accuracy(adapter: Path | None) -> tuple[float, dict[int, float]]:

    model, tok = load_model(str(TESTBED_DIR), device="cpu"), load_tokenizer(str(TESTBED_DIR))
    if adapter is not None:
        model = apply_adapter(model, str(adapter))
    problems = test_set(50)
    ok = [
        verify_answer(p.answer, a).correct
        for p, a in zip(problems, solve(model, tok, [p.question for p in problems]), strict=True)
    ]
    levels = {lv: 100 * sum(o for p, o in zip(problems, ok, strict=True) if p.steps == lv) / 50 for lv in range(1, 7)}
    return 100 * sum(ok) / len(ok), levels


def main() -> None:

    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="igpo-sft-data-") as tmp:
        root = Path(tmp)
        problems = generate_problems(ArithConfig(min_steps=1, max_steps=6, seed=TRAIN_SEED), TRAIN_SIZE)
        verbose = root / "verbose.jsonl"
        verbose.write_text(
            "".join(
                json.dumps(
                    {
                        "prompt": p.question,
                        "completion": verbose_trace(p.trace).removeprefix("<reasoning>").lstrip(),
                        "answer": p.answer,
                        "trace": verbose_trace(p.trace),
                    }
                )
                + "\n"
                for p in problems
            )
        )
        concise = root / "concise.jsonl"
        with FakeRewriter() as server:
            client = ClientSettings(base_url=server.base_url, model="fake-rewriter", concurrency=16, timeout_s=10)
            summary = run(
                RewriteJob(
                    input=verbose,
                    out=concise,
                    client=client,
                    max_tokens=TESTBED_DECODE.gen_length,  # the canvas
                    progress=False,
                    fields=Preset(question="prompt", trace="trace", answer="answer"),
                )
            )
        cells = [
            ("verbose, overlong dropped", verbose, "drop"),
            ("verbose, overlong truncated", verbose, "truncate"),
            ("rewritten (concise), overlong dropped", concise, "drop"),
        ]
        base_acc, base_levels = _accuracy(None)
        rows.append(("start model (no SFT)", "-", base_acc, base_levels))
        for name, data, overlong in cells:
            cfg = load_config(
                SFTConfig, resolve_recipe("sft_tiny"), [*COMMON, f"data.path={data}", f"data.overlong={overlong}"]
            )
            out = root / name.split(",")[0].split(" ")[0] / overlong
            train_sft(cfg, out, overwrite=True)
            kept = _kept(cfg, data)
            acc, levels = _accuracy(out / "checkpoints" / "step-000060")
            rows.append((name, kept, acc, levels))
    lines = [
        "# SFT data: verbose traces vs their rewrites (testbed)",
        "",
        "`python -m harness.bench.sft_data`; one seed; greedy on igpo_arith (300 problems, 50 per level).",
        "",
        f"Rewriting: {summary['input_rows']} rows -> {summary['kept']} kept, rejected {summary['rejected']}, "
        f"{summary['failed']} failed.",
        "",
        table(
            ["SFT data", "examples used", "accuracy %", *(f"L{lv}" for lv in range(1, 7))],
            [
                [name, kept, f"{acc:.1f}", *(f"{levels[lv]:.0f}" for lv in range(1, 7))]
                for name, kept, acc, levels in rows
            ],
        ),
    ]
    lines += ["", f"Wall time {time.perf_counter() - started:.0f} s on 2 CPU cores.", ""]
    text = "\n".join(lines)
    print(text)

    atomic_write_text(DEFAULT_OUT, text)


def _kept(cfg, data: Path) -> str:
    """How many examples SFT used (the length filter's count, recomputed)."""

    tok = load_tokenizer(str(TESTBED_DIR))
    lengths = [
        len(tok(json.loads(x)["completion"], add_special_tokens=False)["input_ids"]) + 1
        for x in data.read_text().splitlines()
    ]
    fits = sum(n <= cfg.data.max_completion_tokens for n in lengths)
    return f"{fits} of {len(lengths)}" if cfg.data.overlong == "drop" else f"{len(lengths)} ({len(lengths) - fits} cut)"


if __name__ == "__main__":
    main()
