"""One conversion of user values (igpo.config.coerce): YAML recipes and protocols as typed values,
lm-eval model_args, generation kwargs and key=value overrides as text."""

from __future__ import annotations

import pytest

from igpo.config import ConfigError, coerce
from igpo.decoding import DecodeConfig


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
