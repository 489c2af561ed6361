"""What a model's logits mean for a canvas: which position scores which token, and classifier-free
guidance. The decoder, the log-prob estimators and the SFT loss all read logits through here."""

from __future__ import annotations

import torch


def token_logits(logits: torch.Tensor, start: int, end: int, shifted: bool, offset: int = 0) -> torch.Tensor:
    """Logits [N, end - start, V] scoring canvas positions start .. end - 1, from `logits` of the
    canvas positions offset, offset + 1, ... (a window; 0 for the whole canvas).

    Shifted (Dream-style) logits: position i predicts token i + 1, and position 0 reads its own
    logits; the window must then begin one position before `start` (when start > 0).
    """
    start, end = start - offset, end - offset
    if not shifted:
        return logits[:, start:end]
    if start > 0:
        return logits[:, start - 1 : end - 1]
    return torch.cat([logits[:, :1], logits[:, : end - 1]], dim=1)


def guidance_canvas(x: torch.Tensor, prompt_len: int, mask_id: int) -> torch.Tensor:
    """[2B, L]: the canvas, then the same canvas with its prompt masked (the unconditional half)."""
    unconditional = x.clone()
    unconditional[:, :prompt_len] = mask_id
    return torch.cat([x, unconditional])


def guided(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance as LLaDA mixes it: u + (scale + 1) * (c - u), from the logits of a
    `guidance_canvas` (conditional half first)."""
    cond, unc = logits.chunk(2, dim=0)
    return unc + (scale + 1) * (cond - unc)
