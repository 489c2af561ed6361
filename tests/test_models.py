"""Native LLaDA / Dream / tiny models: published checkpoint formats, reference math, persistence."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_model
from safetensors.torch import save_file

from igpo.models import ModelLoadError, load_model, load_tokenizer, save_model
from igpo.models.tokenizer import build_word_tokenizer

torch.manual_seed(0)  # test-local: weight tensors below are drawn from explicit generators anyway


def _rand(g, *shape, scale=0.2):
    return torch.randn(*shape, generator=g) * scale


# ---------------------------------------------------------------- LLaDA, as published
LLADA_CFG = dict(
    model_type="llada",
    d_model=64,
    n_heads=4,
    n_kv_heads=2,
    n_layers=2,
    mlp_hidden_size=96,
    mlp_ratio=4,
    vocab_size=300,
    embedding_size=320,
    rope_theta=500000.0,
    rms_norm_eps=1e-5,
    weight_tying=False,
    block_type="llama",
    layer_norm_type="rms",
    activation_type="silu",
    include_bias=False,
    rope=True,
    alibi=False,
    scale_logits=False,
    input_emb_norm=False,
    attention_layer_norm=False,
    mask_token_id=310,
    eos_token_id=301,
    pad_token_id=301,
    architectures=["LLaDAModelLM"],
)


def llada_checkpoint(folder, seed=0, cfg=LLADA_CFG):
    """A random checkpoint with LLaDA-8B-Instruct's parameter names and config fields."""
    g = torch.Generator().manual_seed(seed)
    d, hd = cfg["d_model"], cfg["d_model"] // cfg["n_heads"]
    kv, ff, vocab = cfg["n_kv_heads"] * hd, cfg["mlp_hidden_size"], cfg["embedding_size"]
    sd = {
        "model.transformer.wte.weight": _rand(g, vocab, d, scale=1.0),
        "model.transformer.ln_f.weight": 1 + _rand(g, d),
        "model.transformer.ff_out.weight": _rand(g, vocab, d),
    }
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        sd.update(
            {
                p + "q_proj.weight": _rand(g, d, d),
                p + "k_proj.weight": _rand(g, kv, d),
                p + "v_proj.weight": _rand(g, kv, d),
                p + "attn_out.weight": _rand(g, d, d),
                p + "attn_norm.weight": 1 + _rand(g, d),
                p + "ff_norm.weight": 1 + _rand(g, d),
                p + "ff_proj.weight": _rand(g, ff, d),
                p + "up_proj.weight": _rand(g, ff, d),
                p + "ff_out.weight": _rand(g, d, ff),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    return sd


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rope(x, theta):
    """OLMo/LLaDA rotary: halves (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin)."""
    length, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
    freqs = torch.outer(torch.arange(length).float(), inv)
    cos, sin = freqs.cos(), freqs.sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def _attention(q, k, v, n_heads):
    rep = n_heads // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # no causal mask: bidirectional
    return scores.softmax(-1) @ v


def reference_forward(sd, names, ids, *, d, n_heads, n_kv, n_layers, theta, eps, bias):
    """Logits of a Llama-style bidirectional transformer, layer by layer from a state dict."""
    hd = d // n_heads
    x = sd[names["embed"]][ids]
    b, length = ids.shape

    def lin(h, key):
        out = h @ sd[key + ".weight"].T
        return out + sd[key + ".bias"] if bias and key + ".bias" in sd else out

    for i in range(n_layers):
        n = {k: v.format(i=i) for k, v in names.items()}
        h = _rms(x, sd[n["attn_norm"]], eps)
        q = lin(h, n["q"]).view(b, length, n_heads, hd).transpose(1, 2)
        k = lin(h, n["k"]).view(b, length, n_kv, hd).transpose(1, 2)
        v = lin(h, n["v"]).view(b, length, n_kv, hd).transpose(1, 2)
        att = _attention(_rope(q, theta), _rope(k, theta), v, n_heads)
        x = x + lin(att.transpose(1, 2).reshape(b, length, d), n["o"])
        h = _rms(x, sd[n["ff_norm"]], eps)
        x = x + lin(torch.nn.functional.silu(lin(h, n["gate"])) * lin(h, n["up"]), n["down"])
    return _rms(x, sd[names["norm"]], eps) @ sd[names["head"]].T


LLADA_NAMES = dict(
    embed="model.transformer.wte.weight",
    norm="model.transformer.ln_f.weight",
    head="model.transformer.ff_out.weight",
    attn_norm="model.transformer.blocks.{i}.attn_norm.weight",
    q="model.transformer.blocks.{i}.q_proj",
    k="model.transformer.blocks.{i}.k_proj",
    v="model.transformer.blocks.{i}.v_proj",
    o="model.transformer.blocks.{i}.attn_out",
    ff_norm="model.transformer.blocks.{i}.ff_norm.weight",
    gate="model.transformer.blocks.{i}.ff_proj",
    up="model.transformer.blocks.{i}.up_proj",
    down="model.transformer.blocks.{i}.ff_out",
)


def test_llada_checkpoint_loads_and_matches_reference(tmp_path):
    sd = llada_checkpoint(tmp_path / "llada")
    model = load_model(tmp_path / "llada", dtype="float32", device="cpu")
    ids = torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(1))
    ours = model(ids).logits
    ref = reference_forward(
        sd, LLADA_NAMES, ids, d=64, n_heads=4, n_kv=2, n_layers=2, theta=500000.0, eps=1e-5, bias=False
    )
    assert ours.shape == (2, 11, 320)
    assert (ours - ref).abs().max().item() <= 1e-4
    spec = model.token_spec
    assert (spec.mask_id, spec.eos_id, spec.pad_id, spec.shifted_logits) == (310, 301, 301, False)


def test_llada_round_trips_in_published_names(tmp_path):
    sd = llada_checkpoint(tmp_path / "a")
    model = load_model(tmp_path / "a", dtype="float32", device="cpu")
    save_model(model, tmp_path / "b")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "b" / "model.safetensors"), "pt") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert set(saved) == set(sd)
    assert all(torch.equal(saved[k], sd[k]) for k in sd)
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["model_type"] == "llada" and cfg["d_model"] == 64 and cfg["mlp_hidden_size"] == 96


