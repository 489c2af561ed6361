"""Load and save dLLMs and their tokenizers: native families from safetensors, remote code on request.

Nothing here unpickles an untrusted file: weights come from safetensors, and a legacy
`pytorch_model.bin` is read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from igpo.atomic import FILE_MODE, atomic_write_bytes
from igpo.errors import InvalidSetting
from igpo.jsonfile import read_json_object
from igpo.models.adapter import ADAPTER_CONFIG
from igpo.models.families import FAMILIES, Family, arch_from_config, config_from_arch, family_of
from igpo.models.files import ModelLoadError, check_finite, damaged_file_errors, torch_load
from igpo.models.transformer import ArchConfig, BidirectionalLM, DLLMOutput

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
LEGACY_WEIGHTS = "pytorch_model.bin"
HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.py"]


@dataclass(frozen=True)
class TokenSpec:
    """Special token ids of a model and whether its logits are shifted (position i -> token i+1)."""

    mask_id: int
    eos_id: int | None
    eot_id: int | None
    pad_id: int | None
    shifted_logits: bool = False

    def with_overrides(self, **overrides: Any) -> TokenSpec:
        """A copy with the given non-None fields replaced (user overrides win)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


_ASSETS = Path(__file__).resolve().parents[1] / "assets"
EMBEDDED_MODELS = {"testbed": _ASSETS / "testbed", "testbed-sign": _ASSETS / "testbed-sign"}
"""Models shipped inside the package, addressable by name: the CPU testbed dLLM, and its RL base
(the testbed with a planted answer-sign habit; igpo.testbed.build_sign)."""


def looks_like_hub_id(name: str) -> bool:
    """Whether a name that is no local path reads as a Hugging Face Hub id `owner/name`: one `/`,
    not a relative or absolute path (`./x`, `/x`, `~/x`), and no local folder as its owner part.
    The one guess every model, base model and dataset name given where a folder may be goes by."""
    path = Path(name).expanduser()
    return (
        not path.exists() and not name.startswith((".", "/", "~")) and name.count("/") == 1 and not path.parent.exists()
    )


