"""One-line errors for the CLI: bad input ends with a message naming the problem and exit code 2."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from typer.core import TyperGroup

try:  # typer vendors its own click (typer._click) since 0.2x; click's own before
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError

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
    """Run a CLI command; turn input errors into `error: ...` on stderr and exit code 2. The
    output files it claims (igpo.owned) are recorded, or given back, when it ends."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from igpo.owned import claiming

        try:
            with claiming():
                return func(*args, **kwargs)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except user_errors() as err:
            if debugging():
                raise
            end_progress_bars()
            if launch_rank() == 0:  # bad input is the same on every process: said once
                print(f"error: {one_line(err)}", file=sys.stderr)
            raise SystemExit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def launch_rank() -> int:
    """This process's rank under a launcher (torchrun / accelerate launch set RANK); 0 alone."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def usage_error_exit(err: UsageError, command: str = "igpo") -> NoReturn:
    """A command line click / typer could not parse (a value of the wrong type, an unknown or
    missing option or argument): one `error:` line naming it and the command whose help to
    read, on stderr, and exit code 2."""
    if isinstance(err, NoArgsIsHelpError) or debugging():
        raise err  # `igpo` alone shows the help; IGPO_DEBUG: click's own report
    end_progress_bars()
    message = " ".join(err.format_message().split()) or type(err).__name__
    command = err.ctx.command_path if err.ctx is not None else command
    print(f"error: {message} (see '{command} --help')", file=sys.stderr)
    raise SystemExit(EXIT_ERROR) from None


class OneLineUsageErrors(TyperGroup):
    """typer's command group whose usage errors end as one `error:` line (usage_error_exit)
    instead of click's usage box: `--limit abc` reads like every other bad input."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as err:
            usage_error_exit(err)

    def invoke(self, ctx: Any) -> Any:
        called = (getattr(ctx, "_protected_args", None) or [None])[0]  # the sub-command's name
        try:
            return super().invoke(ctx)
        except UsageError as err:  # the sub-command's options, parsed inside the group's invoke
            usage_error_exit(err, f"{ctx.command_path} {called}" if called else ctx.command_path)
