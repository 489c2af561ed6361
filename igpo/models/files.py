"""Weights and state files a user hands over, read safely: what a damaged file raises, told apart
from out-of-memory and bugs, `torch.load` restricted to tensors, and weights refused when they
hold NaN or inf. Loading (`loading.py`), adapters (`adapter.py`) and training checkpoints all
read their files through these."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from igpo.errors import BadFile


class ModelLoadError(BadFile):
    """A model folder or id that cannot be loaded; the message names the problem in one line."""


def check_finite(tensors: Any, where: str | Path) -> None:
    """Refuse a weight holding NaN or inf (a damaged or diverged checkpoint would decode garbage
    and score 0% with no word): one line naming `where` (the file) and the first such tensor.
    One reduction per tensor where it was loaded (on a GPU: one small sync each)."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelLoadError(f"weights file {where} holds non-finite values (NaN or inf) in {name}")


class DamagedFileError(RuntimeError):
    """torch.load's RuntimeError for a truncated or foreign archive, told apart from other ones."""


def torch_load(file: Path, **kwargs: Any) -> Any:
    """torch.load(weights_only=True); a damaged archive raises DamagedFileError."""
    try:
        return torch.load(file, weights_only=True, **kwargs)
    except RuntimeError as err:
        text = str(err)
        if "PytorchStreamReader" in text or "zip archive" in text or "central directory" in text:
            raise DamagedFileError(text) from None
        raise


def damaged_file_errors() -> tuple[type[BaseException], ...]:
    """What reading a truncated, empty or foreign weights / state file raises (not OOM or bugs)."""
    import pickle
    import zipfile

    from safetensors import SafetensorError

    return (
        SafetensorError,
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        json.JSONDecodeError,
        UnicodeDecodeError,
        KeyError,
        OSError,
        DamagedFileError,
    )
