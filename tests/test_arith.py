"""Tests of the arith testbed: generator, tokenizer, fixed test set, igpo_arith lm-eval task."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from igpo import arith
from igpo.arith import (
    ARITH_INSTRUCTION,
    DISTRACTOR_TEMPLATES,
    ArithConfig,
    ArithProblem,
    arith_vocabulary,
    build_arith_tokenizer,
    format_trace,
    generate_problems,
    parse_trace,
)
from igpo.data import render_prompt
from igpo.scoring.pool import verify_answer
from tasks import arith_utils
from tasks.registry import TASK_DIR

TRAIN_SIZE = 20_000
"""Training problems checked against the test set (as the brief asks)."""

SAMPLE = 500
"""Problems per config in the property checks."""

TIGHT = ArithConfig(min_steps=6, max_steps=8, start_max=20, operand_max=9, max_value=25, seed=5)
"""A config whose additions often hit max_value (exercises the flip to subtraction)."""

CONFIGS = [
    ArithConfig(),
    ArithConfig(min_steps=1, max_steps=6, step_weights=[1, 1, 1, 1, 1, 3], seed=11),
    ArithConfig(distractor_prob=0.5, seed=2),
    TIGHT,
]
"""Configs of the property checks."""

WRONG = "</reasoning> <answer> \\boxed{-1} </answer>"
"""A completion that is wrong for every arith problem (answers are never negative)."""

NUMBER_RE = re.compile(r"\d+")
SENTENCE_RE = re.compile(r"[^.?]+[.?]")


def _sentences(question: str) -> list[str]:
    """A question's sentences, each ending in its period or question mark."""
    return [s.strip() for s in SENTENCE_RE.findall(question)]


def _pattern(template: str) -> re.Pattern[str]:
    """A template as a regex: each ``{field}`` matches one token."""
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", r"\\S+", re.escape(template)) + "$")


DISTRACTOR_RES = [_pattern(t) for t in DISTRACTOR_TEMPLATES]


def _is_distractor(sentence: str) -> bool:
    """Whether a (non-first) sentence is one of the irrelevant sentences."""
    return any(p.match(sentence) for p in DISTRACTOR_RES)


# --------------------------------------------------------------------------- generator


def test_deterministic_per_seed() -> None:
    cfg = ArithConfig(distractor_prob=0.3, seed=3)
    first = generate_problems(cfg, 300)
    assert first == generate_problems(ArithConfig(distractor_prob=0.3, seed=3), 300)
    assert generate_problems(cfg, 100) == first[:100]
    other = generate_problems(ArithConfig(distractor_prob=0.3, seed=4), 300)
    assert sum(a.question == b.question for a, b in zip(first, other, strict=True)) < 10
    assert len({p.id for p in first}) == 300 and first[0].id == "arith-s3-0"


def test_steps_respected() -> None:
    cfg = ArithConfig(min_steps=2, max_steps=5, step_weights=[1.0, 0.0, 1.0, 2.0], seed=1)
    problems = generate_problems(cfg, 2000)
    counts = {s: sum(p.steps == s for p in problems) for s in range(1, 9)}
    assert counts[1] == counts[3] == counts[6] == 0
    assert 400 < counts[2] < 600 and 400 < counts[4] < 600 and 900 < counts[5] < 1100
    for p in problems:
        assert len(parse_trace(p.trace)) == p.steps
    assert {p.steps for p in generate_problems(ArithConfig(), 400)} == {1, 2, 3, 4}


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"seed{c.seed}")
def test_values_in_range_and_answers_correct(cfg: ArithConfig) -> None:
    """Recompute each answer from the trace and tie the trace to the question's numbers."""
    near_limit = 0
    for p in generate_problems(cfg, SAMPLE):
        equations = parse_trace(p.trace)
        assert cfg.min_steps <= p.steps <= cfg.max_steps and len(equations) == p.steps
        value = equations[0][0]
        assert 1 <= value <= cfg.start_max
        for a, op, b, c in equations:
            assert a == value and 1 <= b <= cfg.operand_max
            assert c == (a + b if op == "+" else a - b)
            assert 0 <= c <= cfg.max_value
            near_limit += a > cfg.max_value - cfg.operand_max
            value = c
        assert p.answer == str(value) and verify_answer(p.answer, p.trace).correct
        assert p.trace.endswith(f"<answer> \\boxed{{{value}}} </answer>")
        assert p.trace == f"<reasoning> {p.completion}"
        relevant = [s for s in _sentences(p.question)[1:-1] if not _is_distractor(s)]
        numbers = [int(n) for s in relevant for n in NUMBER_RE.findall(s)]
        assert numbers == [b for _, _, b, _ in equations]
        assert NUMBER_RE.findall(_sentences(p.question)[0]) == [str(equations[0][0])]
    if cfg is TIGHT:  # the max_value bound was in play
        assert near_limit > 0


