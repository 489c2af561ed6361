"""Published decoding code side by side (optional): LLaDA's modeling code and reference decoders.

The peer code is Fast-dLLM's `llada/` folder (its `model/` is LLaDA's published modeling code;
its `generate.py` holds LLaDA's reference `generate` and Fast-dLLM's `generate_with_dual_cache`).
It is never part of this repository: fetch it into an ignored folder (default `peers/fast-dllm/llada`)
and pass `--peer`. The peer model gets our model's very tensors (renamed to LLaDA's checkpoint
names), so both decode the same random weights. Where the peer code is absent or does not load
(e.g. a transformers version it does not support), `load` raises PeerUnavailable with the reason.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("peers/fast-dllm/llada")


class PeerUnavailable(RuntimeError):
    """The peer code is not there or cannot run here; the message says why in one line."""


def _einops_shim() -> types.ModuleType:
    """`einops.rearrange` for the two patterns the modeling code uses, if einops is missing."""
    module = types.ModuleType("einops")

    def rearrange(x, pattern: str, **sizes: Any):
        if pattern == "b s three h d -> b h three s d":
            b, s, three = x.shape[:3]
            return x.view(b, s, three, sizes["h"], -1).permute(0, 3, 2, 1, 4)
        if pattern == "b h s d -> b s (h d)":
            return x.transpose(1, 2).flatten(2)
        raise PeerUnavailable(f"einops is not installed and the shim lacks the pattern {pattern!r}")

    module.rearrange = rearrange
    return module


def load(peer_dir: Path = DEFAULT_DIR) -> types.ModuleType:
    """The peer's generate module (its `model` package importable beside it)."""
    peer_dir = Path(peer_dir).resolve()
    if not (peer_dir / "generate.py").is_file() or not (peer_dir / "model" / "modeling_llada.py").is_file():
        raise PeerUnavailable(f"no peer code in {peer_dir} (generate.py and model/modeling_llada.py)")
    try:
        importlib.import_module("einops")
    except ImportError:
        sys.modules["einops"] = _einops_shim()
    sys.path.insert(0, str(peer_dir))
    try:
        return importlib.import_module("generate")
    except Exception as err:  # foreign code: whatever it raises, the row says why and the check goes on
        raise PeerUnavailable(f"peer code in {peer_dir} does not import: {type(err).__name__}: {err}") from None
    finally:
        sys.path.remove(str(peer_dir))


def peer_model(peer: types.ModuleType, ours) -> Any:
    """LLaDA's published model holding our model's tensors (same device and dtype)."""
    import torch

    from igpo.models.families import FAMILIES, config_from_arch

    family = FAMILIES["llada"]
    model_mod = sys.modules.get("model.modeling_llada") or importlib.import_module("model.modeling_llada")
    config_mod = sys.modules.get("model.configuration_llada") or importlib.import_module("model.configuration_llada")
    try:
        config = config_mod.LLaDAConfig(**config_from_arch(family, ours.config))
        if not hasattr(config, "use_cache"):  # transformers 5 drops it; the modeling code reads it
            config.use_cache = False
        with torch.device("meta"):
            theirs = model_mod.LLaDAModelLM(config, init_params=False)
        state = {family.to_theirs(k): v for k, v in ours.state_dict().items()}
        missing, unexpected = theirs.load_state_dict(state, strict=False, assign=True)
    except Exception as err:
        raise PeerUnavailable(f"the peer model does not build: {type(err).__name__}: {err}") from None
    if [k for k in missing if not k.endswith("inv_freq")] or unexpected:
        raise PeerUnavailable(f"weights do not fit the peer model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    unset = [name for name, buf in theirs.named_buffers() if buf.is_meta]
    if unset:  # built on the meta device and not in our weights: no values to give them
        raise PeerUnavailable(f"the peer model has buffers our weights do not fill: {unset[:3]}")
    return theirs.eval()
