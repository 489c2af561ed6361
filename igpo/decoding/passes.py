"""The model passes of a decode: full passes and KV-cached window passes, eager or compiled."""

from __future__ import annotations

import torch
from torch import nn

from igpo.decoding.graphs import device_of, graphed_passes, native_model
from igpo.models.logits import guidance_canvas, guided, token_logits


class BlockLogits:
    """Logits of the current block, from a full pass or, with a KV cache, from a window pass.

    `cache` (igpo.decoding.rules.CachePolicy) says whether full passes fill a KV cache and which
    window a cached pass recomputes (prefix: the block and everything after it; dual: the block).
    The caller marks which passes are full (`fresh`, from the same policy and its refresh rules).
    The cache's buffers are allocated once per decode; window positions are tensors, so each
    kind of pass keeps one shape for the whole decode (one compiled graph each; prefix windows
    shrink block by block and compile once per block).
    """

    def __init__(self, model, attn, positions, prompt_len, cfg_scale, mask_id, shifted, cache, compile=None):
        self.model, self.prompt_len, self.cfg_scale = model, prompt_len, cfg_scale
        self.mask_id, self.shifted, self.policy = mask_id, shifted, cache
        self.doubled = cfg_scale > 0
        self.attn = None if attn is None else (torch.cat([attn, attn]) if self.doubled else attn)
        self.positions = (
            None if positions is None else (torch.cat([positions, positions]) if self.doubled else positions)
        )
        self.runner = graphed_passes(model) if compile == "graphs" else None
        self.forward = self.runner or (compiled_forward(model) if compile == "inductor" else model)
        self.mark_steps = compile == "inductor" and device_of(model).type == "cuda"
        self.cache = None
        self.windows: dict[tuple[int, int], torch.Tensor] = {}

    def canvas(self, x: torch.Tensor) -> torch.Tensor:
        return guidance_canvas(x, self.prompt_len, self.mask_id) if self.doubled else x

    def guided(self, logits: torch.Tensor) -> torch.Tensor:
        return guided(logits, self.cfg_scale) if self.doubled else logits

    def _cache(self, inputs: torch.Tensor):
        """The decode's KV cache: the graph runner's static buffers; allocated here for a compiled
        forward (buffers made inside it would be graph outputs); else filled by the model."""
        if self.cache is None:
            from igpo.models.transformer import KVCache

            if self.runner is not None:
                self.cache = self.runner.cache_for(*inputs.shape)
            elif self.forward is not self.model:
                model = native_model(self.model)
                self.cache = KVCache.allocate(model.config, *inputs.shape, dtype=model.dtype, device=inputs.device)
                if self.mark_steps:  # fixed addresses: inductor's CUDA graphs write these buffers
                    for t in self.cache.keys + self.cache.values:
                        torch._dynamo.mark_static_address(t)
            else:
                self.cache = KVCache()
        return self.cache

    def _window(self, lo: int, hi: int, device) -> torch.Tensor:
        if (lo, hi) not in self.windows:
            self.windows[(lo, hi)] = torch.arange(lo, hi, device=device)
        return self.windows[(lo, hi)]

    def __call__(self, x: torch.Tensor, start: int, end: int, fresh: bool) -> torch.Tensor:
        """Logits [B, block, V]; `fresh` marks a full pass (it refills the cache)."""
        lo = start - 1 if self.shifted and start > 0 else start  # shifted: token j read at j-1
        inputs = self.canvas(x)
        if self.mark_steps:  # inductor's CUDA graphs: the last pass's outputs are consumed
            torch.compiler.cudagraph_mark_step_begin()
        kwargs = {}  # only what is set: other models' forwards may not take position_ids
        if self.attn is not None:
            kwargs["attention_mask"] = self.attn
        if self.positions is not None:
            kwargs["position_ids"] = self.positions
        if fresh:
            if self.policy.caches:
                kwargs["cache"] = self._cache(inputs)
            logits = self.guided(self.forward(inputs, **kwargs).logits)
            offset = 0
        else:
            hi = self.policy.window_end(inputs.shape[1], end)
            window = self._window(lo, hi, inputs.device)
            logits = self.forward(inputs[:, lo:hi], cache=self.cache, window=window, **kwargs).logits
            logits = self.guided(logits)
            offset = lo
        return token_logits(logits, start, end, self.shifted, offset)


def compiled_forward(model: nn.Module):
    """The model's forward through torch.compile, built once per model and kept on it.

    On a GPU mode "reduce-overhead" captures each pass shape in a CUDA graph (one launch per
    pass instead of thousands); on a CPU inductor fuses the elementwise ops. Shapes are static.
    """
    fn = getattr(model, "_compiled_forward", None)
    if fn is None:
        on_gpu = device_of(model).type == "cuda"
        fn = torch.compile(model.forward, mode="reduce-overhead" if on_gpu else None, dynamic=False)
        model._compiled_forward = fn
    return fn