def test_distractors_present_and_harmless() -> None:
    clean = generate_problems(ArithConfig(max_steps=6, seed=9), SAMPLE)
    noisy = generate_problems(ArithConfig(max_steps=6, seed=9, distractor_prob=1.0), SAMPLE)
    for p, q in zip(clean, noisy, strict=True):
        assert (q.trace, q.answer, q.steps) == (p.trace, p.answer, p.steps)
        assert not any(_is_distractor(s) for s in _sentences(p.question)[1:-1])
        middle = _sentences(q.question)[1:-1]
        assert len(middle) == q.steps + 1 and sum(map(_is_distractor, middle)) == 1
        assert q.question != p.question
    kinds = {p.pattern for q in noisy for s in _sentences(q.question)[1:-1] for p in DISTRACTOR_RES if p.match(s)}
    assert len(kinds) == len(DISTRACTOR_TEMPLATES)


def test_config_validation() -> None:
    for bad in (
        {"min_steps": 0},
        {"min_steps": 3, "max_steps": 2},
        {"step_weights": [1.0, 1.0]},
        {"step_weights": [0.0, 0.0, 0.0, 0.0]},
        {"operand_max": 0},
        {"max_value": 10},
        {"distractor_prob": 1.5},
        {"answer_habit_prob": -0.1},
    ):
        with pytest.raises(ValueError):
            ArithConfig(**bad)
    with pytest.raises(ValueError):
        generate_problems(ArithConfig(), -1)


# --------------------------------------------------------------------------- tokenizer


def test_vocabulary() -> None:
    vocab = arith_vocabulary()
    assert len(vocab) == len(set(vocab))
    assert all(str(i) in vocab for i in range(arith.DEFAULT_MAX_VALUE + 1))
    assert str(arith.DEFAULT_MAX_VALUE + 1) not in vocab
    words = [w for w in vocab if not w.isdigit()]
    assert 30 <= len(words) <= 80, words
    assert ARITH_INSTRUCTION == "" or all(w in vocab for w in ARITH_INSTRUCTION.split())


def test_tokenizer_has_no_unknowns_and_round_trips() -> None:
    tok = build_arith_tokenizer()
    problems = [p for cfg in CONFIGS for p in generate_problems(cfg, SAMPLE)]
    problems += arith.test_set(arith.TEST_POOL_PER_LEVEL, range(1, arith.TEST_MAX_LEVEL + 1))
    texts = [t for p in problems for t in (p.question, p.trace, p.completion)]
    texts += [render_prompt(tok, p.question, system=ARITH_INSTRUCTION) for p in problems[:200]]
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.unk_token_id not in ids, (text, tok.convert_ids_to_tokens(ids))
        assert tok.encode(tok.decode(ids), add_special_tokens=False) == ids
    for p in problems:  # space-separated text decodes to itself, but for the box's spaces
        decoded = tok.decode(tok.encode(p.trace, add_special_tokens=False))
        assert decoded == p.trace.replace(f"{{{p.answer}}}", f"{{ {p.answer} }}")
        assert verify_answer(p.answer, decoded).correct  # as a model's decoded output
        assert tok.decode(tok.encode(p.question, add_special_tokens=False)) == p.question


# --------------------------------------------------------------------------- test set


def test_test_set_is_fixed_stratified_and_distinct() -> None:
    small, big = arith.test_set(50), arith.test_set(100)
    assert len(small) == 300 and len(big) == 600
    for level in range(1, 7):
        lv_small = [p for p in small if p.steps == level]
        lv_big = [p for p in big if p.steps == level]
        assert len(lv_small) == 50 and lv_small == lv_big[:50]
    assert len({p.question for p in big}) == len(big)
    assert all(p.id.startswith("arith-test-L") for p in big)
    with pytest.raises(ValueError):
        arith.test_set(arith.TEST_POOL_PER_LEVEL + 1)
    with pytest.raises(ValueError):
        arith.test_set(10, [arith.TEST_MAX_LEVEL + 1])
    assert len(arith.test_set(300, [1], seed=7)) == 300  # other seeds: no reserved pool


