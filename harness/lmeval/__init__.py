"""lm-evaluation-harness integration: the `dllm` model (registered on import) and task paths."""

from harness.lmeval.model import DiffusionLM

__all__ = ["DiffusionLM"]
