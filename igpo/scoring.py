"""Answer extraction and correctness scoring shared by evaluation metrics and RL rewards.

Two metrics are offered:

* :func:`verify_answer` (and :func:`verify_answers` for many pairs at once) -- math-verify
  correctness (gold first), identical to ``verify(parse(gold), parse(response))`` with
  math-verify's default extraction (the gold boxed unless it carries its own delimiters). A
  response whose verdict follows from math-verify's own rules is decided in-process
  (:func:`fast_verdict`: a canonical integer or decimal in the response's only box against the
  same or another canonical number); everything else runs in a pool of persistent worker
  processes sized to the cores, so every call is bounded in time from any thread (math-verify's
  own ``signal.alarm`` timeout only works in the main thread) and many pairs score in parallel.
* :func:`strict_correct` -- d1-style strict metric: the first ``\\boxed{}`` only, compared
  numerically or after a MATH-style string normalisation (:func:`normalize_math_answer`).

This module must stay importable without torch, ``harness`` or ``tasks`` (RL code imports it)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal

from igpo.errors import InvalidSetting

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- constants

BOX_COMMANDS: tuple[str, ...] = ("\\boxed", "\\fbox")
"""LaTeX commands whose brace-delimited argument is treated as the final answer."""

DEFAULT_TIMEOUT_S = 5.0
"""Default wall-clock bound for one math-verify parse+verify (seconds)."""

INNER_BUDGET_FRACTION = 0.9
"""Share of the timeout the worker spends before interrupting itself (no restart needed)."""

WORKER_START_TIMEOUT_S = 120.0
"""How long to wait for a fresh worker to import math-verify (not counted in any timeout)."""

WORKER_STOP_TIMEOUT_S = 5.0
"""How long to wait for a killed worker to be reaped."""

MAX_NUMBER_CHARS = 64
"""Longer strings are never parsed as numbers by the strict metric (keeps int parsing bounded)."""

_WORKER_RUN_NAME = "__igpo_verify_worker__"
"""``run_name`` under which this file runs as the worker (see :func:`_serve`)."""

_WORKER_BOOTSTRAP = (
    "import runpy, sys; sys.path[:] = [p for p in sys.path if p]; "
    f"runpy.run_path(sys.argv[1], run_name={_WORKER_RUN_NAME!r})"
)
"""Runs this file by path, so the worker imports neither the ``igpo`` package nor the cwd."""

# --------------------------------------------------------------------------- results & stats


@dataclass
class Score:
    """Outcome of scoring one response against one gold answer."""

    correct: bool
    extracted: str | None
    timed_out: bool


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


# --------------------------------------------------------------------------- extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def box_spans(text: str) -> list[tuple[int, int, int]]:
    """(command start, content start, content end) of every complete top-level ``\\boxed{}`` /
    ``\\fbox{}``; the closing brace sits at content end. The one brace matcher of the project."""
    spans: list[tuple[int, int, int]] = []
    pos = 0
    while (match := _BOX_RE.search(text, pos)) is not None:
        start = match.end()
        depth = 1
        i = start
        while i < len(text) and depth:
            char = text[i]
            if char == "\\":
                i += 2  # skip escaped characters such as \{ and \}
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
            i += 1
        if depth:  # unbalanced: no closing brace, nothing later can close either
            break
        spans.append((match.start(), start, i - 1))
        pos = i
    return spans


def extract_boxed(text: str, which: Literal["first", "last"] = "last") -> str | None:
    """Content of the first or last complete ``\\boxed{...}`` / ``\\fbox{...}`` (brace-balanced).

    Boxes nested inside a box are part of the outer content; unbalanced boxes are ignored.
    """
    if which not in ("first", "last"):
        raise InvalidSetting(f"which must be 'first' or 'last', got {which!r}")
    spans = box_spans(text)
    if not spans:
        return None
    _, start, end = spans[0] if which == "first" else spans[-1]
    return text[start:end]


def gsm8k_gold(answer_field: str) -> str:
    """The GSM8K gold number: the text after the last ``####``, commas removed."""
    if "####" not in answer_field:
        raise InvalidSetting("GSM8K answer field has no '####' marker")
    return answer_field.rsplit("####", 1)[1].strip().replace(",", "")