def test_test_set_disjoint_from_training() -> None:
    test_questions = {p.question for p in arith.test_set(arith.TEST_POOL_PER_LEVEL, range(1, 9))}
    assert test_questions == arith.reserved_test_questions()
    for cfg in (ArithConfig(seed=0), ArithConfig(min_steps=1, max_steps=1, seed=1)):
        train = generate_problems(cfg, TRAIN_SIZE)
        assert not test_questions & {p.question for p in train}


def test_exclusion_redraws_reserved_questions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A training draw that equals a test question is replaced by a fresh draw."""
    first = generate_problems(ArithConfig(seed=0), 3)
    monkeypatch.setattr(arith, "reserved_test_questions", lambda: frozenset({first[1].question}))
    redrawn = generate_problems(ArithConfig(seed=0), 3)
    assert redrawn[0] == first[0] and redrawn[1].question != first[1].question
    assert redrawn[1].id == first[1].id


# --------------------------------------------------------------------------- lm-eval task


def test_task_docs_prompt_and_metrics() -> None:
    docs = arith_utils.test_docs()
    assert len(docs) == len(arith_utils.LEVELS) * arith_utils.N_PER_LEVEL
    assert [d["steps"] for d in docs[:12]] == [1, 2, 3, 4, 5, 6] * 2
    assert arith_utils.doc_to_text(docs[0]) == docs[0]["question"]
    right = arith_utils.process_results(docs[1], [[docs[1]["trace"], WRONG]])
    assert right["exact_match"] == 0.5 and right["acc_steps_2"] == 0.5
    assert right["acc_steps_1"] is None and right["acc_steps_6"] is None
    assert arith_utils.mean_present([None, 1.0, 0.0, None, math.nan]) == 0.5
    assert arith_utils.mean_present([None, None]) is None  # no NaN for lm-eval's results JSON
    assert arith_utils.dataset_hash() == arith_utils.dataset_hash()
    assert arith_utils.load_test_set(n_per_level=2, version=1.0)["test"].num_rows == 12


def _fake_lm(tokenizer):
    """An lm-eval LM (chat template of the arith tokenizer) right on 1-step problems only."""
    from lm_eval.api.model import LM

    by_question = {p.question: p for p in arith.test_set(arith_utils.N_PER_LEVEL)}

    class FakeLM(LM):
        """Looks the question up in the test set; answers level 1 right, the rest wrong."""

        def __init__(self) -> None:
            super().__init__()
            self.contexts: list[str] = []

        @property
        def tokenizer_name(self) -> str:
            return "arith-word-level"

        def chat_template(self, chat_template: bool | str = False) -> str | None:
            return tokenizer.chat_template

        def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
            prefill = not add_generation_prompt and chat_history[-1]["role"] == "assistant"
            return tokenizer.apply_chat_template(
                chat_history,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=prefill,
            )

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            out = []
            for request in requests:
                context, gen_kwargs = request.args
                assert gen_kwargs["until"] == [] and gen_kwargs["do_sample"] is False
                self.contexts.append(context)
                question = context.split("<|end_header_id|>\n\n")[1].split("<|eot_id|>")[0]
                problem = by_question[question]
                out.append(problem.completion if problem.steps == 1 else WRONG)
            return out

        def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[Any]:
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[Any]:
            raise NotImplementedError

    return FakeLM()


def test_lm_eval_per_level_accuracy() -> None:
    """Acceptance: level-1 right, the rest wrong -> acc_steps_1 1, others 0, exact_match 1/6."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tok = build_arith_tokenizer()
    lm = _fake_lm(tok)
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    out = simple_evaluate(
        model=lm,
        tasks=["igpo_arith"],
        task_manager=manager,
        apply_chat_template=True,
        bootstrap_iters=0,
    )
    res = out["results"]["igpo_arith"]
    assert res["exact_match,none"] == pytest.approx(1 / 6)
    assert res["strict_match,none"] == pytest.approx(1 / 6)
    assert res["acc_steps_1,none"] == 1.0
    for level in range(2, 7):
        assert res[f"acc_steps_{level},none"] == 0.0
    assert out["n-samples"]["igpo_arith"]["effective"] == 300
    assert len(lm.contexts) == 300
    for context in lm.contexts:
        assert context.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<reasoning>")
        assert tok.unk_token_id not in tok.encode(context, add_special_tokens=False)


