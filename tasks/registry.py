"""Names, data sources and lm-eval configs of the igpo tasks (fast: no torch, no lm-eval).

Local data: with a data directory (argument or ``$IGPO_DATA_DIR``) laid out like
``<dir>/gsm8k/test.jsonl``, :func:`task_overrides` returns a complete lm-eval task config whose
dataset is that JSON-lines file instead of the Hub copy. lm-eval 0.4.13's ``TaskManager`` builds
a top-level ``{"task": ...}`` dict on its own -- it does NOT merge it over a registered YAML of the
same name -- so the dict carries the whole resolved YAML (includes and ``!function`` resolved),
and works with or without ``include_path``. Inline group dicts are broken in 0.4.13 (the group's
keys leak into its children), so groups on local data come from :func:`local_task_dir`: an
include folder of small YAMLs that ``include:`` the installed ones and swap the dataset.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from igpo.errors import BadFile, InvalidSetting, require_file

TASK_DIR: Path = Path(__file__).resolve().parent
"""Folder of the installed task YAMLs: pass it to ``TaskManager(include_path=...)``."""

DATA_DIR_ENV = "IGPO_DATA_DIR"
"""Environment variable naming the offline data directory when none is passed."""

HASH_CHUNK_BYTES = 1 << 20
"""Read size when hashing data files."""


@dataclass(frozen=True)
class TaskSpec:
    """One task's name, offline data file and size. Where its data lives on the Hub (id, config,
    split, revision) is its YAML's (`dataset_path`, `dataset_name`, `test_split`,
    `dataset_kwargs.revision`), what lm-eval reads: read from there, never restated."""

    name: str
    short: str
    local_file: str
    rows: int

    @property
    def hub_id(self) -> str:
        """The Hub dataset id ('' for a generated task)."""
        return str(_dataset_keys(self.name).get("dataset_path") or "")

    @property
    def hub_config(self) -> str | None:
        return _dataset_keys(self.name).get("dataset_name")

    @property
    def hub_split(self) -> str:
        return str(_dataset_keys(self.name)["test_split"])

    @property
    def hub_revision(self) -> str | None:
        """The pinned revision (None: unpinned, the latest)."""
        return (_dataset_keys(self.name).get("dataset_kwargs") or {}).get("revision")


SPECS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("igpo_gsm8k", "gsm8k", "gsm8k/test.jsonl", 1319),
        TaskSpec("igpo_math500", "math500", "math500/test.jsonl", 500),
        TaskSpec("igpo_amc", "amc", "amc/test.jsonl", 83),
        TaskSpec("igpo_amc23", "amc23", "amc23/test.jsonl", 40),
        TaskSpec("igpo_arith", "arith", "", 300),
    )
}
"""Leaf tasks by full name. Generated tasks (see GENERATED) have no Hub id and no local file
(empty strings)."""

GENERATED: dict[str, str] = {"igpo_arith": "tasks.arith_utils"}
"""Tasks whose documents are generated in code -> the module that generates them; it defines
``DATASET_SOURCE`` (str) and ``dataset_hash()``. A data directory never applies to them."""

GROUPS: dict[str, tuple[str, ...]] = {"igpo_math": ("igpo_gsm8k", "igpo_math500", "igpo_amc")}
"""Task groups (mirrors igpo_math.yaml) by full name."""

TASKS: dict[str, str] = {
    **{spec.short: name for name, spec in SPECS.items()},
    **{name: name for name in SPECS},
    **{name.removeprefix("igpo_"): name for name in GROUPS},
    **{name: name for name in GROUPS},
}
"""Accepted task names (short or full) -> full lm-eval task/group name."""


def resolve_tasks(names: list[str]) -> list[str]:
    """Full task names for short/full/comma-separated names, in order and without duplicates."""
    resolved: list[str] = []
    for raw in names:
        for name in filter(None, (part.strip() for part in raw.split(","))):
            if name not in TASKS:
                raise InvalidSetting(f"unknown task {name!r} (known: {', '.join(sorted(TASKS))})")
            if TASKS[name] not in resolved:
                resolved.append(TASKS[name])
    return resolved


def _leaf(task_name: str) -> TaskSpec:
    """The spec of a leaf task, accepting short names."""
    full = TASKS.get(task_name, task_name)
    if full not in SPECS:
        raise InvalidSetting(f"unknown task {task_name!r} (known: {', '.join(sorted(TASKS))})")
    return SPECS[full]


def hub_error_types() -> tuple[type[BaseException], ...]:
    """What `datasets` raises when the Hub cannot be reached: the builtin ConnectionError
    ("Couldn't reach 'openai/gsm8k' on the Hub", also huggingface_hub's offline mode), a timeout,
    or a bare requests error."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]
    with contextlib.suppress(ImportError):
        from requests.exceptions import RequestException

        types.append(RequestException)
    return tuple(types)


def data_dir_or_env(data_dir: Path | str | None) -> Path | None:
    """The data directory to use: the argument, else ``$IGPO_DATA_DIR``, else None (Hub)."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env) if env else None


def local_data_file(task_name: str, data_dir: Path | str) -> Path:
    """Absolute path of a task's JSON-lines file in ``data_dir``; FileNotFoundError if absent."""
    path = (Path(data_dir).expanduser() / _leaf(task_name).local_file).resolve()
    require_file(
        path, f"data file of {_leaf(task_name).name}", f"missing data file for {_leaf(task_name).name}: {path}"
    )
    check_jsonl(path, _leaf(task_name).name)
    return path


def check_jsonl(path: Path, task: str | None = None) -> None:
    """Fail in one line naming file and line when a data file is empty, not UTF-8, holds a line
    that is not a JSON object (a truncated download, say), or (with the task) a gold answer that
    is not a finite number or a row without its question or answer, before lm-eval's loader
    trips on it or scores it."""
    from igpo.data import finite_gold, jsonl_rows

    rows = 0
    for lineno, row in jsonl_rows(path):  # reads every line
        rows += 1
        gold = _row_gold(task, row) if task else None
        if gold is not None:
            finite_gold(gold, f"{path}:{lineno}")
        if task:
            _check_row_fields(task, row, f"{path}:{lineno}")
    if rows == 0:
        raise BadFile(f"{path}: the data file has no rows")


QUESTION_FIELD = {"igpo_gsm8k": "question"}
"""The field a benchmark row's question is named by in errors (others: `problem`); the prompt
reads whichever of tasks.utils.QUESTION_FIELDS the row has."""


def _check_row_fields(task: str, row: dict[str, Any], where: str) -> None:
    """A benchmark row holds its question and its answer as text (the answer may be a number);
    BadFile naming `where` (file:line) and the field otherwise."""
    from igpo.data import text_field
    from tasks.utils import QUESTION_FIELDS

    given = [name for name in QUESTION_FIELDS if name in row]
    field = next((name for name in given if row[name]), given[0] if given else QUESTION_FIELD.get(task, "problem"))
    if not text_field(row, field, where).strip():
        raise BadFile(f"{where}: field {field!r} is empty")
    answer = text_field(row, "answer", where)
    if task == "igpo_gsm8k" and "####" not in answer:
        raise BadFile(f"{where}: field 'answer' has no '####' before the gold number")


def _row_gold(task: str, row: dict[str, Any]) -> str | float | None:
    """The gold a benchmark row holds (its `answer`; GSM8K's after `####`), None when it has none
    to check here (a missing or malformed answer is reported by _check_row_fields)."""
    from igpo.scoring.answers import gsm8k_gold

    value = row.get("answer")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    if task == "igpo_gsm8k":
        return gsm8k_gold(value) if isinstance(value, str) and "####" in value else None
    return value


# --------------------------------------------------------------------------- YAML configs


def _function_constructor(loader: yaml.Loader, node: yaml.Node) -> Callable[..., Any]:
    """Resolve ``!function utils.fn`` to ``tasks.utils.fn`` (the file beside the YAMLs)."""
    spec = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    module_name, _, attr = spec.rpartition(".")
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, attr)


