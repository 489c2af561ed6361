"""Answer extraction and correctness scoring shared by evaluation metrics and RL rewards.

Two metrics are offered:

* :func:`verify_answer` -- math-verify correctness (gold first). Plain numeric answers take an
  exact in-process fast path; everything else runs ``parse`` + ``verify`` in one persistent
  worker process, so every call is bounded in time from any thread (math-verify's own
  ``signal.alarm`` timeout only works in the main thread).
* :func:`strict_correct` -- d1-style strict metric: the first ``\\boxed{}`` only, compared
  numerically or after a MATH-style string normalisation (:func:`normalize_math_answer`).

This module must stay importable without torch, ``harness`` or ``tasks`` (RL code imports it).

Size: answer extraction, math-verify in a time-bounded worker process and d1's strict
match: the one definition of correctness shared by evaluation and RL rewards.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
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
"""Longer strings never take the numeric paths (keeps int parsing cheap and bounded)."""

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
_DOLLAR_WRAP_RE = re.compile(r"^\$+(.*?)\$+$", re.DOTALL)


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


def _plain_number(text: str) -> Fraction | None:
    """Value of a bare number after light cleaning (``$``, ``\\$``, ``\\!``, ``\\dfrac``)."""
    if len(text) > 4 * MAX_NUMBER_CHARS:
        return None
    cleaned = text.strip()
    if match := _DOLLAR_WRAP_RE.match(cleaned):
        cleaned = match.group(1)
    cleaned = cleaned.replace("\\$", "").replace("\\!", "").replace("{,}", ",")
    cleaned = re.sub(r"\\[dt]frac", r"\\frac", cleaned)
    cleaned = re.sub(r"\s+", "", cleaned).rstrip(".")
    return _parse_number(cleaned)


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
    """One lazily started math-verify subprocess, shared by all threads of this process."""

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

    def _alive(self) -> bool:
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
        if self._alive():
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


_WORKER = _VerifyWorker()
atexit.register(_WORKER.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKER.reset_after_fork)


def start_worker_in_background() -> threading.Thread:
    """Start the math-verify worker (and its warm-up) in a daemon thread, so that an evaluation
    that will need it pays its start-up while the model decodes; a call that needs the worker
    before it is ready waits for it (the worker's lock), a running worker is left as it is."""

    thread = threading.Thread(target=_WORKER.ensure_started, name="math-verify-start", daemon=True)
    thread.start()
    return thread


def shutdown_worker() -> None:
    """Stop the math-verify worker process now (it restarts lazily when needed)."""
    _WORKER.close()


# --------------------------------------------------------------------------- verify_answer


def _fast_candidate(response: str, spans: list[tuple[int, int, int]]) -> str | None:
    """The lone boxed answer, or the whole response if short; None when ambiguous (`spans`:
    the response's box_spans)."""
    if len(spans) == 1:
        _, start, end = spans[0]
        return response[start:end]
    if not spans and len(response) <= 4 * MAX_NUMBER_CHARS:
        return response.strip()
    return None


_PRESENTATION_RE = re.compile(r"\s+|\\left|\\right|\\[!,;:]")
NUMERIC_REL_TOL = 1e-4
"""Two numeric answers further apart than this (relative) are different without math-verify."""


def _presentational(text: str) -> str:
    """An answer without whitespace, $ delimiters, sizing and spacing commands, \\dfrac/\\tfrac."""
    text = text.strip()
    if match := _DOLLAR_WRAP_RE.match(text):
        text = match.group(1)
    return re.sub(r"\\[dt]frac", r"\\frac", _PRESENTATION_RE.sub("", text))


def _fast_verdict(gold: str, candidate: str, boxed: bool) -> bool | None:
    """The verdict without math-verify where it is certain, else None: equal or unequal plain
    numbers (exact; unequal integers); and for a boxed answer, the same LaTeX up to
    presentation (right), two numeric expressions with different values (wrong;
    igpo.latexnum), a number against a tuple, set or expression in a variable (wrong)."""
    gold_plain, pred_plain = _plain_number(gold), _plain_number(candidate)
    if gold_plain is not None and pred_plain is not None:
        if pred_plain == gold_plain or pred_plain.denominator == gold_plain.denominator == 1:
            return pred_plain == gold_plain
    if not boxed:  # a short unboxed response: only math-verify reads free text
        return None
    gold_text, pred_text = _presentational(gold), _presentational(candidate)
    if gold_text and gold_text == pred_text:
        return True
    from igpo import latexnum

    gold_value, pred_value = latexnum.value(_fix_fracs(gold_text)), latexnum.value(_fix_fracs(pred_text))
    if gold_value is not None and pred_value is not None:
        if gold_value == pred_value:
            return True
        return False if not math.isclose(gold_value, pred_value, rel_tol=NUMERIC_REL_TOL) else None
    if gold_value is None and pred_value is not None and gold_plain is None:
        return False if _never_a_number(gold) else None  # a number against something that never is one
    if pred_value is None and gold_value is not None and pred_plain is None:
        return False if _never_a_number(candidate) else None
    return None


_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_VARIABLE_RE = re.compile(r"[A-DF-HJ-Za-df-hj-z]")
"""A letter other than e and i (Euler's number, the imaginary unit), outside commands."""
_COMPLEX_RE = re.compile(r"[-+]?\s*\d+(?:\.\d+)?\s*[-+]\s*(\d+(?:\.\d+)?)?\s*i")
"""a + bi with literal parts: never real when b is not zero."""


def _never_a_number(text: str) -> bool:
    """A tuple, interval, set, union or matrix, a non-real a + bi, or an expression in a variable
    (a letter other than e and i): math-verify never equates such an answer with a number.
    Units and words (\\text, \\mbox, ...), degrees, subscripts and equations are not decided here."""
    if re.search(r"\\(?:text|mbox|mathrm|textbf|operatorname)|=|_|\\circ|%", text):
        return False
    if "," in text or "\\cup" in text or "\\begin{" in text:
        return True
    if (match := _COMPLEX_RE.fullmatch(text.strip())) is not None:
        return match.group(1) is None or float(match.group(1)) != 0
    return bool(_VARIABLE_RE.search(_COMMAND_RE.sub(" ", text)))  # on the raw text: "\\cot x" keeps its x


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

    Fast path: if the gold and the response's lone ``\\boxed{}`` (or the whole response) are
    plain numbers, they are compared exactly in-process; equal -> correct, unequal integers ->
    wrong. Otherwise ``verify(parse(gold), parse(response))`` runs in the worker process; on
    timeout the worker is replaced and the result is wrong with ``timed_out=True``.
    """
    if timeout_s <= 0:
        raise InvalidSetting(f"timeout_s must be positive, got {timeout_s}")
    _count("verify_calls")
    spans = box_spans(response)
    candidate = _fast_candidate(response, spans)
    if candidate is not None and (fast := _fast_verdict(gold, candidate, boxed=len(spans) == 1)) is not None:
        _count("fast_path")
        return Score(correct=fast, extracted=candidate, timed_out=False)
    _count("worker_calls")
    started = time.perf_counter()
    # math-verify takes a lone box's content first; sending just the box halves its parsing
    sent = f"\\boxed{{{response[spans[0][1] : spans[0][2]]}}}" if len(spans) == 1 else response
    correct, extracted, timed_out = _WORKER.run(
        _gold_for_math_verify(gold), sent.replace("\\fbox", "\\boxed"), timeout_s
    )
    if timed_out:
        _count("timeouts")
        logger.warning("math-verify timed out after %.1fs", time.perf_counter() - started)
    return Score(correct=correct, extracted=extracted, timed_out=timed_out)


if __name__ == _WORKER_RUN_NAME:
    _serve(int(sys.argv[-2]), int(sys.argv[-1]))