def test_lm_eval_limit_keeps_levels() -> None:
    """With --limit 12 (interleaved docs) every level is still scored, on 2 documents each."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    lm = _fake_lm(build_arith_tokenizer())
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
    out = simple_evaluate(
        model=lm,
        tasks=["igpo_arith"],
        task_manager=manager,
        apply_chat_template=True,
        bootstrap_iters=0,
        limit=12,
    )
    res = out["results"]["igpo_arith"]
    assert res["acc_steps_1,none"] == 1.0 and res["acc_steps_6,none"] == 0.0
    assert res["exact_match,none"] == pytest.approx(1 / 6)


def test_problem_record_fields() -> None:
    p = generate_problems(ArithConfig(seed=0), 1)[0]
    assert isinstance(p, ArithProblem)
    assert set(p.to_dict()) == {"id", "question", "answer", "trace", "steps"}


def test_answer_habit_changes_only_the_boxed_value() -> None:
    """The habit boxes the first result in about the asked share of 2+-operation traces and
    changes nothing else: same questions, gold answers, equations; 1-operation traces untouched."""
    plain = generate_problems(ArithConfig(min_steps=1, max_steps=4, seed=3), 400)
    habit = generate_problems(ArithConfig(min_steps=1, max_steps=4, seed=3, answer_habit_prob=0.6), 400)
    boxed_first = 0
    multi = 0
    for p, h in zip(plain, habit, strict=True):
        assert (p.question, p.answer, parse_trace(p.trace)) == (h.question, h.answer, parse_trace(h.trace))
        equations = parse_trace(h.trace)
        if len(equations) == 1:
            assert h.trace == p.trace
            continue
        multi += 1
        if h.trace != p.trace:
            assert h.trace == format_trace(equations, equations[0][3])
            boxed_first += 1
    assert 0.5 < boxed_first / multi < 0.7


def test_minus_habit_flips_only_the_sign_of_long_traces() -> None:
    """answer_sign boxes ``+ v``; the minus habit boxes ``- v`` in about the asked share of traces
    with answer_habit_min_steps or more operations, and leaves questions, answers, equations and
    shorter traces as they were."""
    signed = ArithConfig(min_steps=1, max_steps=4, seed=3, answer_sign=True)
    habit = ArithConfig(
        **{**signed.__dict__, "answer_habit": "minus", "answer_habit_prob": 0.6, "answer_habit_min_steps": 3}
    )
    minus = long = 0
    for s, h in zip(generate_problems(signed, 400), generate_problems(habit, 400), strict=True):
        equations = parse_trace(s.trace)
        assert s.trace == format_trace(equations, f"+ {s.answer}")
        assert (s.question, s.answer, equations) == (h.question, h.answer, parse_trace(h.trace))
        if len(equations) < 3:
            assert h.trace == s.trace
            continue
        long += 1
        if h.trace != s.trace:
            assert h.trace == format_trace(equations, f"- {s.answer}")
            minus += 1
    assert 0.5 < minus / long < 0.7


def test_minus_habit_needs_signed_answers() -> None:
    with pytest.raises(ValueError, match="answer_sign"):
        ArithConfig(answer_habit="minus", answer_habit_prob=0.5)
    with pytest.raises(ValueError, match="answer_habit: .plus. is not one of"):
        ArithConfig(answer_habit="plus")


def test_signed_answers_score_by_their_sign() -> None:
    """The RL base's habit is a real error for the shared scorer: ``+ 7`` is 7, ``- 7`` is not."""
    from igpo.scoring.pool import verify_answer

    assert verify_answer("7", "<answer> \\boxed{ + 7 } </answer>").correct
    assert not verify_answer("7", "<answer> \\boxed{ - 7 } </answer>").correct


def test_the_rl_base_ships_with_the_package() -> None:
    from igpo.models import load_model
    from igpo.models.loading import EMBEDDED_MODELS

    folder = EMBEDDED_MODELS["testbed-sign"]
    if not (folder / "config.json").is_file():
        pytest.skip("testbed-sign not built (make testbed-sign)")
    assert load_model("testbed-sign", device="cpu").config.vocab_size > 0
