"""Decoding built for GPUs, checked on a CPU: fused projections, host reads per pass, CUDA-graph
buffers (replayed eagerly here), torch.compile, and the published LLaDA code as an oracle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import EOS_ID, decode, tiny_model

from harness.bench.ops import count_decode
from igpo.decoding import DecodeConfig
from igpo.decoding.graphs import GraphedPasses
from igpo.errors import InvalidSetting
from igpo.models import fuse_projections, load_model, save_model

PEER_DIR = Path(__file__).resolve().parents[1] / "peers" / "fast-dllm" / "llada"
ARCHS = {
    "llada": {},
    "dream-like": {"qkv_bias": True, "n_kv_heads": 2},
}
MODES = {
    "exact": {},
    "dual": {"cache": "dual"},
    "prefix": {"cache": "prefix"},
    "dual+threshold": {"cache": "dual", "threshold": 0.6},
    "dual+factor": {"cache": "dual", "factor": 1.0},
    "dual+refresh-tokens": {"cache": "dual", "threshold": 0.6, "cache_refresh_tokens": 3},
    "cfg": {"cfg_scale": 1.0},
}


def _prompt(batch=2, length=6, padded=True):
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(4, 60, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if padded:
        mask[0, :2] = 0
    return ids, mask


def _decode(model, extra, **kw):
    ids, mask = _prompt()
    args = dict(gen_length=16, block_length=8, steps=8, mask_id=model.token_spec.mask_id, eos_id=EOS_ID)
    return decode(model, ids, attention_mask=mask, **{**args, **extra, **kw})


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", MODES)
def test_fused_projections_decode_the_same_tokens(arch, mode):
    plain, fused = tiny_model(**ARCHS[arch]), fuse_projections(tiny_model(**ARCHS[arch]))
    assert fused.layers[0].attn.qkv_proj is not None and fused.layers[0].attn.q_proj is None
    ids, _ = _prompt()
    assert torch.equal(plain(ids).logits, fused(ids).logits)
    assert torch.equal(_decode(plain, MODES[mode]).sequences, _decode(fused, MODES[mode]).sequences)


def test_fused_model_saves_and_loads_the_checkpoint_names(tmp_path):
    plain = tiny_model(qkv_bias=True)
    fused = fuse_projections(tiny_model(qkv_bias=True))
    assert fused.state_dict().keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(fused.state_dict()[key], value), key
    save_model(fused, tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu", dtype="float32")
    ids, _ = _prompt()
    assert torch.equal(loaded(ids).logits, plain(ids).logits)
    refused = fuse_projections(tiny_model(seed=3, qkv_bias=True))
    refused.load_state_dict(plain.state_dict())  # a checkpoint's separate q/k/v are concatenated
    assert torch.equal(refused(ids).logits, plain(ids).logits)


def test_lora_wrapped_projections_stay_separate():
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    fuse_projections(policy.get_base_model())
    attn = policy.get_base_model().layers[0].attn
    assert attn.q_proj is not None and attn.qkv_proj is None  # LoRA keeps its q/k/v
    assert policy.get_base_model().layers[0].mlp.gate_up_proj is not None  # untargeted MLP fused


@pytest.mark.parametrize("mode", MODES)
def test_at_most_one_host_read_per_pass(mode):
    """The decoding loop reads the device only through host_read: once before the first pass,
    then at most once per pass; no `.item()`, `bool(tensor)` or `nonzero` anywhere in it."""
    model = fuse_projections(tiny_model())
    ids, mask = _prompt()
    assert model.token_spec.eos_id == EOS_ID  # the early exit is on
    cfg = DecodeConfig(gen_length=24, block_length=8, steps=12, **MODES[mode])
    hints = torch.full((2, 24), model.token_spec.mask_id)
    hints[:, 20] = 7  # a hint ahead keeps the early exit honest
    count = count_decode(model, ids, cfg, attention_mask=mask, hints=hints)
    assert count.passes > 0
    assert count.stray_syncs == 0
    assert count.syncs <= count.passes + 1


def test_fixed_schedule_reads_once_per_block():
    model = tiny_model()
    ids, mask = _prompt()
    cfg = DecodeConfig(gen_length=32, block_length=8, steps=16, cache="dual")
    count = count_decode(model, ids, cfg, attention_mask=mask)
    assert count.passes == 16 and count.syncs <= 4  # the schedule once, then each block's EOS check


@pytest.mark.parametrize("mode", MODES)
def test_graph_buffers_decode_the_same_tokens(mode):
    """compile="graphs" through its static buffers (no capture on a CPU), twice: the second decode
    replays the passes recorded by the first."""
    model = fuse_projections(tiny_model())
    eager = _decode(model, MODES[mode]).sequences
    model._graphed_passes = GraphedPasses(model, capture=False)
    assert torch.equal(_decode(model, MODES[mode], compile="graphs").sequences, eager)
    assert torch.equal(_decode(model, MODES[mode], compile="graphs").sequences, eager)
    assert model._graphed_passes.passes  # the passes went through the runner


def test_graphs_refuse_a_cpu_model():
    with pytest.raises(InvalidSetting, match="needs the model on a GPU"):
        _decode(tiny_model(), {"cache": "dual"}, compile="graphs")


def test_compile_mode_is_a_decoding_setting():
    assert DecodeConfig(compile="graphs").compile == "graphs"
    with pytest.raises(InvalidSetting, match="unknown compile mode"):
        DecodeConfig(compile="fast")
    from harness.lmeval.args import parse_args

    assert parse_args({"pretrained": "testbed", "compile": "inductor"}).decode.compile == "inductor"
    from igpo.config import load_config, resolve_recipe
    from igpo.training.rl_config import RLConfig

    recipe = load_config(RLConfig, resolve_recipe("igpo_llada"), ["decode.compile=graphs"])
    assert recipe.decode.compile == "graphs"
    from harness.eval.protocols import parse_protocol

    proto = parse_protocol({"name": "p", "decoding": {"cache": "dual", "compile": "graphs"}}, source="p.yaml")
    assert proto.decoding.compile == "graphs"


def test_batched_parallel_rows_commit_independently():
    """Dual cache + threshold at batch 3: rows commit different numbers of tokens per pass and
    each row's tokens equal decoding it alone."""
    model = fuse_projections(tiny_model())
    g = torch.Generator().manual_seed(9)
    ids = torch.randint(4, 60, (3, 6), generator=g)
    kw = dict(gen_length=16, block_length=8, steps=8, mask_id=model.token_spec.mask_id, cache="dual", threshold=0.5)
    batched = decode(model, ids, **kw).sequences
    for row in range(3):
        assert torch.equal(decode(model, ids[row : row + 1], **kw).sequences[0], batched[row]), row


