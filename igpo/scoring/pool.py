"""Verification on a bounded pool of math-verify workers, shared by evaluation and RL rewards.

:func:`verify_answer` (and :func:`verify_answers` for many pairs at once) is math-verify
correctness as :mod:`igpo.scoring.answers` defines it: :func:`~igpo.scoring.answers.fast_verdict`
where it decides, else a worker process (:mod:`igpo.scoring.worker`) of a pool sized to the
cores, so every call is bounded in time from any thread and many pairs score in parallel.
:func:`shared_verdicts` / :func:`verify_ahead` verify each pair of an evaluation once.

This module must stay importable without torch, ``harness`` or ``tasks`` (RL code imports it)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from igpo.errors import InvalidSetting
from igpo.scoring.answers import Score, fast_verdict, gold_for_math_verify
from igpo.scoring.worker import VerifyWorker

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
"""Default wall-clock bound for one math-verify parse+verify (seconds)."""

# --------------------------------------------------------------------------- stats

_STATS: Counter[str] = Counter()
_STATS_LOCK = threading.Lock()


def _count(key: str, n: int = 1) -> None:
    """Increment one process-wide scoring statistic."""
    with _STATS_LOCK:
        _STATS[key] += n


def scoring_stats() -> dict[str, int]:
    """Process-wide counters: verify calls, fast-path hits, worker calls, timeouts, restarts."""
    with _STATS_LOCK:
        return dict(_STATS)


def timeout_count() -> int:
    """Number of :func:`verify_answer` calls that hit their time bound in this process."""
    with _STATS_LOCK:
        return _STATS["timeouts"]


def reset_scoring_stats() -> None:
    """Zero all counters (e.g. between evaluation runs)."""
    with _STATS_LOCK:
        _STATS.clear()


# --------------------------------------------------------------------------- the pool

WORKERS_ENV = "IGPO_SCORING_WORKERS"
"""Environment variable that sets the pool size (a positive integer); default: the usable cores."""

MAX_DEFAULT_WORKERS = 16
"""Upper bound of the default pool size (each worker holds sympy: about 150 MB)."""


def default_worker_count() -> int:
    """$IGPO_SCORING_WORKERS if set, else the cores this process may run on (at most
    MAX_DEFAULT_WORKERS)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise InvalidSetting(f"${WORKERS_ENV} must be a positive integer, got {raw!r}")
        return int(raw)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


class _WorkerPool:
    """Math-verify workers shared by all threads of this process, started as concurrency needs
    them (a caller takes the most recently used idle worker, else starts one while the pool is
    below its size, else waits), so a sequential caller only ever runs one."""

    def __init__(self) -> None:
        self._size: int | None = None
        self.reset_after_fork()

    def reset_after_fork(self) -> None:
        """Forget workers inherited through fork (they belong to the parent)."""
        self._cond = threading.Condition()
        self._workers: list[VerifyWorker] = []
        self._idle: list[VerifyWorker] = []

    def size(self) -> int:
        """The most workers this pool runs at once."""
        return self._size if self._size is not None else default_worker_count()

    def resize(self, size: int | None) -> None:
        """Set the size (None: the default); idle workers over it are stopped now, busy ones when
        they are handed back."""
        if size is not None and size < 1:
            raise InvalidSetting(f"the scoring pool needs at least one worker, got {size}")
        with self._cond:
            self._size = size
            surplus = self._trim()
            self._cond.notify_all()
        for worker in surplus:
            worker.close()

    def _trim(self) -> list[VerifyWorker]:
        """Remove idle workers over the size (lock held); the caller stops them."""
        surplus = []
        while len(self._workers) > self.size() and self._idle:
            worker = self._idle.pop(0)
            self._workers.remove(worker)
            surplus.append(worker)
        return surplus

    def _acquire(self) -> VerifyWorker:
        with self._cond:
            while True:
                if self._idle:  # a running worker first (the most recently used), then any
                    running = [i for i, worker in enumerate(self._idle) if worker.alive()]
                    return self._idle.pop(running[-1] if running else -1)
                if len(self._workers) < self.size():
                    worker = VerifyWorker(_count)
                    self._workers.append(worker)
                    return worker
                self._cond.wait()

    def _release(self, worker: VerifyWorker) -> None:
        with self._cond:
            self._idle.append(worker)
            surplus = self._trim()
            self._cond.notify()
        for extra in surplus:
            extra.close()

    def run(self, gold: str, response: str, timeout_s: float) -> tuple[bool, str | None, bool]:
        """One pair on one worker (see `igpo.scoring.worker.VerifyWorker.run`)."""
        worker = self._acquire()
        try:
            return worker.run(gold, response, timeout_s)
        finally:
            self._release(worker)

    def ensure_one_started(self) -> None:
        """Start the first worker unless it runs; a caller that takes it meanwhile waits for it."""
        with self._cond:
            if not self._workers:
                worker = VerifyWorker(_count)
                self._workers.append(worker)
                self._idle.append(worker)
            first = self._workers[0]
        first.ensure_started()

    def close(self) -> None:
        """Stop every worker (each restarts lazily on the next call)."""
        with self._cond:
            workers = list(self._workers)
        for worker in workers:
            worker.close()

    def running(self) -> int:
        """How many workers of this process have a live process."""
        with self._cond:
            return sum(worker.alive() for worker in self._workers)


