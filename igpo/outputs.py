"""Output folders and files that never destroy an input or another run.

Every command that writes goes through here, before any work:

- `check_output`: an output equal to or inside an input of the same command is refused (and, for
  a folder that will be cleared, one that holds an input); a folder output is never the working
  directory, the home directory or the file-system root; a file output is never an existing
  folder, nor an existing file of a run (its record, or anything below a folder igpo made).
- `claim_folder`: every folder a command creates gets MARKER (`.igpo-output.json`: the kind of
  folder and, where runs must not be confused, what distinguishes them). A folder holding a file
  its kind does not write is refused; `--overwrite` clears only a folder that carries the marker,
  and only the names its kind writes; a folder marked for another kind or another run is refused.
- `locked`: one writer per output folder, an advisory `fcntl.flock` on LOCK in the folder (or
  on the output file itself); a second writer gets one line with the holder's pid.
- output files (reports, tables, summaries) beside the user's own: igpo.owned (FILES, a manifest
  of what igpo wrote with sha256) refuses to replace a file igpo did not write without --overwrite.
- `leave_no_trace`: a command that fails before writing anything takes its marker, lock and the
  folder it made back.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from igpo.errors import InvalidSetting

MARKER = ".igpo-output.json"
LOCK = ".igpo.lock"
FILES = ".igpo-files.json"
"""igpo.owned's manifest of the output files igpo wrote in a folder (name -> sha256)."""
OWN = (MARKER, LOCK, FILES)
RUN_FILES = ("results.json", "samples.jsonl", "responses.jsonl", "metrics.jsonl", "config.yaml")
"""Files of a run: an output file of that name is another run's record, never replaced."""
TEMP_NAMES = (".*.tmp", "*.tmp")
"""Atomic writes' temporary files (igpo.atomic), left behind by a kill."""


class OutputRefused(InvalidSetting):
    """An output path that would change or delete something the command did not write."""


def real(path: str | os.PathLike) -> Path:
    """The absolute path with symlinks followed (two spellings of one folder compare equal)."""
    return Path(os.fspath(path)).resolve()


def protected_folders() -> dict[Path, str]:
    """Folders that are never an output folder: what they hold was not written by igpo."""
    out = {real("/"): "the file-system root", real(Path.home()): "the home directory"}
    with contextlib.suppress(OSError):
        out[real(Path.cwd())] = "the working directory"
    return out


def model_input(name: str | os.PathLike | None) -> str | None:
    """A model argument as a path: an embedded model's name as its folder."""
    if not name:
        return None
    from igpo.models.loading import EMBEDDED_MODELS

    return str(EMBEDDED_MODELS.get(str(name), name))


def check_output(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    *,
    flag: str = "--out",
    folder: bool = True,
    clears: bool = False,
    nested: bool = False,
) -> None:
    """Refuse an output path that is (or is inside) an input, a protected folder, or another
    run's file. `folder`: the output is a folder (else a file); `clears`: it will be emptied;
    `nested`: a folder that holds runs, never inside a folder igpo made for one."""
    target = real(out)
    for raw in inputs:
        if raw is None or str(raw) == "":
            continue
        source = real(raw)
        if not source.exists():
            continue  # a Hub id or a name, not a file here
        if target == source:
            raise OutputRefused(f"{flag} {out} is an input of this command ({raw}); write the output elsewhere")
        if source in target.parents:
            raise OutputRefused(f"{flag} {out} is inside the input {raw}; write the output elsewhere")
        if clears and target in source.parents:
            raise OutputRefused(f"{flag} {out} holds the input {raw}; --overwrite would delete it")
    if folder:
        what = protected_folders().get(target)
        if what is not None:
            raise OutputRefused(f"{flag} {out} is {what}; give the output a folder of its own")
        owner = marked_parent(target) if nested else None
        if owner is not None:
            raise OutputRefused(f"{flag} {out} lies in the run folder {owner}; give the runs a folder of their own")
        return
    if target.is_dir():
        raise OutputRefused(f"{flag} {out} is a folder, not a file")
    if target.exists():
        owner = marked_parent(target.parent)
        inside = target.relative_to(owner).parts[:-1] if owner is not None else ()
        if target.name in (*RUN_FILES, *OWN) or any(part not in ("", ".") for part in inside):
            where = f"the run folder {owner}" if owner is not None else "a run"
            raise OutputRefused(f"{flag} {out} is a file of {where}; write the output elsewhere")


