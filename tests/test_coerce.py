"""One conversion of user values (igpo.config.coerce): YAML recipes and protocols as typed values,
lm-eval model_args, generation kwargs and key=value overrides as text."""

from __future__ import annotations

import pytest

from igpo.config import ConfigError, coerce
from igpo.decoding import DecodeConfig
from igpo.errors import InvalidSetting


@pytest.mark.parametrize(
    ("text", "tp", "expected"),
    [
        ("3", int, 3),
        ("1e3", int, 1000),
        ("+7", int, 7),
        ("0.25", float, 0.25),
        ("'0.9'", float, 0.9),
        ("true", bool, True),
        ("No", bool, False),
        ("1", bool, True),
        ("none", int | None, None),
        ("None", str | None, None),
        ("1 2;3|4", tuple[int, ...], (1, 2, 3, 4)),
        ("dual", str | None, "dual"),
    ],
)
def test_text_values(text, tp, expected):
    assert coerce(text, tp, "x", from_text=True) == expected


@pytest.mark.parametrize(
    ("text", "tp", "needle"),
    [
        ("2.5", int, "expected an integer"),
        ("abc", int, "expected a number"),
        ("nan", float, "finite"),
        ("inf", int, "expected an integer"),
        ("maybe", bool, "true/false"),
        ("none", int, "expected a number"),
    ],
)
def test_bad_text_values_name_the_setting(text, tp, needle):
    with pytest.raises(ConfigError, match=f"where: .*{needle}"):
        coerce(text, tp, "where", from_text=True)


def test_typed_values_are_not_read_as_text():
    assert coerce(3.0, int, "x") == 3
    for value, tp in (("3", int), (True, int), (1, bool), ("true", bool)):
        with pytest.raises(ConfigError):
            coerce(value, tp, "x")


def test_every_entry_point_uses_it():
    """model_args, generation kwargs, protocols and recipes refuse the same bad value alike."""
    from harness.eval.protocols import parse_protocol
    from harness.lmeval.args import coerce_decode, parse_args
    from igpo.errors import InvalidSetting

    assert coerce_decode("steps", "64") == 64 and coerce_decode("threshold", "none") is None
    assert coerce({"steps": 64, "cache": "dual"}, DecodeConfig, "decoding").steps == 64
    for call in (
        lambda: parse_args({"pretrained": "testbed", "steps": "6.5"}),
        lambda: coerce_decode("steps", "6.5"),
        lambda: parse_protocol({"name": "p", "decoding": {"steps": 6.5}}),
        lambda: parse_protocol({"name": "p", "seeds": [0, 1.5]}),
    ):
        with pytest.raises(InvalidSetting, match="expected an integer"):
            call()


@pytest.mark.parametrize("off", ["none", "None", "NONE", " none "])
def test_none_spells_off_for_cache_and_compile_everywhere(tmp_path, off):
    """`none` (any case) is off (None) for cache and compile in flags, protocols, lm-eval
    model_args and generation kwargs, and recipes; `--cache none` turns a protocol's cache off,
    its refresh rule with it (a None override would mean "not given")."""
    from harness.eval.protocols import load_protocol, parse_protocol
    from harness.eval.run import EvalRequest, plan
    from harness.lmeval.args import parse_args
    from harness.lmeval.settings import resolve
    from igpo.config import load_config, resolve_recipe
    from igpo.decoding import DecodeOverrides
    from igpo.training.rl_config import RLConfig

    cfg = DecodeConfig(cache=off, compile=off)
    assert (cfg.cache, cfg.compile) == (None, None) and cfg == DecodeConfig()
    proto = parse_protocol({"name": "p", "decoding": {"cache": off, "compile": off}})
    assert (proto.decoding.cache, proto.decoding.compile) == (None, None)
    args = parse_args({"pretrained": "testbed", "cache": off, "compile": off})
    assert (args.decode.cache, args.decode.compile) == (None, None)
    dual = parse_args({"pretrained": "testbed", "cache": "dual", "cache_refresh": "4"})
    assert resolve({"cache": off, "cache_refresh": off}, dual.decode, dual.decode_given).decode.cache is None
    recipe = load_config(RLConfig, resolve_recipe("grpo_tiny"), [f"decode.cache={off}", f"decode.compile={off}"])
    assert (recipe.decode.cache, recipe.decode.compile) == (None, None)
    fast = load_protocol("igpo_fast")
    assert fast.decoding.cache == "dual" and fast.decoding.cache_refresh == 4
    overrides = DecodeOverrides(cache=off, compile=off)
    request = EvalRequest(model="testbed", tasks=["arith"], protocol="igpo_fast", overrides=overrides, out=tmp_path)
    [((_, leaf), (decoding, _))] = plan(request).settings.items()
    assert (decoding.cache, decoding.cache_refresh, decoding.compile, decoding.threshold) == (None, None, None, 0.9)
    with pytest.raises(InvalidSetting, match="cache_refresh needs a cache mode"):  # the user's own refresh stays
        fast.for_task(leaf, fast.decoding, DecodeOverrides(cache=off, cache_refresh=2))


def test_none_on_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.eval.results import load_results

    out = tmp_path / "runs"
    args = ["eval", "--tasks", "arith", "--limit", "2", "--no-leaderboard", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--protocol", "igpo_fast", "--cache", "None", "--compile", "none"])
    assert result.exit_code == 0, result.output
    decoding = load_results(out / "testbed-igpo_fast").tasks["igpo_arith"].decoding
    assert (decoding["cache"], decoding["cache_refresh"], decoding["compile"]) == (None, None, None)
