"""One math-verify worker process: what runs in it (this file, run by path: math-verify under
an interval timer, warmed up before it reports ready) and `VerifyWorker`, the handle that starts
it, sends it one pair at a time, and kills it past its time bound. The worker answers
``(correct, extracted, timed_out)``; :mod:`igpo.scoring.pool` hands workers to callers.

Each pair runs in a separate process so that every call is bounded in time from any thread
(math-verify's own ``signal.alarm`` timeout only works in the main thread)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from igpo.scoring.answers import parse_and_verify

logger = logging.getLogger(__name__)

INNER_BUDGET_FRACTION = 0.9
"""Share of the timeout the worker spends before interrupting itself (no restart needed)."""

WORKER_START_TIMEOUT_S = 120.0
"""How long to wait for a fresh worker to import math-verify (not counted in any timeout)."""

WORKER_STOP_TIMEOUT_S = 5.0
"""How long to wait for a killed worker to be reaped."""

_WORKER_RUN_NAME = "__igpo_verify_worker__"
"""``run_name`` under which this file runs as the worker (see :func:`_serve`)."""

_WORKER_BOOTSTRAP = (
    "import runpy, sys; sys.path[:] = [p for p in sys.path if p]; "
    f"runpy.run_path(sys.argv[1], run_name={_WORKER_RUN_NAME!r})"
)
"""Runs this file by path, with the cwd off ``sys.path`` (no file there shadows what it imports)."""

# --------------------------------------------------------------------------- inside the worker


class _BudgetExceeded(BaseException):
    """Raised inside the worker by its own interval timer (BaseException, like math-verify's)."""


def _raise_budget_exceeded(signum: int, frame: object) -> None:
    """SIGALRM handler of the worker."""
    raise _BudgetExceeded


WARMUP_PAIRS = (
    ("\\boxed{\\frac{1}{2}}", "\\boxed{0.5}"),
    ("\\boxed{x^2 + 1}", "\\boxed{1 + x^2}"),
    ("\\boxed{y = 2x + 3}", "\\boxed{3}"),
    ("\\boxed{(1, \\frac{\\pi}{2})}", "\\boxed{36^\\circ}"),
    ("\\boxed{(-\\infty, 2) \\cup (3, \\infty)}", "\\boxed{(0, 9) \\cup [9, 36]}"),
    ("\\boxed{\\{1 \\pm \\sqrt{5}, -2\\}}", "\\boxed{(8, -2)}"),
    ("\\boxed{\\begin{pmatrix} -1/3 \\\\ 2/3 \\end{pmatrix}}", "\\boxed{52_8}"),
    ("\\boxed{\\text{Navin}}", "\\boxed{x^3 + x + 1}"),
    ("\\boxed{3R^2}", "\\boxed{\\frac{11 + 9a}{20}}"),
    ("\\boxed{15\\mbox{ cm}^2}", "\\boxed{5.4 \\text{ cents}}"),
    ("\\boxed{2\\sqrt{3} + i}", "\\boxed{\\sin 30^\\circ}"),
)
"""Answer shapes the worker verifies once before it reports ready, so that sympy's and
latex2sympy's first-use costs (lazy imports, caches: up to 0.3 s for the first interval or
matrix) are paid at start-up, not by the first responses of an evaluation."""
WARMUP_BUDGET_S = 2.0
"""Time bound of each warm-up pair (a pair over it is skipped)."""


def _bounded_verify(gold: str, response: str, budget_s: float) -> tuple[bool, str | None]:
    """`parse_and_verify` under the worker's interval timer; raises _BudgetExceeded past
    ``budget_s`` seconds (the timer is always cleared)."""
    try:
        signal.setitimer(signal.ITIMER_REAL, budget_s)
        return parse_and_verify(gold, response)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _warm_up() -> None:
    """Verify WARMUP_PAIRS, each bounded by WARMUP_BUDGET_S; failures are ignored."""
    for gold, response in WARMUP_PAIRS:
        try:
            _bounded_verify(gold, response, WARMUP_BUDGET_S)
        except BaseException:  # noqa: BLE001  (the budget, or a math-verify failure: skip it)
            continue


def _serve(read_fd: int, write_fd: int) -> None:
    """Worker loop: answer ``(gold, response, budget_s)`` requests until EOF or ``None``."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (import once before reporting ready)

    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    signal.signal(signal.SIGALRM, _raise_budget_exceeded)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _warm_up()
    outbox.send("ready")
    while True:
        try:
            request = inbox.recv()
        except EOFError:
            return
        if request is None:
            return
        gold, response, budget_s = request
        try:
            correct, extracted = _bounded_verify(gold, response, budget_s)
            reply = (correct, extracted, False)
        except _BudgetExceeded:
            reply = (False, None, True)
        except Exception:  # noqa: BLE001  (a scoring bug must not kill the worker)
            logger.debug("math-verify failed", exc_info=True)
            reply = (False, None, False)
        outbox.send(reply)


# --------------------------------------------------------------------------- the handle


class VerifyWorker:
    """One lazily started math-verify subprocess; the pool hands it to one caller at a time.
    `count` is called with "worker_starts" and "worker_kills" (the pool's counters)."""

    def __init__(self, count: Callable[[str], None]) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._inbox: Connection | None = None
        self._outbox: Connection | None = None
        self._owner_pid = os.getpid()

    def reset_after_fork(self) -> None:
        """Forget a worker inherited through fork (it belongs to the parent)."""
        self._lock = threading.Lock()
        self._proc = self._inbox = self._outbox = None
        self._owner_pid = os.getpid()

    def alive(self) -> bool:
        """Whether this process owns a running worker."""
        return self._proc is not None and self._proc.poll() is None and self._owner_pid == os.getpid()

    def _start(self) -> None:
        """Spawn the worker and wait until math-verify is imported."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _WORKER_BOOTSTRAP,
                    str(Path(__file__).resolve()),
                    str(to_child_r),
                    str(from_child_w),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._outbox = Connection(to_child_w, readable=False)
        self._inbox = Connection(from_child_r, writable=False)
        self._owner_pid = os.getpid()
        if not self._inbox.poll(WORKER_START_TIMEOUT_S):
            self._stop()
            raise RuntimeError("math-verify worker did not start")
        try:
            self._inbox.recv()
        except EOFError as err:
            self._stop()
            raise RuntimeError("math-verify worker exited at start-up (is math-verify installed?)") from err
        self._count("worker_starts")

    def _stop(self) -> None:
        """Kill the worker and close its pipes."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            try:
                self._proc.wait(WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("math-verify worker %d did not exit", self._proc.pid)
        for conn in (self._inbox, self._outbox):
            if conn is not None:
                conn.close()
        self._proc = self._inbox = self._outbox = None

    def close(self) -> None:
        """Stop the worker (it is restarted lazily on the next call)."""
        with self._lock:
            if self._owner_pid == os.getpid():
                self._stop()

    def ensure_started(self) -> None:
        """Start the worker unless this process already runs one; a failed start is left to the
        next `run`, which retries it and raises."""
        with self._lock:
            try:
                self._ensure_alive()
            except RuntimeError:
                logger.debug("math-verify worker did not start", exc_info=True)

    def _ensure_alive(self) -> None:
        """Start a worker unless this process runs one: a dead one of ours is stopped first (its
        pipes closed), one inherited through fork is forgotten. Called with the lock held."""
        if self.alive():
            return
        if self._owner_pid == os.getpid():
            self._stop()
        else:
            self.reset_after_fork()
        self._start()

    def run(self, gold: str, response: str, timeout_s: float) -> tuple[bool, str | None, bool]:
        """``(correct, extracted, timed_out)`` for one pair, bounded by ``timeout_s``."""
        with self._lock:
            self._ensure_alive()
            assert self._inbox is not None and self._outbox is not None
            try:
                self._outbox.send((gold, response, timeout_s * INNER_BUDGET_FRACTION))
                if self._inbox.poll(timeout_s):
                    return self._inbox.recv()
            except (EOFError, OSError):
                logger.warning("math-verify worker died; restarting it")
                self._stop()
                return False, None, False
            except BaseException:  # e.g. KeyboardInterrupt: do not leave the worker computing
                self._stop()
                raise
            self._count("worker_kills")
            self._stop()
            return False, None, True


if __name__ == _WORKER_RUN_NAME:
    _serve(int(sys.argv[-2]), int(sys.argv[-1]))