def format_gold_number(value: float | int | str) -> str:
    """A clean gold string from a numeric field (e.g. AMC's ``142.0`` -> ``"142"``)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- numbers

_DECIMAL_RE = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[+-]?\.\d+")
_FRAC_RE = re.compile(r"([+-]?)\\frac\{([+-]?\d+)\}\{(\d+)\}")
_SLASH_RE = re.compile(r"([+-]?\d+)/(\d+)")


def _parse_number(text: str) -> Fraction | None:
    """Exact value of an integer, decimal, comma-grouped number or integer fraction, else None."""
    if len(text) > MAX_NUMBER_CHARS:
        return None
    if _DECIMAL_RE.fullmatch(text):
        return Fraction(text.replace(",", ""))
    if match := _FRAC_RE.fullmatch(text):
        sign, num, den = match.groups()
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign == "-" else value
    if match := _SLASH_RE.fullmatch(text):
        num, den = match.groups()
        return Fraction(int(num), int(den)) if int(den) else None
    return None


# --------------------------------------------------------------------------- normalisation

_UNIT_RE = re.compile(r"(?<=[\d}).])\s*\\(?:text|mbox|mathrm)\{\s*[A-Za-z][A-Za-z .]*\}(\^\d)?$")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\{([^{}]*)\}")
_CHOICE_RE = re.compile(r"\(?([A-Ea-e])\)?")
_LATEX_SPACES = ("\\,", "\\;", "\\:", "\\ ", "\\quad", "\\qquad")


def _fix_fracs(text: str) -> str:
    """Add braces to shorthand fractions: ``\\frac12`` -> ``\\frac{1}{2}``."""
    text = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", text)
    return re.sub(r"\\frac(\{[^{}]*\})(\d)", r"\\frac\1{\2}", text)


def normalize_math_answer(answer: str) -> str:
    """MATH-style canonical string for an answer, used by the strict metric's string compare."""
    text = answer.strip()
    if (inner := extract_boxed(text, "first")) is not None and text.startswith(BOX_COMMANDS):
        text = inner.strip()
    text = text.replace("\n", "").replace("\\!", "")
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    text = text.replace("\\left", "").replace("\\right", "")
    text = text.replace("^{\\circ}", "").replace("^\\circ", "")
    text = text.replace("\\$", "").replace("$", "")
    text = text.replace("\\%", "").replace("%", "")
    text = text.replace("{,}", ",")
    text = _UNIT_RE.sub("", text)
    text = _TEXT_WRAP_RE.sub(r"\1", text)
    for spacing in _LATEX_SPACES:
        text = text.replace(spacing, "")
    text = re.sub(r"\s+", "", text)
    text = re.sub(r"(^|[{(\[,=+-])\.(\d)", r"\g<1>0.\2", text)
    text = _fix_fracs(text)
    text = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", text)
    if match := _SLASH_RE.fullmatch(text):
        text = f"\\frac{{{match.group(1)}}}{{{match.group(2)}}}"
    if text.count("=") == 1:
        lhs, rhs = text.split("=")
        if len(lhs) <= 2 and lhs.isalpha():
            text = rhs
    text = text.rstrip(".")
    if match := _CHOICE_RE.fullmatch(text):
        text = match.group(1).upper()
    return text


def strict_correct(gold: str, response: str) -> Score:
    """d1-style strict metric: the FIRST ``\\boxed{}`` only (no box -> wrong), numeric or string."""
    boxed = extract_boxed(response, "first")
    if boxed is None:
        return Score(correct=False, extracted=None, timed_out=False)
    gold_norm = normalize_math_answer(gold)
    pred_norm = normalize_math_answer(boxed)
    gold_num, pred_num = _parse_number(gold_norm), _parse_number(pred_norm)
    if gold_num is not None and pred_num is not None:
        return Score(correct=gold_num == pred_num, extracted=boxed, timed_out=False)
    return Score(correct=bool(gold_norm) and gold_norm == pred_norm, extracted=boxed, timed_out=False)


# --------------------------------------------------------------------------- math-verify worker

_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")


def _gold_for_math_verify(gold: str) -> str:
    """Gold text math-verify can parse: boxed unless it already carries delimiters."""
    if _BOX_RE.search(gold) or _UNESCAPED_DOLLAR_RE.search(gold) or "\\[" in gold:
        return gold.replace("\\fbox", "\\boxed")
    return f"\\boxed{{{gold.strip()}}}"


class _BudgetExceeded(BaseException):
    """Raised inside the worker by its own interval timer (BaseException, like math-verify's)."""


def _raise_budget_exceeded(signum: int, frame: object) -> None:
    """SIGALRM handler of the worker."""
    raise _BudgetExceeded


def _parse_and_verify(gold: str, response: str) -> tuple[bool, str | None]:
    """math-verify correctness and the extracted answer text (runs inside the worker)."""
    from math_verify import parse, verify

    gold_parsed = parse(gold, parsing_timeout=None)
    pred_parsed = parse(response, parsing_timeout=None)
    extracted = next((p for p in reversed(pred_parsed) if isinstance(p, str)), None)
    if not gold_parsed or not pred_parsed:
        return False, extracted
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None)), extracted


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
    """`_parse_and_verify` under the worker's interval timer; raises _BudgetExceeded past
    ``budget_s`` seconds (the timer is always cleared)."""
    try:
        signal.setitimer(signal.ITIMER_REAL, budget_s)
        return _parse_and_verify(gold, response)
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