class _TaskYamlLoader(yaml.SafeLoader):
    """SafeLoader that also understands lm-eval's ``!function`` tag."""


_TaskYamlLoader.add_constructor("!function", _function_constructor)


class _KeysLoader(yaml.SafeLoader):
    """SafeLoader reading ``!function`` as its text: a YAML's plain keys without importing its code."""


_KeysLoader.add_constructor("!function", lambda loader, node: str(loader.construct_scalar(node)))


def _load_yaml(path: Path, loader: type[yaml.SafeLoader] = _TaskYamlLoader) -> dict[str, Any]:
    """A task YAML with ``include:`` files merged underneath it (local keys win)."""
    with path.open(encoding="utf-8") as fh:
        cfg = yaml.load(fh, Loader=loader)  # noqa: S506  (SafeLoader subclass)
    includes = cfg.pop("include", None)
    if includes is None:
        return cfg
    merged: dict[str, Any] = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        merged.update(_load_yaml(path.parent / inc, loader))
    merged.update(cfg)
    return merged


@functools.cache
def _dataset_keys(task: str) -> dict[str, Any]:
    """A leaf task's YAML, resolved, its `!function`s left as text (TaskSpec's Hub keys)."""
    return _load_yaml(TASK_DIR / f"{task}.yaml", _KeysLoader)


def task_config(task_name: str) -> dict[str, Any]:
    """The fully resolved lm-eval config of a task or group, as its YAML defines it."""
    full = TASKS.get(task_name, task_name)
    if full not in SPECS and full not in GROUPS:
        raise InvalidSetting(f"unknown task {task_name!r} (known: {', '.join(sorted(TASKS))})")
    return _load_yaml(TASK_DIR / f"{full}.yaml")