@pytest.mark.slow
def test_inductor_decodes_the_same_tokens():
    model = fuse_projections(tiny_model())
    for mode in ("exact", "dual"):
        eager = _decode(model, MODES[mode]).sequences
        assert torch.equal(_decode(model, MODES[mode], compile="inductor").sequences, eager), mode


@pytest.fixture
def peer():
    if not (PEER_DIR / "generate.py").is_file():
        pytest.skip(f"published LLaDA code not fetched into {PEER_DIR} (see harness/bench/peers.py)")
    from harness.bench.peers import load

    return load(PEER_DIR)


def test_published_llada_code_agrees(peer):
    """LLaDA's published modeling code on our weights: the same logits, and its reference
    decoders (LLaDA's generate, Fast-dLLM's dual cache) the same tokens as ours."""
    from harness.bench.gpu_measure import build
    from harness.bench.peers import peer_model

    model = build(dict(vocab_size=96, d_model=32, n_layers=2, n_heads=4, mlp_hidden=64), torch.device("cpu"))
    theirs = peer_model(peer, model)
    mask_id = model.token_spec.mask_id
    ids = torch.randint(1, mask_id - 2, (1, 12), generator=torch.Generator().manual_seed(2))
    assert torch.equal(model(ids).logits, theirs(ids).logits)
    kw = dict(gen_length=32, block_length=16, steps=16, mask_id=mask_id)
    ref, _ = peer.generate(theirs, ids, temperature=0.0, **kw)
    assert torch.equal(decode(model, ids, **kw).sequences, ref)
    dual, _ = peer.generate_with_dual_cache(theirs, ids, temperature=0.0, **kw)
    assert torch.equal(decode(model, ids, cache="dual", **kw).sequences, dual)


def test_bf16_forward_no_further_from_float32_than_published(peer):
    from harness.bench.gpu_measure import build, numerics

    model = build(dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, mlp_hidden=128), torch.device("cpu"))
    ours, theirs = numerics(model, peer, torch.device("cpu"))
    assert float(ours[1]) <= float(theirs[1]) and float(ours[2]) <= float(theirs[2])


def test_bf16_forward_stays_close_to_float32():
    """Norms and rotary run in float32 inside a bf16 forward: logits stay within bf16 rounding."""
    from harness.bench.gpu_measure import build, numerics

    model = build(dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, mlp_hidden=128), torch.device("cpu"))
    (row,) = numerics(model, "absent", torch.device("cpu"))[:1]
    assert row[0] == "ours, bf16"
    assert float(row[2]) < 0.01 and float(row[3].rstrip("%")) > 95
