"""lm-evaluation-harness integration: the `dllm` model (registered when `harness.lmeval.model` is
imported, which `DiffusionLM` here does on first use) and task paths. Importing this package
alone loads neither lm-eval nor the model, so `igpo lm-eval` checks model_args
(`harness.lmeval.args`) before lm-eval starts."""

from __future__ import annotations

from typing import Any

__all__ = ["DiffusionLM"]


def __getattr__(name: str) -> Any:
    if name == "DiffusionLM":
        from harness.lmeval.model import DiffusionLM

        return DiffusionLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
