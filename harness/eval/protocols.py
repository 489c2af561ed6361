"""Evaluation protocols: named, file-defined presets of decoding and sampling per task.

A protocol file (YAML) has: name, description, source, seeds, decoding (DecodeConfig fields),
optionally gen_lengths + steps_ratio (one variant per length, results keyed `task@length`; a
task whose lengths all resolve to one decoding runs once, keyed `task`),
and tasks: per-task overrides of decoding fields plus `repeats` (k samples per problem: avg@k).
Built-in protocols live in harness/eval/protocols/*.yaml; any other path to a YAML file works too.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from igpo.config import coerce
from igpo.decoding.config import DecodeConfig, DecodeOverrides, is_off
from igpo.errors import InvalidSetting, require_file

PROTOCOL_DIR = Path(__file__).resolve().parent / "protocols"
TOP_KEYS = {"name", "description", "source", "seeds", "decoding", "gen_lengths", "steps_ratio", "tasks"}
TASK_KEYS = {f.name for f in fields(DecodeConfig)} | {"repeats"}


class ProtocolError(InvalidSetting):
    """A protocol that does not exist or does not parse; the message names the problem."""


MAX_SEED = 2**32 - 1
"""The largest evaluation seed: lm-eval seeds numpy's global generator with it, which takes
0 .. 2**32 - 1 (python's random and torch.manual_seed take more)."""


MAX_REPEATS = 1024
"""The most samples per problem a protocol task may ask for (`repeats`; AMC's avg@16 uses 16)."""


def check_seeds(seeds: Any, what: str) -> list[int]:
    """The one check of evaluation seeds (a protocol's `seeds`, `--seeds`): a non-empty list of
    integers from 0 to MAX_SEED (lm-eval seeds numpy's generator with each), each once (a seed
    twice would count the same draws twice and narrow the interval). Returns them; raises
    InvalidSetting naming `what` otherwise."""
    if not isinstance(seeds, list) or not seeds:
        raise InvalidSetting(
            f"{what} must list at least one seed (a non-empty list of integers from 0 to {MAX_SEED}), got {seeds!r}"
        )
    seeds = coerce(seeds, list[int], what)
    bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
    if bad:
        raise InvalidSetting(f"{what}: seed {bad[0]} is out of range; seeds go from 0 to {MAX_SEED} (2**32 - 1)")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise InvalidSetting(f"{what} lists seed {', '.join(map(str, twice))} more than once; each seed once")
    return seeds


@dataclass
class Protocol:
    name: str
    description: str = ""
    source: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    decoding: DecodeConfig = field(default_factory=DecodeConfig)
    gen_lengths: list[int] | None = None
    steps_ratio: float | None = None
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    file_hash: str = ""

    def __post_init__(self) -> None:
        check_seeds(self.seeds, "'seeds'")  # MAX_SEED

    def variants(self) -> list[tuple[str, DecodeConfig]]:
        """(suffix, decoding) per generation length: [("", base)] or [("@128", ...), ...]."""
        if not self.gen_lengths:
            return [("", self.decoding)]
        out = []
        for length in self.gen_lengths:
            steps = max(1, round(length * self.steps_ratio)) if self.steps_ratio else self.decoding.steps
            out.append((f"@{length}", self.decoding.replace(gen_length=length, steps=steps)))
        return out

    def for_task(
        self, task: str, base: DecodeConfig, overrides: DecodeOverrides | None = None
    ) -> tuple[DecodeConfig, int]:
        """The decoding settings and repeats (samples per problem) of one task. `overrides` (the
        user's flags) win over the protocol's per-task settings; turning the cache off (`none`)
        drops the protocol's cache refresh settings too, not the user's."""
        extra = dict(self.tasks.get(task, {}))
        repeats = int(extra.pop("repeats", 1))
        given = overrides.given() if overrides else {}
        if is_off(given.get("cache")):  # `--cache none`: the protocol's refresh rule goes with its cache
            given = {"cache_refresh": None, "cache_refresh_tokens": None, **given}
        return base.replace(**{**extra, **given}), repeats

    def task_variants(self, task: str, overrides: DecodeOverrides | None = None) -> list[tuple[str, DecodeConfig, int]]:
        """(result-key suffix, decoding, repeats) of one task, one per distinct decoding. A length
        whose decoding repeats an earlier length's is dropped, and when every length decodes
        alike (igpo_arith's fixed 48-token canvas under d1's 128 / 256 / 512) the one left is
        keyed without a length: three copies of one decode would count it three times."""
        out: list[tuple[str, DecodeConfig, int]] = []
        for suffix, variant in self.variants():
            cfg, repeats = self.for_task(task, variant, overrides)
            if not any(cfg == seen and repeats == times for _, seen, times in out):
                out.append((suffix, cfg, repeats))
        if len(out) == 1:
            out = [("", *out[0][1:])]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "seeds": self.seeds,
            "decoding": self.decoding.to_dict(),
            "gen_lengths": self.gen_lengths,
            "steps_ratio": self.steps_ratio,
            "tasks": self.tasks,
            "file_hash": self.file_hash,
        }


def available() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A built-in protocol by name, or a protocol YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROTOCOL_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ProtocolError(f"unknown protocol {str(name_or_path)!r} (built in: {', '.join(available())})")
    require_file(path, "protocol file", error=ProtocolError)
    from igpo.config import ConfigError, read_yaml_mapping

    try:
        raw = read_yaml_mapping(path, "protocol file")
    except ConfigError as err:
        raise ProtocolError(str(err)) from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return parse_protocol(raw, source=str(path), file_hash="sha256:" + digest)


