"""Typed configs from YAML: nested dataclasses, unknown keys rejected by name, key=value overrides.

`load_config(TrainConfig, "recipe.yaml", ["max_steps=2", "decode.temperature=1.0"])` reads the
recipe, applies dotted overrides (values parsed as YAML scalars) and checks every type.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from igpo.errors import InvalidSetting

T = TypeVar("T")


class ConfigError(InvalidSetting):
    """A recipe or override that does not fit the config; the message names the key."""


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


TEXT_TRUE = ("true", "1", "yes")
TEXT_FALSE = ("false", "0", "no")
TEXT_NONE = ("none", "null", "")
"""How text spells booleans and nothing (command-line values, lm-eval model_args)."""


def coerce(value: Any, tp: Any, where: str, *, from_text: bool = False) -> Any:
    """The one conversion of a user's value to a declared type (recipes, overrides, protocols,
    lm-eval model_args and generation kwargs all come through here); ConfigError names `where`.

    Typed values (YAML) must already be of the type (an int for a float is fine). With
    `from_text`, strings are read as the type first: `true`/`1`/`yes`, `none`, `1e3` for an
    integer, `1 2 3` (or `;` / `|` separated) for a tuple, quotes stripped.
    """
    if from_text and isinstance(value, str):
        value = _parse_text(value, tp, where)
    return _convert(value, tp, where, from_text)


def _parse_text(text: str, tp: Any, where: str) -> Any:
    inner, optional = _strip_optional(tp)
    text = text.strip().strip("'\"")
    low = text.lower()
    if optional and low in TEXT_NONE:
        return None
    if inner is bool:
        if low in TEXT_TRUE or low in TEXT_FALSE:
            return low in TEXT_TRUE
        raise ConfigError(f"{where}: expected true/false, got {text!r}")
    if inner in (int, float):
        try:
            return float(text) if inner is float or not text.lstrip("+-").isdigit() else int(text)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {text!r}") from None
    if typing.get_origin(inner) in (list, tuple):
        return [part for part in text.replace(";", " ").replace("|", " ").replace(",", " ").split()]
    return text


def _convert(value: Any, tp: Any, where: str, from_text: bool = False) -> Any:
    """Check and convert one value to the annotated type (ints accepted for floats, etc.)."""
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise ConfigError(f"{where}: null is not allowed here")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return build(tp, value, where)
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if from_text and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "5e-5" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [coerce(v, inner, f"{where}[{i}]", from_text=from_text) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return dict(value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, typing.get_args(tp)))}")
        return value
    return value


def build(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """A `cls` instance from a mapping; unknown keys raise ConfigError naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists) for YAML/JSON."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(obj)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys from `key=value` strings; values are parsed as YAML scalars/lists."""
    out = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return out


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); one-line ConfigError naming
    `what` (recipe, grid, protocol, ...) when it is missing or malformed."""
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"malformed {what} {path}: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({err.reason})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"malformed {what} {path}: expected a mapping at top level")
    return loaded or {}


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read a recipe YAML (or start from defaults when path is None) and apply overrides."""
    data = read_yaml_mapping(Path(path), "recipe") if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return build(cls, data)


def resolve_recipe(name_or_path: str | Path) -> Path:
    """A recipe path: an existing file, or the name of one shipped under igpo/recipes/."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parent / "recipes" / (path.name if path.suffix else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    raise ConfigError(f"recipe not found: {name_or_path}")
