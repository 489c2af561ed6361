"""Helpers shared by benchmarks: peak memory, timing, machine description, atomic markdown."""

from __future__ import annotations

import os
import platform
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
RSS_POLL_S = 0.002
"""How often the CPU peak-memory sampler reads the resident set size."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@dataclass
class Peak:
    """Peak memory seen inside a `peak_memory()` block, above what was in use at its start."""

    bytes: int = 0
    kind: str = "rss"


@contextmanager
def peak_memory(device: str = "cpu"):
    """Measure peak memory: CUDA allocator peak on GPU, sampled resident set size on CPU."""
    peak = Peak(kind="cuda" if device.startswith("cuda") else "rss")
    if peak.kind == "cuda":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield peak
        torch.cuda.synchronize()
        peak.bytes = torch.cuda.max_memory_allocated() - base
        return
    base = _rss_bytes()
    top = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            top[0] = max(top[0], _rss_bytes())
            time.sleep(RSS_POLL_S)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak.bytes = max(top[0], _rss_bytes()) - base


def machine_line() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {cpu})"
    return f"{dev}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}"


def write_markdown(path: Path, text: str) -> None:
    """Write atomically so an interrupted benchmark never leaves half a table."""
    from igpo.atomic import atomic_write_text

    atomic_write_text(path, text)
