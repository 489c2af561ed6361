"""Output files igpo wrote, known by a sidecar manifest, so no command replaces a file it did not write.

FILES (`.igpo-files.json`, igpo.outputs) in a folder maps the files igpo wrote there (paths
relative to that folder) to their sha256, or to null while a command is writing them (a killed
command's partial output stays igpo's). A file is igpo's own when its entry is null or its sha256
still matches: any format (markdown, HTML, JSON, PNG, safetensors), and the file itself is never
touched. A command checks each output file before any work (`check_replace`: a file igpo did not
write, one changed since it did, or a symbolic link is refused unless --overwrite); inside a
`claiming()` block it claims them (entries set to null) and, when the block ends however it ends,
records the sha256 of each file it changed and restores the entries of the rest (a failed command
leaves the manifest as it was; an empty one is removed).
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from igpo.outputs import FILES, OutputRefused

ABOUT = "Files igpo wrote in this folder, with their sha256 (null: being written); igpo replaces only these."
REASONS = {
    "foreign": "exists and was not written by igpo",
    "changed": "was changed since igpo wrote it",
    "link": "is a symbolic link, which igpo never writes through",
}
"""Why an existing output is refused, by its state."""
_ABSENT = object()


def sha256(path: Path) -> str:
    """The file's sha256, read in chunks (a checkpoint may be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(root: Path) -> dict[str, str | None]:
    """The folder's manifest entries; {} when absent or unreadable (then igpo wrote nothing here)."""
    try:
        data = json.loads((Path(root) / FILES).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {str(k): v for k, v in files.items() if v is None or isinstance(v, str)}


def _write_manifest(root: Path, files: dict[str, str | None]) -> None:
    from igpo.atomic import atomic_write_text

    if not files:
        (root / FILES).unlink(missing_ok=True)
        return
    atomic_write_text(root / FILES, json.dumps({"about": ABOUT, "files": dict(sorted(files.items()))}, indent=1) + "\n")


@contextlib.contextmanager
def _folder_locked(root: Path) -> Iterator[None]:
    """One manifest update at a time per folder: an flock on the folder itself (no extra file)."""
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _key(path: Path, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


def state(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """'absent', 'link' (a symbolic link, dangling or not), 'own' (igpo wrote it), 'changed' (igpo
    wrote it, then it changed) or 'foreign'; `root`: the manifest's folder (default the file's)."""
    target = Path(path)
    if target.is_symlink():
        return "link"
    if not target.exists():
        return "absent"
    folder = Path(root) if root is not None else target.parent
    recorded = read_manifest(folder).get(_key(target, folder), _ABSENT)
    if recorded is _ABSENT:
        return "foreign"
    if recorded is None or (target.is_file() and recorded == sha256(target)):
        return "own"
    return "changed"


def check_replace(path: str | os.PathLike, *, flag: str, overwrite: bool, root: str | os.PathLike | None = None) -> str:
    """Refuse (one line naming the flag, the path and --overwrite) to replace an existing file
    igpo did not write, changed since, or a symbolic link; returns its state."""
    found = state(path, root)
    if found in ("absent", "own") or overwrite:
        return found
    raise OutputRefused(f"{flag} {path}: {REASONS[found]} (pass --overwrite to replace it)")


def _sig(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is written or replaced (lstat: a link is not followed)."""
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size, int(stat.S_ISLNK(st.st_mode))


@dataclass
class _Claims:
    """One folder's claimed files: the entry each had, its lstat when claimed, whether igpo owned it."""

    root: Path
    made: Path | None = None
    entries: dict[str, tuple[object, tuple | None, bool]] = field(default_factory=dict)
    patterns: list[str] = field(default_factory=list)
    seen: dict[str, tuple | None] = field(default_factory=dict)

    def settle(self) -> None:
        """Record the sha256 of each claimed file the command wrote; restore the others' entries."""
        if not self.root.is_dir():
            return
        with _folder_locked(self.root):
            files = read_manifest(self.root)
            for key, (previous, before, own) in self.entries.items():
                path = self.root / key
                now = _sig(path)
                if now is not None and not path.is_symlink() and path.is_file() and (own or now != before):
                    files[key] = sha256(path)
                elif previous is _ABSENT:
                    files.pop(key, None)
                else:
                    files[key] = previous  # type: ignore[assignment]
            for key, path in _matching(self.root, self.patterns):
                if key not in self.entries and path.is_file() and _sig(path) != self.seen.get(key):
                    files[key] = sha256(path)
            _write_manifest(self.root, files)
        _remove_empty(self.root, self.made)


def _matching(root: Path, patterns: Iterable[str]) -> Iterator[tuple[str, Path]]:
    """(key, path) of the regular files and links under `root` whose relative path matches a pattern."""
    patterns = list(patterns)
    if not patterns or not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        key = _key(path, root)
        if (path.is_file() or path.is_symlink()) and any(fnmatch.fnmatchcase(key, p) for p in patterns):
            yield key, path


def _remove_empty(folder: Path, made: Path | None) -> None:
    """Remove `folder` and its parents up to `made` (the first one a claim created) while empty."""
    if made is None:
        return
    for candidate in (folder, *folder.parents):
        with contextlib.suppress(OSError):
            candidate.rmdir()
        if candidate == made:
            return


_SCOPES: list[dict[Path, _Claims]] = []
"""Open `claiming()` blocks, innermost last: each one's claims by folder."""


@contextlib.contextmanager
def claiming() -> Iterator[None]:
    """Settle the claims made inside the block when it ends (written files recorded, the rest restored)."""
    _SCOPES.append({})
    try:
        yield
    finally:
        for claims in _SCOPES.pop().values():
            claims.settle()


def _claims(root: Path) -> _Claims | None:
    """The innermost block's claims of `root` (made on first use), or None outside any block."""
    if not _SCOPES:
        return None
    root = Path(os.path.abspath(root))
    scope = _SCOPES[-1]
    if root not in scope:
        made = next((p for p in (*reversed(root.parents), root) if not p.exists()), None)
        root.mkdir(parents=True, exist_ok=True)
        scope[root] = _Claims(root, made)
    return scope[root]


def claim_file(path: str | os.PathLike) -> None:
    """Mark an output file as being written by igpo (after check_replace); outside a `claiming()`
    block nothing is recorded."""
    target = Path(path)
    claims = _claims(target.parent)
    if claims is None:
        return
    key = _key(target, claims.root)
    with _folder_locked(claims.root):
        files = read_manifest(claims.root)
        if key not in claims.entries:
            claims.entries[key] = (files.get(key, _ABSENT), _sig(target), state(target) == "own")
        files[key] = None
        _write_manifest(claims.root, files)


def claim_tree(root: str | os.PathLike, patterns: Iterable[str], *, flag: str, overwrite: bool) -> None:
    """Check every existing file under `root` matching `patterns` (relative paths, fnmatch) as
    check_replace does, then record, when the block ends, those the command wrote."""
    folder = Path(root)
    patterns = list(patterns)
    for _, path in _matching(folder, patterns):
        check_replace(path, flag=flag, overwrite=overwrite, root=folder)
    claims = _claims(folder)
    if claims is None:
        return
    claims.patterns.extend(patterns)
    claims.seen.update({key: _sig(path) for key, path in _matching(folder, patterns)})
