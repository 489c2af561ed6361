"""CUDA-graph replay of decoding passes: one launch per pass instead of ~1,000 eager kernels.

At batch 1 an 8B-shaped pass is launch-bound: the GPU finishes each kernel before the host has
issued the next. A pass of a decode always has one of a few shapes (the full canvas; the
dual-cache window), so each shape is captured once (`torch.cuda.CUDAGraph`) into static input,
output and KV-cache buffers, and replayed for every later pass: the host then copies the canvas
in and launches one graph. The model's forward reads no device value on the host when given
position ids or no mask (igpo.models.transformer), which is what makes it capturable.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from igpo.errors import InvalidSetting

MAX_SHAPES = 4
"""Captured pass shapes kept per model (least recently used dropped): a decode uses one or two."""
WARMUP_RUNS = 2
"""Eager runs on a side stream before a capture (cuBLAS and allocator set-up happen there)."""
INPUTS = ("input_ids", "attention_mask", "position_ids", "window")
"""Keyword arguments copied into a captured pass's static buffers before each replay."""


@dataclass
class Captured:
    """One pass shape: its graph (None when replays run eagerly), static inputs and output."""

    graph: Any
    inputs: dict[str, torch.Tensor]
    output: torch.Tensor | None = None
    keep: tuple = ()
    """Tensors the graph reads that must outlive it (the rotary tables at capture time)."""


class GraphedPasses:
    """Runs a model's decoding passes through captured CUDA graphs, one per pass shape.

    Call it like the model (keywords of BidirectionalLM.forward). KV caches come from
    `cache_for`, so their buffers keep the addresses the graphs were captured with.
    `capture=False` runs the same static-buffer path eagerly (what CPU tests check).
    """

    def __init__(self, model: nn.Module, capture: bool = True) -> None:
        self.model, self.capture = model, capture
        self.passes: OrderedDict[tuple, Captured] = OrderedDict()
        self.caches: OrderedDict[tuple[int, int], Any] = OrderedDict()

    def cache_for(self, batch: int, length: int):
        """The static KV cache of a [batch, length] canvas (allocated once per shape)."""
        from igpo.models.transformer import KVCache

        key = (batch, length)
        if key not in self.caches:
            model = native_model(self.model)
            self.caches[key] = KVCache.allocate(model.config, batch, length, dtype=model.dtype, device=model.device)
            while len(self.caches) > MAX_SHAPES:
                dropped = self.caches.popitem(last=False)[1]
                self.passes = OrderedDict((k, v) for k, v in self.passes.items() if k[-1] != id(dropped))
        self.caches.move_to_end(key)
        return self.caches[key]

    def __call__(self, input_ids: torch.Tensor, *, cache=None, **kwargs: torch.Tensor | None):
        from igpo.models.transformer import DLLMOutput

        given = {"input_ids": input_ids, **kwargs}
        key = tuple((name, tuple(t.shape)) for name, t in given.items() if t is not None) + (id(cache),)
        entry = self.passes.get(key)
        if entry is None:
            entry = self._capture(key, given, cache)
        for name, tensor in given.items():  # a handful of small copies: the canvas changes every pass
            if tensor is not None:
                entry.inputs[name].copy_(tensor)
        if entry.graph is not None:
            entry.graph.replay()
        else:
            entry.output = self._run(entry.inputs, cache)
        return DLLMOutput(logits=entry.output)

    def _run(self, inputs: dict[str, torch.Tensor], cache) -> torch.Tensor:
        return self.model(**inputs, cache=cache).logits

    def _capture(self, key: tuple, given: dict[str, torch.Tensor | None], cache) -> Captured:
        inputs = {name: t.clone() for name, t in given.items() if t is not None}
        entry = Captured(graph=None, inputs=inputs)
        if self.capture:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_RUNS):  # also grows the rotary tables before capture
                    self._run(inputs, cache)
            torch.cuda.current_stream().wait_stream(stream)
            rotary = native_model(self.model).rotary
            entry.keep = (rotary.cos, rotary.signed_sin)
            entry.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(entry.graph):
                entry.output = self._run(inputs, cache)
        self.passes[key] = entry
        while len(self.passes) > 2 * MAX_SHAPES:
            self.passes.popitem(last=False)
        return entry


def native_model(model: nn.Module) -> nn.Module:
    """The BidirectionalLM under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def device_of(model: nn.Module) -> torch.device:
    """Where the model's weights live (CPU for a model that does not say)."""
    return getattr(model, "device", torch.device("cpu"))


def graphed_passes(model: nn.Module) -> GraphedPasses:
    """The model's GraphedPasses, made on first use; capturing needs the model on a GPU."""
    runner = getattr(model, "_graphed_passes", None)
    if runner is None:
        device = device_of(model)
        if device.type != "cuda":
            raise InvalidSetting(
                f"compile='graphs' captures CUDA graphs and needs the model on a GPU (it is on {device}); "
                "use compile='inductor' or no compile on a CPU"
            )
        runner = GraphedPasses(model, capture=True)
        model._graphed_passes = runner
    return runner