def parse_protocol(raw: Any, *, source: str = "<dict>", file_hash: str = "") -> Protocol:
    """Validate a protocol mapping; unknown keys and bad values are named in the error."""
    if not isinstance(raw, dict):
        raise ProtocolError(f"malformed protocol {source}: expected a mapping at top level")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ProtocolError(f"malformed protocol {source}: unknown key(s) {', '.join(unknown)}")
    if not raw.get("name"):
        raise ProtocolError(f"malformed protocol {source}: missing 'name'")
    try:
        decoding = coerce(raw.get("decoding") or {}, DecodeConfig, "decoding")
        tasks = raw.get("tasks") or {}
        if not isinstance(tasks, dict):
            raise InvalidSetting("'tasks' must map task names to settings")
        from tasks.registry import SPECS, TASKS

        for task, settings in tasks.items():
            if task not in SPECS:  # a key no task reads would be silently ignored
                hint = f" (write {TASKS[task]!r})" if task in TASKS and TASKS[task] in SPECS else ""
                raise InvalidSetting(f"'tasks' names unknown task {task!r}{hint}; known: {', '.join(sorted(SPECS))}")
            _check_task_settings(task, settings or {})
        seeds = raw.get("seeds")
        seeds = check_seeds([0] if seeds is None else seeds, "'seeds'")  # absent or left empty: seed 0
        lengths = coerce(raw.get("gen_lengths"), list[int] | None, "gen_lengths") or None
        ratio = coerce(raw.get("steps_ratio"), float | None, "steps_ratio")
        protocol = Protocol(
            name=str(raw["name"]),
            description=str(raw.get("description", "")),
            source=str(raw.get("source", "")),
            seeds=seeds,
            decoding=decoding,
            gen_lengths=lengths,
            steps_ratio=ratio,
            tasks={k: dict(v or {}) for k, v in tasks.items()},
            file_hash=file_hash,
        )
        for _, cfg in protocol.variants():
            if cfg.gen_length % cfg.block_length or cfg.steps % (cfg.gen_length // cfg.block_length):
                raise InvalidSetting(
                    f"gen_length {cfg.gen_length}, block_length {cfg.block_length} and "
                    f"steps {cfg.steps} do not divide evenly"
                )
    except (TypeError, ValueError) as err:
        raise ProtocolError(f"malformed protocol {source}: {err}") from None
    return protocol


def _check_task_settings(task: str, settings: dict[str, Any]) -> None:
    """One task's settings: known keys only, and `repeats` a whole number from 1 to MAX_REPEATS
    (0 samples per problem would leave nothing to average, after the whole decoding)."""
    bad = sorted(set(settings) - TASK_KEYS)
    if bad:
        raise InvalidSetting(f"task {task!r} has unknown setting(s) {', '.join(bad)}")
    if "repeats" in settings:
        repeats = coerce(settings["repeats"], int, f"task {task!r} repeats")
        if not 1 <= repeats <= MAX_REPEATS:
            raise InvalidSetting(f"task {task!r}: repeats must be from 1 to {MAX_REPEATS}, got {repeats}")


COMPARED = ("seeds", "decoding", "gen_lengths", "steps_ratio", "tasks")
"""The settings of a protocol that change what a run measures (the rest describes it)."""


@functools.lru_cache(maxsize=32)
def _shipped(path: Path, stamp: tuple[int, int]) -> dict[str, Any] | None:
    """The shipped protocol file's to_dict() (`stamp`: its mtime and size, so an edit is seen);
    None when it does not load."""
    try:
        return load_protocol(path).to_dict()
    except ProtocolError:
        return None


def _changes(prefix: str, recorded: Any, shipped: Any, default: dict[str, Any] | None = None) -> list[str]:
    """`prefix.key recorded (shipped: value)` for each setting that differs; tables compared key by
    key, a key one side lacks read as `default`'s value (a field added since the run was written)."""
    if isinstance(recorded, dict) and isinstance(shipped, dict):
        default = default or {}
        out = []
        for key in sorted(set(recorded) | set(shipped), key=str):
            out += _changes(f"{prefix}.{key}", recorded.get(key, default.get(key)), shipped.get(key, default.get(key)))
        return out
    return [] if recorded == shipped else [f"{prefix} {recorded!r} (shipped: {shipped!r})"]


def shipped_difference(
    name: str | None, file_hash: str | None, settings: dict[str, Any], seeds: list[int] | None = None
) -> str | None:
    """How a run's protocol, by its recorded file hash and settings, departs from the shipped
    protocol of the same name (harness/eval/protocols/<name>.yaml), e.g. an edited copy of igpo.yaml
    passed as `--protocol path/igpo.yaml`; None when the name is no shipped protocol, the record
    has no file hash, the hashes agree, or every setting in COMPARED agrees (a comment or
    description edit). `settings`: the recorded protocol table; `seeds`: the protocol's seeds."""
    settings = {**settings, **({"seeds": seeds} if seeds else {})}
    if not name or not file_hash or Path(name).name != name:
        return None
    path = PROTOCOL_DIR / f"{name}.yaml"
    try:
        stat = path.stat()
    except OSError:
        return None
    shipped = _shipped(path, (stat.st_mtime_ns, stat.st_size))
    if shipped is None or shipped["file_hash"] == file_hash:
        return None
    where = f"protocol file differs from the shipped {path.name}"
    present = [key for key in COMPARED if key in settings]
    if not present:  # nothing but the hash to compare
        return f"{where} (file hash {file_hash})"
    defaults = DecodeConfig().to_dict()
    changes = []
    for key in present:  # a record written without a setting is not judged on it
        recorded, ref = settings.get(key), shipped.get(key)
        if key == "tasks":
            recorded, ref = recorded or {}, ref or {}
        changes += _changes(key, recorded, ref, defaults if key == "decoding" else None)
    return f"{where}: {', '.join(changes)}" if changes else None
