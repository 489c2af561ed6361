"""Crash soak: `igpo eval` killed with SIGKILL at random moments, then finished.

One uninterrupted run of `igpo eval --tasks arith` is the reference. A second run into its own
folder is killed with SIGKILL `kills` times in a row, each time at a random moment after the
response cache has grown by 1..`max_progress` lines since the last start (so every attempt
makes progress and dies mid-run), then run to completion. Decoding one prompt at a time
(`--batch-size 1`) means at most the one request in flight is lost per kill.

Measured: whether the final samples equal the reference's response for response; responses
lost (finished, then missing); finished responses decoded twice (duplicate cache keys); torn
cache lines left by the kills; and how many requests the finishing run still had to decode.
`python -m harness.bench.soak [--limit 40] [--kills 5] [--seed 0]` writes results/bench/soak.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.bench.common import machine_line, write_markdown
from harness.markdown import table

DEFAULT_OUT = Path("results/bench/soak.md")
CACHE = "responses.jsonl"
POLL_S = 0.05
ATTEMPT_TIMEOUT_S = 600


def _eval_command(out: Path, name: str, limit: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "harness.cli",
        "eval",
        "--tasks",
        "arith",
        "--limit",
        str(limit),
        "--batch-size",
        "1",
        "--out",
        str(out),
        "--name",
        name,
        "--no-leaderboard",
    ]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n") if path.is_file() else []


def _complete(path: Path) -> int:
    """Complete (newline-terminated) lines of the cache."""
    return max(0, len(_lines(path)) - 1)


def _kill_after_progress(cmd: list[str], cache: Path, grow: int) -> int:
    """Start `cmd`, SIGKILL it once the cache holds `grow` more complete lines; lines at the kill."""
    start = _complete(cache)
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + ATTEMPT_TIMEOUT_S
    while proc.poll() is None and _complete(cache) < start + grow and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return _complete(cache)


def soak(limit: int, kills: int, max_progress: int, seed: int) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="igpo-soak-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        ref = subprocess.run(_eval_command(root, "reference", limit), env=_env(), capture_output=True, text=True)
        if ref.returncode:
            raise RuntimeError(f"reference run failed: {ref.stderr[-2000:]}")
        reference_s = time.perf_counter() - started
        cache = root / "soaked" / CACHE
        at_kill = [
            _kill_after_progress(_eval_command(root, "soaked", limit), cache, rng.randint(1, max_progress))
            for _ in range(kills)
        ]
        torn = sum(1 for line in _lines(cache) if line.strip() and not _parses(line))
        final = subprocess.run(_eval_command(root, "soaked", limit), env=_env(), capture_output=True, text=True)
        if final.returncode:
            raise RuntimeError(f"finishing run failed: {final.stderr[-2000:]}")
        keys = [json.loads(line)["key"] for line in _lines(cache) if line.strip() and _parses(line)]
        record = json.loads((root / "soaked" / "results.json").read_text())
        ours = [json.loads(x)["response"] for x in (root / "soaked" / "samples.jsonl").read_text().splitlines()]
        theirs = [json.loads(x)["response"] for x in (root / "reference" / "samples.jsonl").read_text().splitlines()]
        prov = record["provenance"]
        return {
            "limit": limit,
            "kills": kills,
            "seed": seed,
            "reference_seconds": round(reference_s, 1),
            "cache_lines_at_each_kill": at_kill,
            "kills_during_decoding": sum(1 for n in at_kill if n < limit),
            "torn_lines_left": torn,
            "duplicate_keys": len(keys) - len(set(keys)),
            "finishing_run_decoded": prov["requests_decoded"],
            "finishing_run_from_cache": prov["requests_from_cache"],
            "responses_lost": max(0, at_kill[-1] - prov["requests_from_cache"]) if at_kill else 0,
            "samples_equal_reference": ours == theirs,
            "samples": len(ours),
        }


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def report(r: dict) -> str:
    verdict = (
        "pass" if (r["samples_equal_reference"] and r["responses_lost"] == 0 and r["duplicate_keys"] == 0) else "FAIL"
    )
    return "\n".join(
        [
            "# Crash soak: igpo eval under SIGKILL",
            "",
            f"{machine_line()}. `python -m harness.bench.soak --limit {r['limit']} --kills {r['kills']} --seed {r['seed']}`.",
            "",
            table(
                ["measure", "value"],
                [
                    ["problems (igpo_arith, batch size 1)", r["limit"]],
                    ["SIGKILLs in a row", f"{r['kills']} (all during decoding: {r['kills_during_decoding']})"],
                    [
                        "finished responses in the cache at each kill",
                        ", ".join(map(str, r["cache_lines_at_each_kill"])),
                    ],
                    ["torn cache lines left by the kills", r["torn_lines_left"]],
                    ["finished responses lost", r["responses_lost"]],
                    ["finished responses decoded twice", r["duplicate_keys"]],
                    ["requests redone (in flight at a kill, at most 1 per kill)", f"<= {r['kills_during_decoding']}"],
                    [
                        "finishing run: decoded / from cache",
                        f"{r['finishing_run_decoded']} / {r['finishing_run_from_cache']}",
                    ],
                    [
                        "final samples equal the uninterrupted run's",
                        f"{r['samples_equal_reference']} ({r['samples']} samples)",
                    ],
                    ["verdict", verdict],
                ],
            ),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--max-progress", type=int, default=6, help="Most cache lines gained before a kill.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for flag, value, least in (
        ("--limit", args.limit, 1),
        ("--kills", args.kills, 0),
        ("--max-progress", args.max_progress, 1),
    ):
        if value < least:
            parser.error(f"{flag} must be >= {least}, got {value}")
    result = soak(args.limit, args.kills, args.max_progress, args.seed)
    text = report(result)
    print(text)
    write_markdown(args.out, text)
    if "FAIL" in text:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
