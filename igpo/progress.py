"""Progress messages of every command through one logger: ``[igpo <command>] message`` on
stderr, so that stdout carries only results (tables, markdown, JSON).

    >>> say("eval", "seed 0: igpo_arith")    # prints "[igpo eval] seed 0: igpo_arith" to stderr
"""

from __future__ import annotations

import logging
import sys

LOGGER = "igpo.progress"
FORMAT = "[igpo %(command)s] %(message)s"


class _Stderr(logging.Handler):
    """Writes to the sys.stderr of the moment (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")
        sys.stderr.flush()


def logger() -> logging.Logger:
    """The progress logger, set up on first use (INFO, one handler, not propagated)."""
    log = logging.getLogger(LOGGER)
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter(FORMAT))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def say(command: str, message: str) -> None:
    """One progress line of `command` (eval, sft, check, ablate, lm-eval, ...)."""
    logger().info(message, extra={"command": command})


VERBOSE_ENV = "IGPO_VERBOSE"
"""Set (`igpo --verbose ...` sets it) to see the libraries' own INFO logs and messages."""


def verbose() -> bool:
    """IGPO_VERBOSE set to anything but '', 0, false, no, off."""
    import os

    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
