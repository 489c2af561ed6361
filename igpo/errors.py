"""The project's errors: the few kinds of bad input, each a one-line message naming the culprit.

The CLI prints exactly these (and missing / unreadable paths) as `error: ...` with exit code 2;
any other exception is a bug and keeps its traceback. Each kind also derives from the builtin it
refines (ValueError, FileNotFoundError), so `except ValueError` around a library call still works.
"""

from __future__ import annotations

import os
import stat


class IgpoError(Exception):
    """Bad input from the user: a setting, a file, a name. Its message is one line."""


class InvalidSetting(IgpoError, ValueError):
    """A setting or argument of the wrong type, out of range, unknown, or at odds with another."""


class BadFile(IgpoError, ValueError):
    """A user's file that exists but cannot be used: damaged, truncated, malformed, foreign."""


class MissingInput(IgpoError, FileNotFoundError):
    """A file, folder, model or name the user pointed at that is not there."""


PATH_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
"""OS errors from opening a path the user gave: user errors too."""


def require_file(
    path: str | os.PathLike, what: str, missing: str | None = None, error: type[IgpoError] | None = None
) -> None:
    """Refuse `path` unless it is a regular file (links followed), naming `what` (e.g. "data file")
    and the path. Nothing there: `missing` (default "{what} not found: {path}"), a MissingInput; a
    folder: "{what} {path} is a folder, not a file"; a FIFO, socket or device: "{what} {path} is
    not a regular file", each a BadFile (`error` replaces either kind). Only what is not there is
    called not found; and a FIFO is never opened (a read would wait forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # nothing there, a dangling link, or a folder on the way that is not one
        raise (error or MissingInput)(missing or f"{what} not found: {path}") from None
    if stat.S_ISREG(mode):
        return
    kind = "is a folder, not a file" if stat.S_ISDIR(mode) else "is not a regular file (a FIFO, socket or device)"
    raise (error or BadFile)(f"{what} {path} {kind}")
