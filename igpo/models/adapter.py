"""Reading a PEFT (LoRA) adapter folder a user hands over: adapter_config.json and its weights
checked before peft sees them, so a damaged, foreign or incomplete folder is one line naming the
file and key (peft would report a missing weights file as a failed Hub download of the folder's
path, a wrong type deep inside its config class, a truncated file as a safetensors error)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from igpo.errors import BadFile, MissingInput
from igpo.jsonfile import read_json_object

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_adapter_folder(folder: str | Path) -> dict[str, Any]:
    """adapter_config.json of `folder` (an object with sane types: a rank >= 1, a finite alpha,
    dropout in [0, 1), target modules as names) and a readable weights file; returns the config."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise MissingInput(f"adapter folder not found: {folder}")
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise MissingInput(f"no {ADAPTER_CONFIG} in adapter folder {folder}")
    config = read_json_object(config_file)
    peft_type = config.get("peft_type", "LORA")
    if not isinstance(peft_type, str):
        raise BadFile(f"{config_file}: peft_type must be a string, got {peft_type!r}")
    rank = config.get("r", 8)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise BadFile(f"{config_file}: r (the adapter rank) must be an integer >= 1, got {rank!r}")
    alpha = config.get("lora_alpha", 8)
    if not _number(alpha) or alpha <= 0:
        raise BadFile(f"{config_file}: lora_alpha must be a positive number, got {alpha!r}")
    dropout = config.get("lora_dropout", 0.0)
    if not _number(dropout) or not 0 <= dropout < 1:
        raise BadFile(f"{config_file}: lora_dropout must be a number in [0, 1), got {dropout!r}")
    targets = config.get("target_modules")
    names = [targets] if isinstance(targets, str) else targets
    if targets is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise BadFile(f"{config_file}: target_modules must be a name or a list of names, got {targets!r}")
    base = config.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise BadFile(f"{config_file}: base_model_name_or_path must be a string, got {base!r}")
    _check_weights(path)
    return config


def _check_weights(path: Path) -> None:
    """The adapter's weights file is there and its header / archive reads (not the Hub's turn)."""
    files = [path / name for name in ADAPTER_WEIGHTS if (path / name).is_file()]
    if not files:
        raise MissingInput(f"no adapter weights in adapter folder {path} ({' or '.join(ADAPTER_WEIGHTS)})")
    file = files[0]
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        from igpo.models.files import damaged_file_errors

        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:  # reads and checks the header
                f.keys()
        except damaged_file_errors() as err:
            raise BadFile(f"cannot read adapter weights {file} (damaged?): {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def load_adapter(model: Any, folder: str | Path, *, trainable: bool = False) -> Any:
    """`model` wrapped with the PEFT adapter in `folder` (checked first); an adapter that does not
    fit the model (other projections, other sizes) is one BadFile line naming the folder, one
    holding NaN or inf one naming its weights file."""
    from peft import PeftModel

    from igpo.models.files import check_finite

    check_adapter_folder(folder)
    try:
        wrapped = PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:  # peft / torch on a foreign adapter
        sizes = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        detail = sizes[0] if sizes else _first_line(err)  # torch lists every weight: the first says it
        raise BadFile(f"adapter {folder} does not fit the model: {detail}") from None
    here = Path(folder).expanduser()
    weights = next(here / name for name in ADAPTER_WEIGHTS if (here / name).is_file())
    check_finite(((n, p) for n, p in wrapped.named_parameters() if "lora_" in n), weights)
    return wrapped
