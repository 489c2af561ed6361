"""Rollout rewards: format values by hand, correctness weight, plug-in extras, bad plug-ins."""

from __future__ import annotations

import pytest

from igpo.rewards import RewardConfig, format_reward, load_reward_fns, score_rollouts

FULL = "<reasoning>\nadd them\n</reasoning>\n<answer>\n\\boxed{72}\n</answer>"
SPACED = "<reasoning> add them </reasoning> <answer> \\boxed{ 72 } </answer>"

PLUGIN = """
def bonus(response, gold):
    return 0.5 if "them" in response else 0.0

def text(response, gold):
    return "high"

NOT_CALLABLE = 3
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (FULL, 0.75),
        (SPACED, 0.75),  # opening tags count without the newline
        ("\\boxed{3}", 0.25),
        ("<answer> 3 </answer>", 0.25),
        ("</reasoning>\n<answer>\n\\boxed{3}\n</answer>", 0.625),  # prefilled <reasoning> missing
        ("nothing here", 0.0),
        ("<answer> 1 </answer> <answer> 2 </answer>", 0.0),  # repeated tags earn nothing
    ],
)
def test_format_reward_hand_values(text, value):
    assert format_reward(text) == pytest.approx(value)


def test_repeated_tags_count_when_not_exactly_once():
    assert format_reward("<answer> 1 </answer> <answer> 2 </answer>", exactly_once=False) == 0.25


def test_correctness_and_format_weights():
    responses = [FULL, FULL.replace("72", "71"), "</reasoning> \\boxed{72}"]
    out = score_rollouts(responses, "72", RewardConfig())
    assert out.correct == [True, False, True]
    assert out.correctness == [3.0, 0.0, 3.0]
    assert out.format == pytest.approx([0.75, 0.75, 0.375])
    assert out.total == pytest.approx([3.75, 0.75, 3.375])
    assert out.timed_out == [False] * 3 and out.num_timeouts == 0 and not out.all_wrong

    out = score_rollouts(responses, "72", RewardConfig(correct_weight=1.0, format_weight=2.0))
    assert out.total == pytest.approx([2.5, 1.5, 1.75])


def test_prefix_counts_for_format_only():
    body = FULL.removeprefix("<reasoning>")
    assert score_rollouts([body], "72", RewardConfig()).format == [0.625]
    out = score_rollouts([body], "72", RewardConfig(), prefix="<reasoning>")
    assert out.format == [0.75] and out.correct == [True]


def test_all_wrong_group():
    out = score_rollouts(["\\boxed{1}", "\\boxed{2}"], "72", RewardConfig(format_weight=0.0))
    assert out.all_wrong and out.total == [0.0, 0.0] and out.extracted == ["1", "2"]


def test_extra_reward_plugin(plugin):
    cfg = RewardConfig(extra=[f"{plugin}:bonus"])
    out = score_rollouts([FULL, "\\boxed{72}"], "72", cfg)
    assert out.extra == {f"{plugin}:bonus": [0.5, 0.0]}
    assert out.total == pytest.approx([3.0 + 0.75 + 0.5, 3.0 + 0.25])


def test_extra_reward_must_return_a_number(plugin):
    with pytest.raises(TypeError, match="text"):
        score_rollouts([FULL], "72", RewardConfig(extra=[f"{plugin}:text"]))


@pytest.mark.parametrize("name", ["no_colon", ":f", "mod:", "a:b:c"])
def test_bad_plugin_syntax_rejected_by_config(name):
    with pytest.raises(ValueError, match="module:function"):
        RewardConfig(extra=[name])


def test_bad_plugin_names(plugin):
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        load_reward_fns(["no_such_module_xyz:f"])
    with pytest.raises(ValueError, match="has no 'missing'"):
        load_reward_fns([f"{plugin}:missing"])
    with pytest.raises(ValueError, match="not callable"):
        load_reward_fns([f"{plugin}:NOT_CALLABLE"])
    assert callable(load_reward_fns([f"{plugin}:bonus"])[f"{plugin}:bonus"])


def test_group_correctness_is_verify_answer_of_each_rollout():
    """The group is scored on the worker pool at once; each verdict, timeout flag and extracted
    answer is verify_answer's for that rollout (evaluation's exact_match), in rollout order."""
    from igpo.scoring import pool

    gold = "\\frac{1}{2}"
    responses = [f"<answer> \\boxed{{{a}}} </answer>" for a in ("0.5", "\\dfrac12", "1/3", "2/4", "x")] + [FULL]
    try:
        pool.set_worker_count(2)
        before = pool.scoring_stats().get("worker_calls", 0)
        out = score_rollouts(responses, gold, RewardConfig())
        assert pool.scoring_stats()["worker_calls"] - before == len(responses)
    finally:
        pool.set_worker_count(None)
    expected = [pool.verify_answer(gold, r) for r in responses]
    assert out.correct == [s.correct for s in expected] == [True, True, False, True, False, False]
    assert out.extracted == [s.extracted for s in expected]
    assert out.timed_out == [s.timed_out for s in expected]
