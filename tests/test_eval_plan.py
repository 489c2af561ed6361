"""`igpo eval` carries the typed plan to the model: each task's DecodeConfig is made once, from
the protocol and the flags, and is the very object the decoder runs with; lm-eval's
generation_kwargs carry stop strings only on this path."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.lmeval.settings import planned
from igpo.decoding import DecodeConfig


def test_a_decoding_flag_walks_typed_from_the_cli_to_generate(tmp_path, monkeypatch):
    """--gen-length 32 under two sampled seeds: one DecodeConfig holds it (made by the plan, once
    for the task, not per seed or request), and every decode call gets that object itself."""
    import harness.lmeval.model as dllm

    made: list[DecodeConfig] = []
    post_init = DecodeConfig.__post_init__

    def counted(self):
        post_init(self)
        made.append(self)

    decoded, kwargs_seen = [], []
    generate, settings_for = dllm.generate, dllm.DiffusionLM.settings_for

    def spy_generate(model, prompt_ids, cfg, **kw):
        decoded.append(cfg)
        return generate(model, prompt_ids, cfg, **kw)

    def spy_settings(self, gen_kwargs, task=None):
        kwargs_seen.append(dict(gen_kwargs or {}))
        return settings_for(self, gen_kwargs, task)

    monkeypatch.setattr(DecodeConfig, "__post_init__", counted)
    monkeypatch.setattr(dllm, "generate", spy_generate)
    monkeypatch.setattr(dllm.DiffusionLM, "settings_for", spy_settings)
    args = ["eval", "--model", "testbed", "--tasks", "arith", "--limit", "4", "--gen-length", "32"]
    args += ["--temperature", "0.5", "--seeds", "0,1", "--out", str(tmp_path), "--no-leaderboard"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    [cfg] = [c for c in made if c.gen_length == 32]  # one per task
    assert (cfg.gen_length, cfg.block_length, cfg.steps, cfg.temperature) == (32, 16, 24, 0.5)
    assert decoded and all(c is cfg for c in decoded)
    assert len(kwargs_seen) == 8 and all(set(k) <= {"until"} for k in kwargs_seen)


def test_a_planned_request_decodes_with_the_plan_alone():
    cfg = DecodeConfig(gen_length=48, block_length=16, steps=24)
    s = planned(cfg, {"until": "Q:"})
    assert s.decode is cfg and s.until == ["Q:"] and s.max_tokens is None and s.notes == []
    assert set(s.sources.values()) == {"request"}
    assert planned(cfg, {"max_gen_toks": 48}, task_default=48).max_tokens is None
    own = planned(cfg, {"max_gen_toks": 20}, task_default=20)  # the task's own budget never cuts
    assert own.max_tokens is None and own.length_conflict is None
    cut = planned(cfg, {"max_gen_toks": 20}, task_default=48)
    assert cut.max_tokens == 20 and cut.length_conflict == {"max_gen_toks": 20, "gen_length": 48, "source": "request"}
    with pytest.raises(ValueError, match="steps, temperature"):
        planned(cfg, {"temperature": 0.5, "steps": 48})
    with pytest.raises(ValueError, match="top_p"):
        planned(cfg, {"top_p": 0.9})


def test_plan_tasks_takes_decode_configs_only(tiny_checkpoint):
    from harness.lmeval import DiffusionLM

    lm = DiffusionLM(pretrained=str(tiny_checkpoint), device="cpu")
    with pytest.raises(TypeError, match="igpo_arith"):
        lm.plan_tasks({"igpo_arith": {"gen_length": 48}})
    lm.plan_tasks({"igpo_arith": DecodeConfig(gen_length=48, block_length=16, steps=24)})
    assert lm.settings_for({"until": []}, "igpo_arith").decode.gen_length == 48
    assert lm.settings_for({"until": []}, "other").decode == lm.decode  # not planned: the rule


def test_the_typed_path_decodes_as_the_generation_kwargs_path_did():
    """Every shipped protocol's task settings (and a protocol file writing whole numbers for
    floats), under a few flags: the planned request's settings equal what `resolve` made of the
    generation_kwargs igpo eval used to send (every DecodeConfig field, do_sample, max_gen_toks =
    gen_length), so request keys, per-request seeds and tokens are unchanged."""
    import json

    from harness.eval.protocols import available, load_protocol, parse_protocol
    from harness.lmeval.settings import resolve
    from igpo.decoding import DecodeOverrides
    from tasks.registry import SPECS, default_max_gen_toks

    ints = {"name": "ints", "decoding": {"temperature": 1, "cfg_scale": 2, "gen_length": 64, "steps": 32}}
    protocols = [*map(load_protocol, available()), parse_protocol(ints)]
    flags = [
        DecodeOverrides(),
        DecodeOverrides(temperature=1, threshold=1),
        DecodeOverrides(cache="dual", cache_refresh=2),
    ]
    compared = 0
    for protocol in protocols:
        for task in SPECS:
            for overrides in flags:
                for _, cfg, _ in protocol.task_variants(task, overrides):
                    sent = {"until": [], **cfg.to_dict(), "do_sample": cfg.temperature > 0}
                    own = default_max_gen_toks(task)
                    old = resolve({**sent, "max_gen_toks": cfg.gen_length}, DecodeConfig(), frozenset(), own)
                    new = planned(cfg, {"until": []}, own)
                    assert json.dumps(old.record(), sort_keys=True) == json.dumps(new.record(), sort_keys=True)
                    compared += 1
    assert compared > 80