_POOL = _WorkerPool()
atexit.register(_POOL.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_POOL.reset_after_fork)


def worker_count() -> int:
    """The size of the math-verify worker pool."""
    return _POOL.size()


def set_worker_count(count: int | None) -> None:
    """Size the math-verify worker pool (None: $IGPO_SCORING_WORKERS or the cores)."""
    _POOL.resize(count)


def running_workers() -> int:
    """How many math-verify worker processes this process runs now."""
    return _POOL.running()


def start_worker_in_background() -> threading.Thread:
    """Start one math-verify worker (and its warm-up) in a daemon thread, so that an evaluation
    that will need it pays its start-up while the model decodes; a call that needs the worker
    before it is ready waits for it (the worker's lock), a running worker is left as it is; more
    workers start when concurrent calls need them."""

    thread = threading.Thread(target=_POOL.ensure_one_started, name="math-verify-start", daemon=True)
    thread.start()
    return thread


def shutdown_worker() -> None:
    """Stop the math-verify worker processes now (they restart lazily when needed)."""
    _POOL.close()


# --------------------------------------------------------------------------- verify_answer

_VERDICTS: dict[tuple[str, str, float], Score] | None = None
"""Set inside `shared_verdicts()`: each (gold, response) verified once there."""


@contextlib.contextmanager
def shared_verdicts():
    """Within this block each (gold, response) pair is verified once and its Score reused: an
    evaluation scores a response in lm-eval's metrics and again for its samples row; with this,
    both read the one verdict (and a hanging response waits out its time bound once)."""
    global _VERDICTS
    outer = _VERDICTS
    _VERDICTS = {} if outer is None else outer
    try:
        yield
    finally:
        _VERDICTS = outer


def verify_ahead(pairs: Iterable[tuple[str, str]], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Inside `shared_verdicts()`: verify every distinct ``(gold, response)`` not verified yet at
    once, with :func:`verify_answers` on the worker pool, so that the calls that follow one item at
    a time (lm-eval's metric per document, the samples rows) read the kept verdict instead of
    scoring one response at a time on one worker. Returns how many pairs it verified. Outside the
    block nothing would keep the verdicts: it verifies nothing and returns 0."""
    if _VERDICTS is None:
        return 0
    with _STATS_LOCK:
        todo = [pair for pair in dict.fromkeys(pairs) if (*pair, timeout_s) not in _VERDICTS]
    verify_answers(todo, timeout_s=timeout_s)
    return len(todo)


def verify_answer(gold: str, response: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Score:
    """`_verify` once per (gold, response) inside `shared_verdicts()`, else every call."""
    if _VERDICTS is None:
        return _verify(gold, response, timeout_s)
    key = (gold, response, timeout_s)
    with _STATS_LOCK:
        hit = _VERDICTS.get(key)
    if hit is not None:
        _count("shared_verdicts")
        return hit
    score = _verify(gold, response, timeout_s)
    with _STATS_LOCK:
        _VERDICTS[key] = score
    return score


def _verify(gold: str, response: str, timeout_s: float) -> Score:
    """math-verify correctness of ``response`` against ``gold``, bounded by ``timeout_s``.

    :func:`fast_verdict` where it decides; otherwise ``verify(parse(gold), parse(response))``
    runs in a worker of the pool; on timeout the worker is replaced and the result is wrong with
    ``timed_out=True``.
    """
    if timeout_s <= 0:
        raise InvalidSetting(f"timeout_s must be positive, got {timeout_s}")
    _count("verify_calls")
    if (fast := fast_verdict(gold, response)) is not None:
        _count("fast_path")
        return Score(correct=fast[0], extracted=fast[1], timed_out=False)
    _count("worker_calls")
    started = time.perf_counter()
    correct, extracted, timed_out = _POOL.run(gold_for_math_verify(gold), response, timeout_s)
    if timed_out:
        _count("timeouts")
        logger.warning("math-verify timed out after %.1fs", time.perf_counter() - started)
    return Score(correct=correct, extracted=extracted, timed_out=timed_out)


def verify_answers(pairs: Sequence[tuple[str, str]], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[Score]:
    """:func:`verify_answer` of every ``(gold, response)``, in order; the pairs math-verify must
    read run on the worker pool, one thread per worker, so they score in parallel."""
    pairs = list(pairs)
    slow = [i for i, (gold, response) in enumerate(pairs) if fast_verdict(gold, response) is None]
    threads = min(len(slow), worker_count())
    if threads <= 1:
        return [verify_answer(gold, response, timeout_s=timeout_s) for gold, response in pairs]
    scores: dict[int, Score] = {}
    with ThreadPoolExecutor(threads, thread_name_prefix="math-verify") as executor:
        futures = {i: executor.submit(verify_answer, *pairs[i], timeout_s=timeout_s) for i in slow}
        for i, (gold, response) in enumerate(pairs):
            if i not in futures:
                scores[i] = verify_answer(gold, response, timeout_s=timeout_s)
        scores.update((i, future.result()) for i, future in futures.items())
    return [scores[i] for i in range(len(pairs))]
