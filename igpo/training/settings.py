"""Config pieces shared by the SFT and RL trainers: model/LoRA, optimiser, checkpoints, logging;
TrainingError, the kind of bad training input."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from igpo.config import coerce
from igpo.errors import InvalidSetting


class TrainingError(InvalidSetting):
    """Bad training input (output folder, data, resume state); printed as one line by the CLI."""


@dataclass
class LoraSettings:
    """LoRA adapter on the attention and MLP projections (peft)."""

    enabled: bool = True
    """Train a LoRA adapter; False trains every weight."""
    r: int = 128
    """Adapter rank (released IGPO run: 128)."""
    alpha: int = 64
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Projection names of the native models (LLaDA's q/k/v/attn_out/ff_proj/up_proj/ff_out)."""

    def __post_init__(self) -> None:
        if not self.enabled:
            return  # full-weight training: the adapter settings are not used
        if self.r < 1:
            raise InvalidSetting(f"lora.r (the adapter rank) must be >= 1, got {self.r}")
        if not self.alpha > 0:
            raise InvalidSetting(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise InvalidSetting(f"lora.dropout must lie in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise InvalidSetting("lora.target_modules must name at least one projection")


@dataclass
class ModelSettings:
    """Which model to train and how to hold it."""

    path: str = ""
    """Model folder or Hub id (required)."""
    tokenizer: str | None = None
    """Tokenizer folder; default: the model's."""
    adapter: str | None = None
    """Start from this LoRA adapter (e.g. an SFT result) instead of a fresh one."""
    dtype: str | None = None
    """float32 | bfloat16; default bf16 on GPU, float32 on CPU."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False
    """Recompute block activations in backward to save memory."""


Schedule = Literal["constant", "cosine", "linear"]
"""The learning rate after warm-up: constant, or a cosine or linear decay to zero."""


@dataclass
class OptimSettings:
    """AdamW with warm-up and a schedule."""

    lr: float = 5e-7
    """Peak learning rate (released IGPO run: 5e-7)."""
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    grad_clip: float = 0.2
    """Max global gradient norm; 0 disables clipping."""
    warmup_steps: int = 50
    """Linear warm-up over this many optimiser steps."""
    schedule: Schedule = "constant"
    """After warm-up: constant | cosine | linear decay to zero at the last step."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise InvalidSetting(f"optim.lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "grad_clip", "warmup_steps"):  # each named with its own value
            if getattr(self, name) < 0:
                raise InvalidSetting(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        if not all(0 <= b < 1 for b in self.betas):
            raise InvalidSetting(f"optim.betas must lie in [0, 1), got {self.betas}")
        coerce(self.schedule, Schedule, "optim.schedule")


@dataclass
class CheckpointSettings:
    """When to write checkpoints (Hugging Face format + trainer state) and how many to keep."""

    every: int = 10
    """Save every N training steps (and always at the end); 0 saves only at the end."""
    keep: int | None = None
    """Keep only the newest N checkpoints; None keeps all."""

    def due(self, step: int, max_steps: int) -> bool:
        """Whether finishing `step` writes a checkpoint: every N steps, and always the last."""
        return bool(self.every and step % self.every == 0) or step == max_steps


@dataclass
class LogSettings:
    """Where metrics go besides metrics.jsonl in the output folder."""

    tensorboard: bool = False
    """Write TensorBoard scalars (needs the tensorboard package)."""
    wandb: bool = False
    """Log to Weights & Biases (needs wandb and a login)."""
    wandb_project: str = "igpo"
    progress: bool = True
    """Show a progress bar."""
    hint_gradients: bool = False
    """RL: measure the gradient norm from hinted and from unhinted rollouts at each step's first
    update (metrics grad_norm_hinted / grad_norm_unhinted / hinted_grad_share; one more backward
    pass per group with hinted rollouts)."""