def resolve_path(name_or_path: str | os.PathLike) -> Path:
    """A local folder for `name_or_path`: the folder itself, an embedded model's folder, or a Hub
    snapshot if it looks like a Hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    text = str(name_or_path)
    if text in EMBEDDED_MODELS:
        if not (EMBEDDED_MODELS[text] / "config.json").is_file():
            raise ModelLoadError(f"the embedded model {text!r} is not built yet (make testbed-model)")
        return EMBEDDED_MODELS[text]
    if not looks_like_hub_id(text):
        raise ModelLoadError(f"model path not found: {text}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=HUB_PATTERNS))
    except Exception as err:  # network, auth, missing repo: all end in one clear line
        raise ModelLoadError(
            f"model {text!r} is not a local folder and could not be fetched from the Hub ({type(err).__name__})"
        ) from None


def read_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        if (path / ADAPTER_CONFIG).is_file():
            raise ModelLoadError(
                f"no config.json in {path}: it is an adapter folder (adapter_config.json); give it as the model "
                f"to igpo eval --model / igpo check / lm-eval pretrained=, which load the base it names, or "
                f"give that base here and the folder as the adapter"
            )
        raise ModelLoadError(f"no config.json in model folder {path}")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"malformed config.json in {path}: {err.msg} (line {err.lineno})") from None
    except UnicodeDecodeError as err:
        raise ModelLoadError(f"config.json in {path} is not UTF-8 text ({err.reason})") from None
    except RecursionError:
        raise ModelLoadError(f"config.json in {path} is nested too deeply to read") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"config.json in {path} is a JSON {type(cfg).__name__}, not an object of settings")
    return cfg


def _weight_files(path: Path) -> list[Path]:
    if (path / WEIGHTS_INDEX).is_file():
        index = read_json_object(path / WEIGHTS_INDEX, "weight_map")
        return [path / name for name in sorted(set(index["weight_map"].values()))]
    if (path / WEIGHTS_FILE).is_file():
        return [path / WEIGHTS_FILE]
    if (path / LEGACY_WEIGHTS).is_file():
        return [path / LEGACY_WEIGHTS]
    raise ModelLoadError(f"no {WEIGHTS_FILE} (or sharded index) in model folder {path}")


def _read_state_dict(path: Path, family: Family, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        try:
            if file.suffix == ".bin":
                raw = torch_load(file, map_location=device)
            else:
                with safe_open(str(file), framework="pt", device=str(device)) as f:
                    raw = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
        except damaged_file_errors() as err:  # a damaged file of the user's, named (not OOM or bugs)
            raise ModelLoadError(f"cannot read weights file {file} (damaged?): {_first_line(err)}") from None
        check_finite(raw.items(), file)
        for key, tensor in raw.items():
            if key.endswith("rotary_emb.inv_freq"):
                continue  # recomputed from config, never a weight
            state[family.to_ours(key)] = tensor
    return state


def _first_line(err: BaseException) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()  # no terminal colour codes
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on accelerators (what the published checkpoints use), float32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return None if dtype == "auto" else dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise InvalidSetting(f"unknown dtype {dtype!r} (use one of {', '.join(names)})")
    return names[dtype]


def token_spec_from(family: Family, cfg: dict[str, Any], tokenizer: Any | None = None) -> TokenSpec:
    """Token ids from config.json first, then the tokenizer, then the family's defaults."""

    def pick(config_key: str, default: int | None, token_attr: str | None = None) -> int | None:
        value = cfg.get(config_key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is None and tokenizer is not None and token_attr:
            value = getattr(tokenizer, token_attr, None)
        return default if value is None else int(value)

    mask = pick("mask_token_id", family.tokens.mask_id, "mask_token_id")
    if mask is None:
        raise ModelLoadError("cannot tell the mask token id: set mask_token_id in config.json")
    return TokenSpec(
        mask_id=mask,
        eos_id=pick("eos_token_id", family.tokens.eos_id, "eos_token_id"),
        eot_id=pick("eot_token_id", family.tokens.eot_id),
        pad_id=pick("pad_token_id", family.tokens.pad_id, "pad_token_id"),
        shifted_logits=family.shifted_logits,
    )


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    token_overrides: dict[str, Any] | None = None,
) -> nn.Module:
    """Load a dLLM; returns a module whose forward(input_ids, attention_mask) gives `.logits`.

    Native families (llada, Dream, igpo_tiny) never run checkpoint code; any other model_type
    loads through transformers' remote code only when `trust_remote_code=True`.
    The module carries `.token_spec` (a TokenSpec) for decoders and trainers.
    """
    path = resolve_path(name_or_path)
    cfg = read_config(path)
    dev = torch.device(device) if device is not None else default_device()
    if dev.type == "cpu":
        dev = torch.device("cpu")  # accelerate names CPU ranks cpu:N, which safetensors rejects
    dt = parse_dtype(dtype) or default_dtype(dev)
    family = family_of(cfg)
    if family is None:
        if not trust_remote_code:
            raise ModelLoadError(
                f"model_type {cfg.get('model_type')!r} in {path} is not a native family "
                f"({', '.join(f.model_type for f in FAMILIES.values())}); "
                "pass trust_remote_code=True to run its own modeling code"
            )
        model = RemoteCodeLM.load(path, dtype=dt, device=dev)
        check_finite(model.named_parameters(), path)
        spec = token_spec_from(FAMILIES["igpo_tiny"], cfg)
    else:
        try:
            arch = arch_from_config(family, cfg)
        except (ValueError, KeyError, TypeError) as err:
            detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise ModelLoadError(f"config.json in {path}: {detail}") from None
        with torch.device("meta"):
            model = BidirectionalLM(arch, family=family.name)
        state = _read_state_dict(path, family, dev)
        state = {k: v.to(dt) for k, v in state.items()}
        _check_shapes(model, state, path)
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        if missing or unexpected:
            what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
            raise ModelLoadError(f"weights in {path} do not fit the {family.name} config: {what}")
        spec = token_spec_from(family, cfg)
    model.token_spec = spec.with_overrides(**(token_overrides or {}))
    model.name_or_path = str(name_or_path)
    return model.eval()


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Every weight's shape as config.json says (a weight of another size is a config that does
    not belong to these weights: one line naming the first, not torch's size-mismatch dump)."""
    expected = model.state_dict()
    for name, tensor in state.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            raise ModelLoadError(
                f"weights in {path} do not fit its config.json: {name} is {tuple(tensor.shape)}, "
                f"the config makes it {tuple(expected[name].shape)}"
            )


