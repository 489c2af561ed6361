"""The project's errors: the few kinds of bad input, each a one-line message naming the culprit.

The CLI prints exactly these (and missing / unreadable paths) as `error: ...` with exit code 2;
any other exception is a bug and keeps its traceback. Each kind also derives from the builtin it
refines (ValueError, FileNotFoundError), so `except ValueError` around a library call still works.
"""

from __future__ import annotations


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
