"""Rewrite benchmark: `igpo rewrite-traces` against the local fake rewriter (harness/rewrite/fake_server.py).

(a) Throughput: 500 rows, every answer taking 0.2 s, `--concurrency 16`: the client must not be
    the bottleneck (ideal: 500 x 0.2 / 16 = 6.25 s).
(b) Faults: 500 rows of which 5 in 12 fail their first attempt (429 with Retry-After, 500, a
    stall past the timeout, a dropped connection, malformed JSON) and 1 in 12 fail every attempt,
    plus wrong, broken and too-long rewrites: every row must end kept, rejected or failed, once.
(c) The same run killed with SIGKILL mid-way (a subprocess, against a fresh server) and rerun:
    its three files must hold the same rows as the uninterrupted run's.
`python -m harness.bench.rewrite` writes results/bench/rewrite.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness.bench.common import machine_line, write_markdown
from harness.markdown import table

DEFAULT_OUT = Path("results/bench/rewrite.md")
ROWS = 500
LATENCY_S = 0.2
CONCURRENCY = 16


def _data(path: Path, tags: Sequence[str]) -> Path:
    from harness.rewrite.fake_server import write_rows

    return write_rows(path, ROWS, tags)


def _job(data: Path, out: Path, url: str, timeout: float):
    from harness.rewrite.client import ClientSettings
    from harness.rewrite.rows import PRESETS
    from harness.rewrite.run import RewriteJob

    client = ClientSettings(
        base_url=url, model="fake", concurrency=CONCURRENCY, timeout_s=timeout, max_attempts=3, backoff_s=0.05
    )
    return RewriteJob(input=data, out=out, fields=PRESETS["gsm8k"], client=client, max_tokens=120, progress=False)


def _killed_then_rerun(data: Path, out: Path, url: str, kill_after: int) -> int:
    """Run the CLI in a subprocess, SIGKILL it once `kill_after` rows are kept, rerun in-process;
    returns how many rows were finished at the kill."""
    import os
    import signal
    import subprocess
    import sys

    from harness.rewrite.fake_server import cli_args
    from harness.rewrite.run import OUTPUTS, done_ids, run

    files = [path for name, path in _job(data, out, url, 0.5).files().items() if name in OUTPUTS]
    cmd = [
        sys.executable,
        "-m",
        "harness.cli",
        *cli_args(data, out, url, timeout_s=0.5),
        "--concurrency",
        str(CONCURRENCY),
    ]
    proc = subprocess.Popen(
        cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while proc.poll() is None and len(done_ids(files[:1])) < kill_after:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = len(done_ids(files))
    run(_job(data, out, url, 0.5))
    return at_kill


def _same_rows(a: Path, b: Path) -> bool:
    for suffix in (".jsonl", ".rejects.jsonl", ".failures.jsonl"):
        x, y = (sorted(p.with_suffix(suffix).read_text().splitlines()) for p in (a, b))
        if suffix == ".failures.jsonl":  # attempt counts of a request cut by the kill may differ
            x, y = sorted(json.loads(r)["id"] for r in x), sorted(json.loads(r)["id"] for r in y)
        if x != y:
            return False
    return True


def main() -> None:
    from harness.rewrite.fake_server import MIXED_BEHAVIOURS, FakeRewriter
    from harness.rewrite.run import run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with FakeRewriter(latency_s=LATENCY_S) as server:
            started = time.perf_counter()
            clean = run(_job(_data(root / "clean.jsonl", [""]), root / "clean" / "out.jsonl", server.base_url, 5.0))
            clean_s = time.perf_counter() - started
        with FakeRewriter() as server:
            started = time.perf_counter()
            mixed = run(
                _job(_data(root / "mixed.jsonl", MIXED_BEHAVIOURS), root / "mixed" / "out.jsonl", server.base_url, 0.5)
            )
            mixed_s = time.perf_counter() - started
        with FakeRewriter() as server:
            at_kill = _killed_then_rerun(root / "mixed.jsonl", root / "killed" / "out.jsonl", server.base_url, 150)
        same = _same_rows(root / "mixed" / "out.jsonl", root / "killed" / "out.jsonl")
    ideal = ROWS * LATENCY_S / CONCURRENCY
    lines = [
        "# Rewrite benchmark: igpo rewrite-traces against the local fake rewriter",
        "",
        f"{machine_line()}. `python -m harness.bench.rewrite`.",
        "",
    ]
    runs = []
    for name, r, secs in (
        ("clean, 0.2 s per answer, concurrency 16", clean, clean_s),
        ("mixed faults (5/12 fail once, 1/12 always), concurrency 16", mixed, mixed_s),
    ):
        rej = r["rejected"]
        rejected = f"{rej['format']} / {rej['wrong_answer']} / {rej['too_long']}"
        runs.append([name, r["input_rows"], r["kept"], rejected, r["failed"], r["missing"], f"{secs:.1f}"])
    headers = ["run", "rows", "kept", "rejected (format / wrong / too long)", "failed", "missing", "wall s"]
    lines.append(table(headers, runs))
    lines += [
        "",
        f"Ideal wall time of the clean run: {ideal:.2f} s ({ROWS} x {LATENCY_S} s / {CONCURRENCY}); "
        f"target: under 15 s.",
        f"Killed with SIGKILL after {at_kill} of {ROWS} rows were finished, then rerun: the same kept, rejected and "
        f"failed rows as the uninterrupted mixed run: {same}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_markdown(DEFAULT_OUT, text)


if __name__ == "__main__":
    main()