def save_model(model: BidirectionalLM, path: str | os.PathLike, state: dict[str, torch.Tensor] | None = None) -> None:
    """Write config.json + model.safetensors in the model's family format, atomically; `state`:
    the weights to write instead of the model's own (a sharded model's, gathered)."""
    from safetensors.torch import save_file

    family = next(f for f in FAMILIES.values() if f.name == model.family)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config_from_arch(family, model.config)
    spec = model.token_spec
    if spec is not None:
        cfg.update(mask_token_id=spec.mask_id, eos_token_id=spec.eos_id, pad_token_id=spec.pad_id)
        if spec.eot_id is not None:
            cfg["eot_token_id"] = spec.eot_id
    cfg["torch_dtype"] = str(model.dtype).removeprefix("torch.")
    own = model.state_dict() if state is None else state
    state = {family.to_theirs(k): v.detach().contiguous().cpu() for k, v in own.items()}
    atomic_write_bytes(out / "config.json", (json.dumps(cfg, indent=2, sort_keys=True) + "\n").encode())
    with tempfile.NamedTemporaryFile(dir=out, suffix=".tmp", delete=False) as tmp:
        tmp_name = tmp.name
    save_file(state, tmp_name, metadata={"format": "pt"})
    os.chmod(tmp_name, FILE_MODE)
    os.replace(tmp_name, out / WEIGHTS_FILE)


def new_model(arch: ArchConfig, spec: TokenSpec, *, seed: int = 0) -> BidirectionalLM:
    """A freshly initialised built-in (igpo_tiny) model, deterministic given the seed."""
    model = BidirectionalLM(arch, family="igpo_tiny")
    model.init_weights(torch.Generator().manual_seed(seed))
    model.token_spec = spec
    return model


class RemoteCodeLM(nn.Module):
    """Wraps a transformers remote-code model so forward returns DLLMOutput like native ones."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = getattr(inner, "config", None)

    @classmethod
    def load(cls, path: Path, *, dtype: torch.dtype, device: torch.device) -> RemoteCodeLM:
        from transformers import AutoModel

        try:
            inner = AutoModel.from_pretrained(str(path), trust_remote_code=True, dtype=dtype)
        except TypeError:  # transformers 4.x spells it torch_dtype
            inner = AutoModel.from_pretrained(str(path), trust_remote_code=True, torch_dtype=dtype)
        return cls(inner.to(device))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids, attention_mask=None, position_ids=None) -> DLLMOutput:
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask)
        return DLLMOutput(logits=out.logits)


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """The model's tokenizer (a transformers fast tokenizer) with its chat template."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_path(name_or_path)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # AutoTokenizer warns about unknown model_types it need not know
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as err:
        if (path / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast

            try:
                return PreTrainedTokenizerFast.from_pretrained(str(path))
            except Exception as fast_err:  # a damaged tokenizer.json: the tokenizers library's own error
                raise ModelLoadError(
                    f"cannot load the tokenizer in {path} (tokenizer.json damaged?): {_first_line(fast_err)}"
                ) from None
        raise ModelLoadError(f"cannot load a tokenizer from {path}: {_first_line(err)}") from None
    finally:
        hf_logging.set_verbosity(level)