class _VerifyWorker:
    """One lazily started math-verify subprocess; the pool hands it to one caller at a time."""

    def __init__(self) -> None:
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
        _count("worker_starts")

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
            _count("worker_kills")
            self._stop()
            return False, None, True


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
        self._workers: list[_VerifyWorker] = []
        self._idle: list[_VerifyWorker] = []

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

    def _trim(self) -> list[_VerifyWorker]:
        """Remove idle workers over the size (lock held); the caller stops them."""
        surplus = []
        while len(self._workers) > self.size() and self._idle:
            worker = self._idle.pop(0)
            self._workers.remove(worker)
            surplus.append(worker)
        return surplus

    def _acquire(self) -> _VerifyWorker:
        with self._cond:
            while True:
                if self._idle:  # a running worker first (the most recently used), then any
                    running = [i for i, worker in enumerate(self._idle) if worker.alive()]
                    return self._idle.pop(running[-1] if running else -1)
                if len(self._workers) < self.size():
                    worker = _VerifyWorker()
                    self._workers.append(worker)
                    return worker
                self._cond.wait()

    def _release(self, worker: _VerifyWorker) -> None:
        with self._cond:
            self._idle.append(worker)
            surplus = self._trim()
            self._cond.notify()
        for extra in surplus:
            extra.close()

    def run(self, gold: str, response: str, timeout_s: float) -> tuple[bool, str | None, bool]:
        """One pair on one worker (see `_VerifyWorker.run`)."""
        worker = self._acquire()
        try:
            return worker.run(gold, response, timeout_s)
        finally:
            self._release(worker)

    def ensure_one_started(self) -> None:
        """Start the first worker unless it runs; a caller that takes it meanwhile waits for it."""
        with self._cond:
            if not self._workers:
                worker = _VerifyWorker()
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

CANONICAL_NUMBER_RE = re.compile(r"0|-?[1-9][0-9]{0,14}|-?(?:0|[1-9][0-9]{0,5})\.[0-9]{0,5}[1-9]")
"""A number with one spelling per value: an integer of up to 15 digits (no leading zero, no
``-0``, no ``+``), or a decimal below 10^6 in size with 1 to 6 decimals, the last not 0."""

_BOX_OPEN = "\\boxed{"
_FINAL_ANSWER_RE = re.compile("final answer", re.IGNORECASE)
_QUIET_TAIL_RE = re.compile(r"[^$\]}\\]*")
"""Text after the box that can close no LaTeX environment and no ``\\boxed{.+}`` match."""


def fast_verdict(gold: str, response: str) -> tuple[bool, str] | None:
    """``(correct, extracted)`` where math-verify's verdict follows from its own rules, else None.

    Decided only when the stripped gold G is a canonical number (CANONICAL_NUMBER_RE), the
    response holds exactly one ``\\boxed`` (written ``\\boxed{``, no ``\\fbox``) whose content C is
    a canonical number, nothing after that box holds ``$``, ``]``, ``}`` or a backslash, and the
    response never says "final answer". Why that is math-verify's verdict (math-verify 0.9):

    * Extraction: with no "final answer" nothing matches at priority 0 and the only priority-50
      match is the box: ``\\boxed{.+}`` runs from the only ``\\boxed{`` to the last ``}``, which is
      C's closing brace, and a ``$``/``\\[``/``\\(``/``[`` environment around the box would need its
      closing delimiter after ``\\boxed{`` (none in C or the tail). So ``parse(response)`` is
      ``parse("\\boxed{C}")``, and the gold, sent as ``\\boxed{G}``, is parsed the same way:
      ``[Integer or Float, "C"]`` (a canonical number always parses; tested).
    * Verdict: ``verify`` is true when any gold/response pair of the two lists agrees; the two
      strings agree exactly when G == C. Canonical spellings are unique, so G != C means two
      different values: integers compare exactly, and where a decimal is involved math-verify
      rounds both to 6 decimals, which keeps values with at most 6 decimals (below 10^15 for
      integers, 10^6 for decimals) apart.
    """
    gold = gold.strip()
    if CANONICAL_NUMBER_RE.fullmatch(gold) is None:
        return None
    if response.count("\\boxed") != 1 or "\\fbox" in response:
        return None
    start = response.find(_BOX_OPEN)
    end = response.find("}", start + len(_BOX_OPEN)) if start >= 0 else -1
    if end < 0:
        return None
    candidate = response[start + len(_BOX_OPEN) : end]
    if CANONICAL_NUMBER_RE.fullmatch(candidate) is None:
        return None
    if _QUIET_TAIL_RE.fullmatch(response, end + 1) is None or _FINAL_ANSWER_RE.search(response):
        return None
    return candidate == gold, candidate


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
    correct, extracted, timed_out = _POOL.run(_gold_for_math_verify(gold), response, timeout_s)
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


if __name__ == _WORKER_RUN_NAME:
    _serve(int(sys.argv[-2]), int(sys.argv[-1]))
