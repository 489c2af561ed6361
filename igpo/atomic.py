"""Atomic file writes: a temporary file in the same folder, then a rename.

Readers (and interrupted runs) never see half a results file, checkpoint or plot.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o644
"""Permissions of written files (mkstemp would leave 0600)."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_png(fig, path: str | os.PathLike, dpi: int) -> None:
    """Render a matplotlib figure to PNG in memory, then write it atomically."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())


TMP_NAME_EXTRA = 13
"""Bytes an atomic write adds to a file name for its temporary file ('.' + 8 random + '.tmp')."""
NAME_MAX = 255
PATH_MAX = 4096


def check_output_path(path: str | os.PathLike, flag: str, *, folder: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written: a name too long for the
    file system (temporary-file suffix included), a file where a folder is wanted or a folder
    where a file is, a parent that is a file, or a parent that is not writable. InvalidSetting
    names `flag` and the path; returns the path."""
    from igpo.errors import InvalidSetting

    target = Path(path).expanduser()
    if len(os.fsencode(os.path.abspath(target))) > PATH_MAX - 256:
        raise InvalidSetting(f"{flag}: the path is too long ({len(str(target))} characters): {str(target)[:80]}...")
    for part in target.parts:
        size = len(os.fsencode(part))
        if size + TMP_NAME_EXTRA > NAME_MAX:
            raise InvalidSetting(
                f"{flag}: the name {part[:40]}... is {size} bytes long (at most {NAME_MAX - TMP_NAME_EXTRA})"
            )
    if target.exists():
        if folder and not target.is_dir():
            raise InvalidSetting(f"{flag} {target} is a file, not a folder")
        if not folder and target.is_dir():
            raise InvalidSetting(f"{flag} {target} is a folder, not a file")
    parent = target if folder else target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InvalidSetting(f"{flag} {target}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidSetting(f"{flag} {target}: folder {parent} is not writable")
    return target
