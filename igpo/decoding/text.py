"""Between token ids and text around the decoder: left-padded prompt batches and completions
cut at their first stop token (EOS or end-of-turn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def stop_ids(spec: Any) -> frozenset[int]:
    """The ids that end a completion: the model's EOS and end-of-turn tokens (when it has them)."""
    return frozenset(t for t in (spec.eos_id, spec.eot_id) if t is not None)


def cut_at_stop(tokens: Sequence[int], stops: frozenset[int]) -> list[int]:
    """The tokens before the first stop token."""
    cut = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
    return list(tokens[:cut])


def completion_texts(tokenizer: Any, completions: torch.Tensor, stops: frozenset[int]) -> list[str]:
    """Text of each completion row up to its first stop token (special tokens dropped)."""
    return [tokenizer.decode(cut_at_stop(row, stops), skip_special_tokens=True) for row in completions.tolist()]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask) [B, longest]: prompts right-aligned so every completion starts at
    the same position; the mask marks real tokens (rotary positions skip the padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask
