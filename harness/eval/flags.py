"""The decoding flags of `igpo eval`, made from `DecodeConfig`'s fields: one `--flag` per field
(its name, type and docstring as the help), so a new decoding field is a flag without a line
here. The fields are read from the source with `ast` (`igpo.config.field_docs`): building the
CLI loads neither torch nor the decoder."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from igpo.config import FieldDoc, field_docs

NOT_CLI = frozenset({"suppress_tokens", "last_tokens", "early_exit"})
"""DecodeConfig fields with no `igpo eval` flag (token ids belong in protocols and model_args)."""
TYPES = {"int": int, "float": float, "str": str, "bool": bool, "Remasking": str}
"""A field's declared type (without `| None`) -> the flag's type. A closed vocabulary (a
`typing.Literal` alias such as `Remasking`) is a text flag: DecodeConfig refuses other values."""
PARAMETER = "decoding"
"""The parameter of a command that `decoding_flags` replaces by the flags; it receives the
given ones as a `DecodeOverrides`."""


def decode_config_source() -> Path:
    """igpo/decoding/config.py, found without importing igpo.decoding (which loads torch)."""
    spec = importlib.util.find_spec("igpo.decoding")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "config.py"


def flag_fields() -> list[FieldDoc]:
    """DecodeConfig's fields that are flags, in declaration order."""
    return [f for f in field_docs(decode_config_source(), "DecodeConfig") if f.name not in NOT_CLI]


def flag_parameter(f: FieldDoc) -> inspect.Parameter:
    """One field as a keyword parameter typer reads: an optional value (None: not given, the
    protocol's setting stands); a boolean as `--name/--no-name`."""
    kind = TYPES.get(f.type.removesuffix(" | None"))
    if kind is None:
        raise TypeError(f"DecodeConfig.{f.name}: no flag for type {f.type!r} (add it to NOT_CLI or TYPES)")
    name = "--" + f.name.replace("_", "-")
    decls = [f"{name}/--no-{name[2:]}"] if kind is bool else [name]
    option = typer.Option(*decls, help=f.doc or None)
    return inspect.Parameter(
        f.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def decoding_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with its `decoding` parameter replaced by one flag per DecodeConfig field; it is
    called with `decoding=DecodeOverrides(...)` holding the flags given (the typed overrides
    `igpo eval` applies over every task's protocol settings)."""
    signature = inspect.signature(command)
    # the `decoding` parameter's own annotation is not read (the CLI names DecodeOverrides only
    # for type checkers: importing it loads torch)
    hints = typing.get_type_hints(command, include_extras=True, localns={"DecodeOverrides": object})
    flags = [flag_parameter(f) for f in flag_fields()]
    params = []
    for p in signature.parameters.values():
        if p.name == PARAMETER:
            params += flags
        else:
            params.append(p.replace(annotation=hints[p.name], kind=inspect.Parameter.KEYWORD_ONLY))
    names = [f.name for f in flags]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        from igpo.decoding import DecodeOverrides

        given = {k: v for k in names if (v := kwargs.pop(k, None)) is not None}
        return command(**kwargs, **{PARAMETER: DecodeOverrides(**given)})

    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
