"""Request identity for `dllm`: stable keys, per-request seeds and the resumable response cache."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from igpo.jsonfile import JsonlAppender, read_log

SEED_MODULUS = 2**63 - 1


def request_key(context: str, settings: dict[str, Any]) -> str:
    """Stable identity of a request: its prompt and every setting that shapes the response."""
    blob = json.dumps([context, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def seed_of(key: str) -> int:
    """A 63-bit generator seed derived from a request key (repeats included)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % SEED_MODULUS


class ResponseCache:
    """Append-only JSONL of finished responses, keyed by request; survives interruption.

    Each data-parallel rank appends to its own file (`name.rankN.jsonl` beyond rank 0) and
    every rank reads them all, so a rerun with any number of processes reuses every response.
    """

    def __init__(self, path: Path, rank: int = 0) -> None:
        self.path = path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
        self.items: dict[str, dict[str, Any]] = {}
        for file in sorted(path.parent.glob(f"{path.stem}*{path.suffix}")):
            for _, rec in read_log(file, "cached response"):  # torn / non-UTF-8 lines: redone
                try:
                    self.items[rec["key"]] = {"response": str(rec["response"]), **(rec.get("info") or {})}
                except (KeyError, TypeError, AttributeError):
                    continue  # a record without its fields: that request is redone
        self._writer = JsonlAppender(self.path)
        if self._writer.torn:
            print(
                f"warning: {self.path}: its last line was cut by an interruption; that response is decoded again",
                file=sys.stderr,
            )

    def get(self, key: str) -> dict[str, Any] | None:
        """{"response": text, ...what was recorded with it} or None."""
        return self.items.get(key)

    def put(self, key: str, response: str, info: dict[str, Any] | None = None) -> None:
        self.items[key] = {"response": response, **(info or {})}
        self._writer.append({"key": key, "response": response, "info": info or {}})