def test_llada_sharded_checkpoint(tmp_path):
    sd = llada_checkpoint(tmp_path / "one")
    folder = tmp_path / "sharded"
    folder.mkdir()
    keys = sorted(sd)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    weight_map = {}
    for name, part in halves.items():
        save_file({k: sd[k] for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps(LLADA_CFG))
    ids = torch.randint(0, 300, (1, 7))
    a = load_model(tmp_path / "one", device="cpu")(ids).logits
    b = load_model(folder, device="cpu")(ids).logits
    assert torch.equal(a, b)


def test_unsupported_llada_switch_is_refused(tmp_path):
    llada_checkpoint(tmp_path / "m", cfg={**LLADA_CFG, "alibi": True})
    with pytest.raises(ModelLoadError, match="alibi"):
        load_model(tmp_path / "m", device="cpu")


# ---------------------------------------------------------------- Dream (Qwen2 names, biases)
DREAM_CFG = dict(
    model_type="Dream",
    hidden_size=48,
    intermediate_size=80,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=200,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
    mask_token_id=190,
    pad_token_id=180,
    eos_token_id=180,
    architectures=["DreamModel"],
)
DREAM_NAMES = dict(
    embed="model.embed_tokens.weight",
    norm="model.norm.weight",
    head="lm_head.weight",
    attn_norm="model.layers.{i}.input_layernorm.weight",
    q="model.layers.{i}.self_attn.q_proj",
    k="model.layers.{i}.self_attn.k_proj",
    v="model.layers.{i}.self_attn.v_proj",
    o="model.layers.{i}.self_attn.o_proj",
    ff_norm="model.layers.{i}.post_attention_layernorm.weight",
    gate="model.layers.{i}.mlp.gate_proj",
    up="model.layers.{i}.mlp.up_proj",
    down="model.layers.{i}.mlp.down_proj",
)


def test_dream_checkpoint_loads_and_matches_reference(tmp_path):
    g = torch.Generator().manual_seed(3)
    d, kv, ff, vocab = 48, 24, 80, 200
    sd = {
        "model.embed_tokens.weight": _rand(g, vocab, d, scale=1.0),
        "model.norm.weight": 1 + _rand(g, d),
        "lm_head.weight": _rand(g, vocab, d),
    }
    for i in range(2):
        p = f"model.layers.{i}."
        for name, rows in (("q", d), ("k", kv), ("v", kv)):
            sd[p + f"self_attn.{name}_proj.weight"] = _rand(g, rows, d)
            sd[p + f"self_attn.{name}_proj.bias"] = _rand(g, rows)
        sd.update(
            {
                p + "self_attn.o_proj.weight": _rand(g, d, d),
                p + "input_layernorm.weight": 1 + _rand(g, d),
                p + "post_attention_layernorm.weight": 1 + _rand(g, d),
                p + "mlp.gate_proj.weight": _rand(g, ff, d),
                p + "mlp.up_proj.weight": _rand(g, ff, d),
                p + "mlp.down_proj.weight": _rand(g, d, ff),
            }
        )
    (tmp_path / "dream").mkdir()
    save_file(sd, str(tmp_path / "dream" / "model.safetensors"))
    (tmp_path / "dream" / "config.json").write_text(json.dumps(DREAM_CFG))
    model = load_model(tmp_path / "dream", dtype="float32", device="cpu")
    ids = torch.randint(0, vocab, (2, 9), generator=g)
    ref = reference_forward(sd, DREAM_NAMES, ids, d=d, n_heads=4, n_kv=2, n_layers=2, theta=1e6, eps=1e-6, bias=True)
    assert (model(ids).logits - ref).abs().max().item() <= 1e-4
    assert model.token_spec.shifted_logits and model.token_spec.mask_id == 190


# ---------------------------------------------------------------- tiny model, padding, tokenizer
def test_tiny_model_save_load_identical(tmp_path):
    model = tiny_model(seed=9)
    save_model(model, tmp_path / "tiny")
    again = load_model(tmp_path / "tiny", device="cpu")
    ids = torch.randint(0, 60, (3, 8))
    assert torch.equal(model(ids).logits, again(ids).logits)
    assert again.token_spec == model.token_spec


def test_padding_mask_and_positions_do_not_leak():
    """A left-padded row gives the same logits on its real tokens as the unpadded row."""
    model = tiny_model(seed=2)
    ids = torch.randint(4, 60, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    alone = model(ids).logits
    inside = model(padded, attention_mask=mask).logits[:, 3:]
    assert (alone - inside).abs().max().item() < 1e-5


def test_token_overrides(tmp_path):
    save_model(tiny_model(), tmp_path / "m")
    model = load_model(tmp_path / "m", device="cpu", token_overrides={"eos_id": 7, "mask_id": None})
    assert model.token_spec.eos_id == 7 and model.token_spec.mask_id == 63


def test_tokenizer_and_chat_template_round_trip(tmp_path):
    tok = build_word_tokenizer(
        ["what", "is", "+", "=", "?", "<reasoning>", "</reasoning>", "\\boxed{", "}", *map(str, range(20))]
    )
    tok.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    text = "<reasoning> 3 + 4 = 7 </reasoning> \\boxed{7}"
    ids = again.encode(text, add_special_tokens=False)
    assert ids == tok.encode(text, add_special_tokens=False)
    assert again.encode(again.decode(ids), add_special_tokens=False) == ids
    chat = [{"role": "user", "content": "what is 3 + 4 ?"}]
    prompt = again.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|start_header_id|>user<|end_header_id|>")
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert again.mask_token == "<|mdm_mask|>" and again.unk_token_id not in again.encode(prompt)


def test_missing_and_malformed_models_fail_in_one_line(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="malformed config.json"):
        load_model(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps({**LLADA_CFG}))
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        load_model(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="Hub"):
        load_model("no-such-org/no-such-model-xyz")


REMOTE_CONFIG = """
from transformers import PretrainedConfig
class ToyConfig(PretrainedConfig):
    model_type = "toy_dllm"
    def __init__(self, vocab_size=32, hidden=8, mask_token_id=31, **kw):
        self.vocab_size, self.hidden, self.mask_token_id = vocab_size, hidden, mask_token_id
        super().__init__(**kw)
"""
REMOTE_MODEL = """
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput
from .configuration_toy import ToyConfig
class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    def __init__(self, config):
        super().__init__(config)
        self.emb = torch.nn.Embedding(config.vocab_size, config.hidden)
        self.out = torch.nn.Linear(config.hidden, config.vocab_size)
        self.post_init()
    def forward(self, input_ids, attention_mask=None, **kw):
        return MaskedLMOutput(logits=self.out(self.emb(input_ids)))
"""


def test_remote_code_only_when_asked(tmp_path):
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "configuration_toy.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_toy.py").write_text(REMOTE_MODEL)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "toy_dllm",
                "vocab_size": 32,
                "hidden": 8,
                "mask_token_id": 31,
                "auto_map": {"AutoConfig": "configuration_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"},
            }
        )
    )
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(folder, device="cpu")
    # Build and save weights through the remote classes themselves.
    import importlib.util
    import sys

    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location("configuration_toy", folder / "configuration_toy.py")
        cfg_mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cfg_mod)
        sys.modules["configuration_toy"] = cfg_mod
        code = REMOTE_MODEL.replace("from .configuration_toy", "from configuration_toy")
        ns: dict = {}
        exec(compile(code, "modeling_toy", "exec"), ns)  # noqa: S102 (test-local toy model)
        ns["ToyModel"](cfg_mod.ToyConfig()).save_pretrained(folder)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("configuration_toy", None)
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "toy_dllm",
                "vocab_size": 32,
                "hidden": 8,
                "mask_token_id": 31,
                "auto_map": {"AutoConfig": "configuration_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"},
            }
        )
    )
    model = load_model(folder, device="cpu", trust_remote_code=True)
    out = model(torch.randint(0, 32, (2, 5)))
    assert out.logits.shape == (2, 5, 32) and model.token_spec.mask_id == 31


def test_legacy_bin_loads_with_weights_only(tmp_path):
    model = tiny_model(seed=4)
    save_model(model, tmp_path / "m")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(state, tmp_path / "m" / "pytorch_model.bin")
    again = load_model(tmp_path / "m", device="cpu")
    ids = torch.randint(0, 60, (1, 5))
    assert torch.equal(model(ids).logits, again(ids).logits)
    # A pickle carrying arbitrary objects is refused rather than executed.
    torch.save({"x": object()}, tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_model(tmp_path / "m", device="cpu")
