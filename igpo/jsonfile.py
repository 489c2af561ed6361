"""Reading one small JSON file (a config, marker or trainer state) that may be damaged: any
failure becomes one BadFile / MissingInput line naming the file, never a foreign traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igpo.errors import BadFile, require_file


def read_json_object(path: str | Path, *keys: str) -> dict[str, Any]:
    """The JSON object in `path`; `keys` must be present (BadFile names the first missing one)."""
    path = Path(path)
    require_file(path, "JSON file", f"{path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BadFile(f"{path}: invalid JSON ({err.msg}, line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise BadFile(f"{path}: not UTF-8 text ({err.reason})") from None
    except RecursionError:
        raise BadFile(f"{path}: JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise BadFile(f"{path}: expected a JSON object")
    missing = [k for k in keys if k not in data]
    if missing:
        raise BadFile(f"{path}: missing field {missing[0]!r}")
    return data


def finite(obj: Any) -> Any:
    """`obj` with every NaN / infinite float replaced by None, so the JSON written is standard
    (no `NaN` / `Infinity` tokens): a value that cannot be measured is null, not a number."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def read_log(path: str | Path, what: str = "line") -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each readable line of an append-only JSONL log (responses.jsonl,
    metrics.jsonl). A line that is not UTF-8 (a kill inside a multi-byte character, binary junk),
    not JSON or not an object is what a crash leaves: skipped, with one note on stderr naming the
    file and the lines, never an error that blocks the rerun."""
    import sys

    rows: list[tuple[int, dict[str, Any]]] = []
    skipped: list[int] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                obj = None
            if isinstance(obj, dict):
                rows.append((n, obj))
            else:
                skipped.append(n)
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else "")
        print(f"note: {path}: skipped {len(skipped)} damaged {what}(s) (line {shown})", file=sys.stderr)
    return rows


class JsonlAppender:
    """Appends one JSON object per line to a file, flushed and fsynced, so a crash loses at most
    the record being written. A torn last line left by an earlier crash is closed with a newline
    before the first append (`torn` says there was one), so the next record never glues onto it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.torn = self.path.is_file() and self.path.stat().st_size > 0 and _last_byte(self.path) != b"\n"

    def append(self, record: dict[str, Any]) -> None:
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            if self.torn:
                f.write("\n")
                self.torn = False
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1)
