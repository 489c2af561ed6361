"""One-line errors for the CLI: bad input ends with a message naming the problem and exit code 2."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from igpo.errors import PATH_ERRORS, IgpoError

F = TypeVar("F", bound=Callable)

EXIT_ERROR = 2
DEBUG_ENV = "IGPO_DEBUG"
"""Set (to anything) to get the traceback of a user error instead of its one line."""


UserError = IgpoError
"""The harness's name for igpo's base of user errors (igpo/errors.py)."""


def debugging() -> bool:
    """IGPO_DEBUG set to anything but '', 0, false, no, off."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input rather than a bug: igpo's own errors and the OS errors
    of a path the user gave. Any other exception is a bug and keeps its traceback."""
    return (IgpoError, *PATH_ERRORS)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = text[0] if text else type(err).__name__
    if isinstance(err, KeyError) and msg.startswith("'"):
        msg = f"missing key {msg}"
    return msg


def end_progress_bars() -> None:
    """Close every open tqdm bar, so an error printed next starts a line of its own (a `^error:`
    grep finds it) instead of trailing a half-drawn bar."""
    tqdm_module = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm_module, "tqdm", None), "_instances", None) or []):
        try:
            bar.close()
        except Exception:  # a bar whose stream is gone: nothing left to end
            pass


def friendly(func: F) -> F:
    """Run a CLI command; turn input errors into `error: ...` on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except user_errors() as err:
            if debugging():
                raise
            end_progress_bars()
            print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]