@functools.cache
def default_max_gen_toks(task_name: str | None) -> int | None:
    """The `max_gen_toks` an igpo task's own YAML sets (None for any other task).

    It is the task's default response budget: `dllm` lets it set the length only when no
    diffusion gen_length was asked for, and never cut a response shorter than the canvas the
    user asked for (harness/lmeval/settings.py)."""
    full = TASKS.get(task_name or "", task_name or "")
    if full not in SPECS:
        return None
    value = (task_config(full).get("generation_kwargs") or {}).get("max_gen_toks")
    return int(value) if value is not None else None


def task_overrides(
    task_name: str,
    data_dir: Path | str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete lm-eval task config for ``simple_evaluate(tasks=[...])``, on local data if set.

    With a data directory (argument or ``$IGPO_DATA_DIR``) the dataset becomes ``json`` +
    ``data_files`` pointing at the local file; ``extra`` keys (e.g. ``repeats``,
    ``generation_kwargs``) are applied last. Leaf tasks only: lm-eval 0.4.13 leaks an inline
    group's own keys into its children, so for groups use :func:`local_task_dir`.
    """
    full = TASKS.get(task_name, task_name)
    if full in GROUPS:
        raise InvalidSetting(f"{full!r} is a group; load it by name from local_task_dir(data_dir) instead")
    cfg = task_config(full)
    root = data_dir_or_env(data_dir)
    if root is not None and full not in GENERATED:
        cfg.update(_local_dataset_keys(full, cfg["test_split"], root))
    cfg.update(extra or {})
    return cfg


def _local_dataset_keys(task_name: str, split: str, data_dir: Path) -> dict[str, Any]:
    """Config keys that make lm-eval read ``split`` from the task's local JSON-lines file."""
    return {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(local_data_file(task_name, data_dir))}},
    }


_LOCAL_DIRS: dict[tuple[Path, frozenset[str]], Path] = {}
"""Include folders already written by :func:`local_task_dir` in this process."""


def _expand(names: list[str] | None) -> tuple[list[str], list[str]]:
    """(leaf tasks, groups) covered by ``names``; all of them when ``names`` is None."""
    full = resolve_tasks(names) if names is not None else [*SPECS, *GROUPS]
    groups = [name for name in full if name in GROUPS]
    leaves = [name for name in SPECS if name in full or any(name in GROUPS[g] for g in groups)]
    return leaves, groups


def local_task_dir(
    data_dir: Path | str | None = None,
    names: list[str] | None = None,
    dest: Path | str | None = None,
) -> Path:
    """An lm-eval include folder whose igpo tasks and groups read the local data files.

    Without a data directory (argument or ``$IGPO_DATA_DIR``) this is :data:`TASK_DIR`. Else
    each written YAML ``include:``s the installed one by absolute path and swaps the dataset,
    so groups work by name: ``TaskManager(include_path=<this>, include_defaults=False)``.
    Only ``names`` (default: all tasks and groups) are written; their data files must exist.
    ``dest`` defaults to a fresh temporary folder, reused within this process.
    """
    root = data_dir_or_env(data_dir)
    if root is None:
        return TASK_DIR
    root = root.expanduser().resolve()
    leaves, groups = _expand(names)
    key = (root, frozenset(leaves + groups))
    if dest is None and key in _LOCAL_DIRS and _LOCAL_DIRS[key].is_dir():
        return _LOCAL_DIRS[key]
    files = {
        name: {} if name in GENERATED else _local_dataset_keys(name, task_config(name)["test_split"], root)
        for name in leaves
    }
    out = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="igpo_tasks_"))
    out.mkdir(parents=True, exist_ok=True)
    for name, dataset_keys in files.items():
        cfg = {"include": str(TASK_DIR / f"{name}.yaml"), "task": name, **dataset_keys}
        (out / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    for name in groups:
        cfg = {"include": str(TASK_DIR / f"{name}.yaml"), "group": name}
        (out / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    if dest is None:
        _LOCAL_DIRS[key] = out
        atexit.register(shutil.rmtree, out, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- provenance


def dataset_source(task_name: str, data_dir: Path | str | None = None) -> str:
    """Human-readable data source: ``local:<abs path>`` or ``hf:<id>[/<config>]:<split>@<rev>``."""
    spec = _leaf(task_name)
    if spec.name in GENERATED:
        return str(importlib.import_module(GENERATED[spec.name]).DATASET_SOURCE)
    root = data_dir_or_env(data_dir)
    if root is not None:
        return f"local:{local_data_file(spec.name, root)}"
    config = f"/{spec.hub_config}" if spec.hub_config else ""
    return f"hf:{spec.hub_id}{config}:{spec.hub_split}@{spec.hub_revision or 'unpinned'}"


def data_hash(task_name: str, data_dir: Path | str | None = None) -> str:
    """Provenance hash: ``sha256:<hex>`` of the local file, or the Hub id+revision string."""
    full = _leaf(task_name).name
    if full in GENERATED:
        return str(importlib.import_module(GENERATED[full]).dataset_hash())
    root = data_dir_or_env(data_dir)
    if root is None:
        return dataset_source(task_name, None)
    digest = hashlib.sha256()
    with local_data_file(task_name, root).open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
