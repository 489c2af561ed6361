"""Typed configs from YAML: nested dataclasses, unknown keys rejected by name, key=value overrides.

`load_config(TrainConfig, "recipe.yaml", ["max_steps=2", "decode.temperature=1.0"])` reads the
recipe, applies dotted overrides (values parsed as YAML scalars) and checks every type.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from igpo.errors import InvalidSetting, require_file

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
            value = load_yaml(raw, f"override {key.strip()}") if raw != "" else ""
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


MAX_YAML_BYTES = 2**20
"""The largest YAML input read (a recipe, protocol, grid or reference file; shipped ones are a
few kilobytes): 1 MiB."""
MAX_YAML_DEPTH = 100
"""The deepest nesting of mappings and lists in a YAML input, aliases expanded."""
MAX_YAML_EXPANDED = 4 * MAX_YAML_BYTES
"""The most nodes plus scalar characters a YAML input may hold once its aliases are expanded:
an alias bomb (a few lines that expand to billions of nodes) is refused while it is read."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that weighs each node as it is composed (1 + the characters of a scalar, plus
    its children's weights: an alias weighs what it expands to) and refuses, naming `where`,
    a document nested deeper than MAX_YAML_DEPTH or heavier than MAX_YAML_EXPANDED."""

    def __init__(self, text: str, where: str) -> None:
        super().__init__(text)
        self.where = where
        self.depth = 0
        self.sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (weight, height)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            target = self.anchors.get(self.peek_event().anchor)
            if target is not None and id(target) not in self.sizes:
                raise ConfigError(f"{self.where}: line {self._line()}: an alias refers to the node that holds it")
            return super().compose_node(parent, index)  # weighed where its anchor was
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{self.where}: line {self._line()}: nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self._weigh(node)
        return node

    def _line(self, node: Any = None) -> int:
        """The 1-based line of `node`, else of the event about to be composed."""
        return (node or self.peek_event()).start_mark.line + 1

    def _weigh(self, node: Any) -> None:
        if isinstance(node, yaml.ScalarNode):
            self.sizes[id(node)] = (1 + len(node.value), 1)
            return
        pairs = node.value if isinstance(node, yaml.MappingNode) else [(child,) for child in node.value]
        children = [self.sizes[id(child)] for pair in pairs for child in pair]
        weight = 1 + sum(w for w, _ in children)
        height = 1 + max((h for _, h in children), default=0)
        if height > MAX_YAML_DEPTH:
            raise ConfigError(
                f"{self.where}: line {self._line(node)}: nested deeper than {MAX_YAML_DEPTH} levels once "
                "its aliases are expanded"
            )
        if weight > MAX_YAML_EXPANDED:
            raise ConfigError(
                f"{self.where}: line {self._line(node)}: expands to more than {MAX_YAML_EXPANDED} nodes and characters "
                "(aliases repeated into a huge document?)"
            )
        self.sizes[id(node)] = (weight, height)


def load_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load` of text from a user, bounded (MAX_YAML_BYTES, MAX_YAML_DEPTH,
    MAX_YAML_EXPANDED): ConfigError naming `where` past a bound; yaml.YAMLError as safe_load's.
    Every YAML a user hands the tool is read through here."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters, over the {MAX_YAML_BYTES} a YAML input may hold")
    loader = _BoundedLoader(text, where)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: Path, what: str) -> Any:
    """A YAML file read with `load_yaml`, refused before reading when over MAX_YAML_BYTES;
    yaml.YAMLError and UnicodeDecodeError pass through for the caller to word."""
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{what} {path} is {size} bytes, over the {MAX_YAML_BYTES} a YAML input may hold")
    return load_yaml(path.read_text(encoding="utf-8"), f"{what} {path}")


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty file: {}); one-line ConfigError naming
    `what` (recipe, grid, protocol, ...) when it is missing, malformed or over a bound."""
    require_file(path, what, error=ConfigError)
    try:
        loaded = read_yaml(path, what)
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
    if path.exists():  # a folder or FIFO given as the recipe: said so, not "not found"
        require_file(path, "recipe", error=ConfigError)
    shipped = Path(__file__).resolve().parent / "recipes" / (path.name if path.suffix else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    raise ConfigError(f"recipe not found: {name_or_path}")


@dataclasses.dataclass(frozen=True)
class FieldDoc:
    """One dataclass field as its source declares it."""

    name: str
    type: str
    """The annotation as written, e.g. `float | None`."""
    doc: str
    """The docstring below the field, its whitespace collapsed ('' when it has none)."""


def field_docs(source: Path, class_name: str) -> list[FieldDoc]:
    """The fields of class `class_name` in the Python file `source`, in order, each with its
    docstring, read with `ast`: nothing is imported (the CLI reads DecodeConfig's fields for its
    flags without loading torch)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    [cls] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
    out = []
    for node, after in zip(cls.body, [*cls.body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = ""
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
                doc = " ".join(str(after.value.value).split())
            out.append(FieldDoc(node.target.id, ast.unparse(node.annotation), doc))
    return out