def marked_parent(folder: Path) -> Path | None:
    """The nearest folder at or above `folder` that igpo created (carries MARKER)."""
    for candidate in (folder, *folder.parents):
        if (candidate / MARKER).is_file():
            return candidate
    return None


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's marker, or None (absent or unreadable: then igpo did not write it)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _written_by(name: str, known: Iterable[str]) -> bool:
    return name in OWN or any(fnmatch.fnmatchcase(name, p) for p in (*known, *TEMP_NAMES))


def check_folder(
    out: str | os.PathLike,
    *,
    kind: str,
    known: Iterable[str],
    overwrite: bool = False,
    identity: dict[str, Any] | None = None,
    flag: str = "--out",
    variant: str | None = None,
) -> None:
    """Refuse to write into (or clear) a folder igpo did not make for this kind of output, or
    one that holds another run (a different `identity`, or `variant`). Changes nothing."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise OutputRefused(f"{flag} {out} is a file, not a folder")
    entries = sorted(p.name for p in folder.iterdir() if p.name not in OWN) if folder.is_dir() else []
    if not entries:
        return
    foreign = [name for name in entries if not _written_by(name, known)]
    if foreign:
        raise OutputRefused(
            f"{flag} {out} holds {foreign[0]!r}, which igpo does not write there; give an output folder of its own"
        )
    marker = read_marker(folder)
    if marker is not None and marker.get("kind") != kind:
        raise OutputRefused(f"{flag} {out} is an igpo {marker.get('kind')} folder, not a {kind} one")
    if overwrite and marker is None:
        raise OutputRefused(f"--overwrite: {out} has no {MARKER}, so igpo did not create it and will not delete it")
    if marker is None:
        raise OutputRefused(
            f"{flag} {out} holds {entries[0]!r} but has no {MARKER}: igpo did not write it; give an output folder of its own"
        )
    check_variant(folder, variant, flag=flag)
    if identity is not None and marker is not None and marker.get("identity") not in (None, identity):
        theirs = marker.get("identity") or {}
        differs = sorted(k for k in set(theirs) | set(identity) if theirs.get(k) != identity.get(k))
        raise OutputRefused(
            f"{flag} {out} holds another run (its {', '.join(differs)} differ); pick another name (--name) or --out"
        )


def check_variant(out: str | os.PathLike, variant: str | None, *, flag: str = "--out") -> None:
    """Refuse a folder whose marker records another `variant` of its kind (an SFT run is never
    replaced or continued by RL training, nor the reverse); a marker without one (older) passes."""
    marker = read_marker(Path(out)) if variant else None
    theirs = marker.get("variant") if marker is not None else None
    if theirs not in (None, variant):
        raise OutputRefused(
            f"{flag} {out} holds another kind of run ({theirs}; this one is {variant}): --overwrite and --resume "
            f"never replace or continue it; use another {flag}"
        )


def claim_folder(
    out: str | os.PathLike,
    *,
    kind: str,
    known: Iterable[str],
    overwrite: bool = False,
    identity: dict[str, Any] | None = None,
    variant: str | None = None,
) -> Path:
    """Create (or take back) `out` as a `kind` folder: check it, clear what its kind wrote when
    `overwrite`, write MARKER (with `variant` when given). Call it holding `locked(out)` when
    others may write there."""
    folder = Path(out)
    known = tuple(known)
    check_folder(folder, kind=kind, known=known, overwrite=overwrite, identity=identity, variant=variant)
    folder.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for entry in folder.iterdir():
            if entry.name in OWN or not _written_by(entry.name, known):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    marker = read_marker(folder)
    if marker is None or identity is not None or (variant and marker.get("variant") != variant):
        from igpo.atomic import atomic_write_text

        record = {"kind": kind, "identity": identity, **({"variant": variant} if variant else {})}
        atomic_write_text(folder / MARKER, json.dumps(record, sort_keys=True) + "\n")
    return folder


_HELD: dict[Path, Any] = {}
"""Locks this process holds, by lock file: taking one again (a trainer inside ablate) is a no-op."""


def _holder(path: Path) -> str:
    """The pid holding a lock on `path`: the pid written in it, else /proc/locks."""
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text(encoding="utf-8").strip()
        if text.isdigit():
            return text
    with contextlib.suppress(OSError, ValueError):
        inode = path.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[5].rsplit(":", 1)[-1] == str(inode):
                return parts[4]
    return "unknown"


@contextlib.contextmanager
def locked(out: str | os.PathLike, *, folder: bool = True) -> Iterator[None]:
    """Hold the advisory lock of an output folder (LOCK inside it) or file (the file itself)
    while writing; a second writer gets one line with the holder's pid."""
    path = real(Path(out) / LOCK if folder else out)
    if path in _HELD:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115  (held until the block ends)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputRefused(
            f"{out} is being written by another igpo process (pid {_holder(path)}); wait for it or use another output"
        ) from None
    if folder:
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
    _HELD[path] = handle
    try:
        yield
    finally:
        _HELD.pop(path, None)
        handle.close()


