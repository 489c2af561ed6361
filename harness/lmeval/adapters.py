"""An adapter folder given where a model is expected: evaluated on the base it names.

A LoRA checkpoint of `igpo train` (or any PEFT adapter folder) holds adapter_config.json and no
config.json; its `base_model_name_or_path` names the model it was trained on. `igpo eval --model
DIR`, `igpo check DIR` and lm-eval's `--model_args pretrained=DIR` load that base and apply the
adapter, exactly as `--model BASE --adapter DIR` does (the run records model = BASE, adapter =
DIR either way). A base that is not there is one error line naming it and the override.
"""

from __future__ import annotations

from pathlib import Path

from igpo.errors import BadFile, InvalidSetting, MissingInput
from igpo.jsonfile import read_json_object
from igpo.models.adapter import ADAPTER_CONFIG

BASE_KEY = "base_model_name_or_path"


def is_adapter_folder(model: str | Path) -> bool:
    """A folder with adapter_config.json and no config.json of its own (not a full model)."""
    path = Path(model).expanduser()
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def named_base(adapter: str | Path) -> str | None:
    """The base model an adapter folder's adapter_config.json names (None when it names none)."""
    config = read_json_object(Path(adapter) / ADAPTER_CONFIG)
    base = config.get(BASE_KEY)
    if base is not None and not isinstance(base, str):
        raise BadFile(f"{Path(adapter) / ADAPTER_CONFIG}: {BASE_KEY} must be a string, got {base!r}")
    return base or None


def base_is_there(base: str) -> bool:
    """Whether a base can be loaded as named: a local folder, an embedded model, or a Hub id
    (owner/name, fetched as any --model is); a local path that does not exist is not."""
    from igpo.models.loading import EMBEDDED_MODELS, looks_like_hub_id

    return Path(base).expanduser().is_dir() or base in EMBEDDED_MODELS or looks_like_hub_id(base)


def model_and_adapter(model: str, adapter: str | None, override: str) -> tuple[str, str | None]:
    """(base model, adapter): `model` unchanged unless it is an adapter folder, whose named base is
    then the model and the folder the adapter. `override` is how the user names the base instead
    (e.g. "--model BASE --adapter DIR"), quoted in the errors."""
    if not model or not is_adapter_folder(model):
        return model, adapter
    if adapter:
        raise InvalidSetting(
            f"{model} is an adapter folder ({ADAPTER_CONFIG}, no config.json) and an adapter is given "
            f"too ({adapter}): name the base model instead ({override})"
        )
    base = named_base(model)
    if base is None:
        raise MissingInput(f"{Path(model) / ADAPTER_CONFIG} names no base model ({BASE_KEY}); give it with {override}")
    if not base_is_there(base):
        raise MissingInput(
            f"base model {base} named by {Path(model) / ADAPTER_CONFIG} ({BASE_KEY}) is not found; "
            f"give the base with {override}"
        )
    return base, model


def same_model(a: str, b: str) -> bool:
    """Whether two model names denote one model: an embedded name and its folder, two spellings
    of one local folder, or equal Hub ids."""
    from igpo.models.loading import EMBEDDED_MODELS

    def key(name: str) -> str:
        if name in EMBEDDED_MODELS:
            return str(EMBEDDED_MODELS[name].resolve())
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else name.rstrip("/")

    return key(a) == key(b)


ANY_BASE_FLAG = "--allow-base-mismatch"
"""The flag of `igpo eval` that applies an --adapter to a --model other than its recorded base."""


def base_for_adapter(model: str, adapter: str, allow_mismatch: bool = False) -> str:
    """The model an `--adapter DIR` is applied to: `model` (--model) when given, else the base its
    adapter_config.json records. A --model that is not the recorded base is refused (an adapter
    trained on one model and put on another scores as neither) unless `allow_mismatch`."""
    config = Path(adapter) / ADAPTER_CONFIG
    base = named_base(adapter) if config.is_file() else None
    if not model:
        if base is None:
            raise MissingInput(f"{config} names no base model ({BASE_KEY}): give it with --model BASE")
        if not base_is_there(base):
            raise MissingInput(f"base model {base} named by {config} ({BASE_KEY}) is not found; give it with --model")
        return base
    if base is not None and not allow_mismatch and not same_model(model, base):
        raise InvalidSetting(
            f"--model {model} is not the base of --adapter {adapter}, which {config} records as {base} "
            f"({BASE_KEY}): leave out --model to use it, or pass {ANY_BASE_FLAG} to apply the adapter "
            f"to {model} on purpose"
        )
    return model
