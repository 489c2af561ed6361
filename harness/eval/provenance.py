"""Where a result came from: package versions, git commit, and content hashes of models and data."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("igpo", "torch", "transformers", "lm_eval", "math-verify", "accelerate", "peft")
FULL_HASH_LIMIT = 256 * 2**20
"""Files up to this size are hashed whole; larger ones by size plus their first and last chunk."""
EDGE_CHUNK = 16 * 2**20


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    """The commit of the checkout this package runs from, with '+dirty' if it has changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def file_fingerprint(path: Path, h: hashlib._Hash) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        else:
            h.update(f.read(EDGE_CHUNK))
            f.seek(size - EDGE_CHUNK)
            h.update(f.read(EDGE_CHUNK))


def folder_hash(folder: str | Path | None) -> str | None:
    """sha256 over a model/adapter folder's config and weight files (large files: sampled)."""
    if folder is None:
        return None
    path = Path(folder)
    if not path.is_dir():
        return f"id:{folder}"
    h = hashlib.sha256()
    patterns = ("*.json", "*.safetensors", "*.bin")
    files = sorted({f for pattern in patterns for f in path.glob(pattern)})
    for f in files:
        file_fingerprint(f, h)
    return "sha256:" + h.hexdigest()