@contextlib.contextmanager
def claimed(
    out: str | os.PathLike, *, kind: str, known: Iterable[str], identity: dict[str, Any] | None = None
) -> Iterator[Path]:
    """`locked` + `claim_folder` for the length of a block; a block that fails before writing
    anything there leaves no trace (no marker, no lock file, no folder it made)."""
    folder = Path(out)
    made = not folder.exists()
    with locked(folder):
        try:
            yield claim_folder(folder, kind=kind, known=known, identity=identity)
        except BaseException:
            if folder.is_dir() and all(p.name in OWN for p in folder.iterdir()):
                for name in OWN:
                    (folder / name).unlink(missing_ok=True)
                if made:
                    folder.rmdir()
            raise


def leave_no_trace(out: str | os.PathLike, *, made: bool) -> None:
    """After a failed start: when `out` holds nothing but igpo's bookkeeping (MARKER, LOCK, empty
    files and folders), remove it all (and `out` if the command `made` it); a run that wrote
    anything (a metrics line, a checkpoint) is left as it is, as is a folder another process holds."""
    folder = Path(out)
    if not folder.is_dir() or folder.is_symlink():
        return
    entries = list(folder.rglob("*"))
    if any(p.is_symlink() or (p.is_file() and p.name not in OWN and p.stat().st_size) for p in entries):
        return
    lock = real(folder / LOCK)
    held = _HELD.pop(lock, None)
    if held is not None:
        held.close()
    try:
        ensure_free(folder)
    except OutputRefused:
        return
    for path in sorted(entries, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()
    if made:
        with contextlib.suppress(OSError):
            folder.rmdir()


def ensure_free(out: str | os.PathLike) -> None:
    """Refuse a folder another process is writing (its LOCK held), changing nothing."""
    path = real(Path(out) / LOCK)
    if path in _HELD or not path.is_file():
        return
    with open(path, encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputRefused(
                f"{out} is being written by another igpo process (pid {_holder(path)}); wait for it or use another output"
            ) from None
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def acquire(out: str | os.PathLike, *, folder: bool = True) -> contextlib.ExitStack:
    """`locked` held until the returned stack is closed (for a lock that outlives one block)."""
    stack = contextlib.ExitStack()
    stack.enter_context(locked(out, folder=folder))
    return stack
