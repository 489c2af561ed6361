"""Report size and time-to-interactive for a 2,000-sample run against a perturbed copy
(`python -m harness.bench.report`; writes results/bench/report.md).

The run is synthetic but shaped like a GSM8K evaluation: 2,000 items, prompts of about 600
characters and responses of about 900 (256-token completions); the copy flips every 10th
verdict. Measured for the run alone and for the run against the baseline. Time-to-interactive: from
navigation to the page script's ready mark, in Debian's headless Chromium with the network cut
off, median of 3 loads.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from harness.bench.common import machine_line, write_markdown
from harness.markdown import table

ITEMS = 2000
FLIP_EVERY = 10
LOADS = 3
SIZE_TARGET_MB = 5.0
READY_TARGET_S = 2.0
DEFAULT_OUT = Path("results/bench/report.md")


def synthetic_run(folder: Path, flip: bool) -> Path:
    """A valid run folder with ITEMS one-sample items (flip: every FLIP_EVERY-th verdict inverted)."""
    from harness.eval.records import ModelInfo, ProtocolInfo, RunRecord, TaskResult
    from harness.eval.results import write_results
    from harness.eval.stats import accuracy_interval

    rows = []
    for i in range(ITEMS):
        correct = (i % 3 != 0) != (flip and i % FLIP_EVERY == 0)
        steps = " ".join(f"Step {k}: {i + k} + {k} = {i + 2 * k} ." for k in range(20))
        rows.append(
            {
                "task": "igpo_gsm8k",
                "doc_id": i,
                "seed": 0,
                "repeat": 0,
                "prompt": f"Question {i}: " + "A farmer has some apples and sells a few of them at the market. " * 9,
                "response": steps + f" </reasoning> <answer> \\boxed{{{i if correct else -i}}} </answer>",
                "extracted": str(i if correct else -i),
                "gold": str(i),
                "correct": correct,
                "strict_correct": correct,
                "timed_out": False,
                "hit_length": i % 17 == 0,
            }
        )
    acc, ci, se, kind = accuracy_interval([float(r["correct"]) for r in rows], 1)
    task = TaskResult("igpo_gsm8k", "exact_match", acc, ITEMS, 1, ci, kind, se, seeds=[0])
    record = RunRecord(
        tasks={"igpo_gsm8k": task},
        model=ModelInfo(name_or_path="synthetic"),
        protocol=ProtocolInfo(name="igpo", seeds=[0], seeds_run=[0]),
        run_name=folder.name,
        label=folder.name,
    )
    folder.mkdir(parents=True, exist_ok=True)
    write_results(folder, record, rows)
    return folder


def measure(page: Path) -> dict:
    """Size, time to interactive (LOADS loads), console errors, requests and flipped items shown."""
    from harness.report.browser import open_report

    ready, errors, requests, flips = [], 0, 0, 0
    for _ in range(LOADS):
        with open_report(page) as (browser_page, log):
            ready.append(log.ready_s)
            errors += len(log.console_errors)
            requests += len(log.requests)
            flips = browser_page.locator(".flip").count()
    return {"mb": page.stat().st_size / 1e6, "ready": ready, "errors": errors, "requests": requests, "flips": flips}


def run(out: Path = DEFAULT_OUT) -> str:
    from harness.report import write_report

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = synthetic_run(Path(tmp) / "baseline", flip=False)
        cand = synthetic_run(Path(tmp) / "candidate", flip=True)
        for name, baseline, expected in (
            (f"one run ({ITEMS:,} samples)", None, 0),
            (f"run vs baseline ({2 * ITEMS:,} samples, paired comparison)", base, ITEMS // FLIP_EVERY),
        ):
            started = time.perf_counter()
            page = write_report([cand], Path(tmp) / "report.html", baseline=baseline)
            build_s = time.perf_counter() - started
            m = measure(page)
            rows.append(
                [
                    name,
                    f"{m['mb']:.2f}",
                    f"{build_s:.2f}",
                    f"{statistics.median(m['ready']):.2f} ({', '.join(f'{r:.2f}' for r in m['ready'])})",
                    f"{m['errors']} / {m['requests']}",
                    f"{m['flips']} (expected {expected})",
                ]
            )
    text = "\n".join(
        [
            "# Report size and time-to-interactive",
            "",
            f"{machine_line()}. `python -m harness.bench.report`.",
            "",
            f"Synthetic GSM8K-shaped runs: {ITEMS:,} items, pass@1, prompts of about 600 characters, responses of"
            f" about 900; the candidate flips every {FLIP_EVERY}th verdict. Targets: under {SIZE_TARGET_MB:g} MB,"
            f" interactive in under {READY_TARGET_S:g} s (navigation to the script's ready mark, headless"
            f" Chromium, network cut off; median of {LOADS} loads).",
            "",
            table(
                ["page", "MB", "build s", "interactive s (all loads)", "console errors / requests", "flipped items"],
                rows,
            ),
            "",
        ]
    )
    write_markdown(out, text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    print(run(parser.parse_args(argv).out))


if __name__ == "__main__":
    main()
