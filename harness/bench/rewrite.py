"""Rewrite benchmark: `igpo rewrite-traces` against the local fake rewriter (harness/rewrite/fake_server.py).

(a) Throughput: 500 rows, every answer taking 0.2 s, `--concurrency 16`: the client must not be
    the bottleneck (ideal: 500 x 0.2 / 16 = 6.25 s).
(b) Faults: 500 rows of which 1 in 4 fail their first attempt (429 with Retry-After, 500, a stall
    past the timeout, a dropped connection, malformed JSON) and 1 in 12 fail every attempt, plus
    wrong, broken and too-long rewrites: every row must end kept, rejected or failed, once.
`python -m harness.bench.rewrite` writes results/bench/rewrite.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from harness.bench.common import machine_line, write_markdown

DEFAULT_OUT = Path("results/bench/rewrite.md")
ROWS = 500
LATENCY_S = 0.2
CONCURRENCY = 16
MIXED = ["", "", "", "#wrong", "#format", "#long", "#429", "#500", "#stall", "#drop", "#badjson", "#always500"]


def _data(path: Path, tags: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(ROWS):
            a, b = 3 + i % 7, 2 + i % 5
            f.write(
                json.dumps(
                    {
                        "question": f"Q{i} {tags[i % len(tags)]} Ava has {a} apples and finds {b} more .",
                        "answer": f"Then {a} + {b} = {a + b}.\n#### {a + b}",
                    }
                )
                + "\n"
            )
    return path


def _job(data: Path, out: Path, url: str, timeout: float):
    from harness.rewrite.client import ClientSettings
    from harness.rewrite.rows import PRESETS
    from harness.rewrite.run import RewriteJob

    client = ClientSettings(
        base_url=url, model="fake", concurrency=CONCURRENCY, timeout_s=timeout, max_attempts=3, backoff_s=0.05
    )
    return RewriteJob(input=data, out=out, fields=PRESETS["gsm8k"], client=client, max_tokens=120, progress=False)


def main() -> None:
    from harness.rewrite.fake_server import FakeRewriter
    from harness.rewrite.run import run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with FakeRewriter(latency_s=LATENCY_S) as server:
            started = time.perf_counter()
            clean = run(_job(_data(root / "clean.jsonl", [""]), root / "clean" / "out.jsonl", server.base_url, 5.0))
            clean_s = time.perf_counter() - started
        with FakeRewriter() as server:
            started = time.perf_counter()
            mixed = run(_job(_data(root / "mixed.jsonl", MIXED), root / "mixed" / "out.jsonl", server.base_url, 0.5))
            mixed_s = time.perf_counter() - started
    ideal = ROWS * LATENCY_S / CONCURRENCY
    lines = [
        "# Rewrite benchmark: igpo rewrite-traces against the local fake rewriter",
        "",
        f"{machine_line()}. `python -m harness.bench.rewrite`.",
        "",
        "| run | rows | kept | rejected (format / wrong / too long) | failed | missing | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r, secs in (
        ("clean, 0.2 s per answer, concurrency 16", clean, clean_s),
        ("mixed faults (1/4 fail once, 1/12 always), concurrency 16", mixed, mixed_s),
    ):
        rej = r["rejected"]
        lines.append(
            f"| {name} | {r['input_rows']} | {r['kept']} | {rej['format']} / {rej['wrong_answer']} / "
            f"{rej['too_long']} | {r['failed']} | {r['missing']} | {secs:.1f} |"
        )
    lines += [
        "",
        f"Ideal wall time of the clean run: {ideal:.2f} s ({ROWS} x {LATENCY_S} s / {CONCURRENCY}); "
        f"target: under 15 s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_markdown(DEFAULT_OUT, text)


if __name__ == "__main__":
    main()
