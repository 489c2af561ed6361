"""Model loading: native LLaDA, Dream and tiny dLLMs, their tokenizers and special tokens."""

from igpo.models.fused import fuse_projections
from igpo.models.loading import (
    ModelLoadError,
    TokenSpec,
    load_model,
    load_tokenizer,
    new_model,
    save_model,
)
from igpo.models.transformer import ArchConfig, BidirectionalLM, DLLMOutput, KVCache

__all__ = [
    "ArchConfig",
    "BidirectionalLM",
    "DLLMOutput",
    "KVCache",
    "ModelLoadError",
    "TokenSpec",
    "fuse_projections",
    "load_model",
    "load_tokenizer",
    "new_model",
    "save_model",
]
