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

ADAPTER_CONFIG = "adapter_config.json"
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
    from igpo.models.loading import EMBEDDED_MODELS

    path = Path(base).expanduser()
    if path.is_dir() or base in EMBEDDED_MODELS:
        return True
    return not path.exists() and not base.startswith((".", "/", "~")) and base.count("/") == 1


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
