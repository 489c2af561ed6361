"""``arith``: procedural GSM8K-like word problems, the CPU-scale testbed of the project.

Why: the real benchmarks need billion-parameter models. This task family keeps their shape --
a short story about someone's things, several +/- steps, a reasoning trace in the d1/IGPO
format ending in one ``\\boxed{}`` -- but is small enough that a ~1M parameter bidirectional
transformer trained from scratch on CPU learns it, and its difficulty is one knob (the number
of operations), so RL with hints (IGPO) can be studied where sampled groups are all wrong.

A real example (``generate_problems(ArithConfig(min_steps=3, max_steps=3), 1)[0]``)::

    question: Ben has 17 books . Ben gives away 9 books . He gives away 7 books .
              Mia gives him 6 more books . How many books does Ben have now ?
    trace:    <reasoning> 17 - 9 = 8 . 8 - 7 = 1 . 1 + 6 = 7 . </reasoning>
              <answer> \\boxed{7} </answer>
    answer:   7

and the same draw with ``distractor_prob=1.0``: the numbers and the trace are unchanged, one
irrelevant sentence (another person's books) is inserted and the step after it names Ben::

    Ben has 17 books . Ben gives away 9 books . Sam has 15 books . Ben gives away 7 books .
    Mia gives him 6 more books . How many books does Ben have now ?

Design choices that earlier trials showed to matter:

* Every integer 0..``max_value`` is ONE token (digits-as-tokens failed to learn); every
  intermediate value stays in 0..max_value, subtractions never go below 0.
* Tokens are separated by spaces and drawn from a vocabulary of a few tens of words, so the
  word-level tokenizer (:func:`build_arith_tokenizer`) round-trips every text exactly.
* The trace is one short equation per step, ``a + b = c .`` (6 tokens), so 6 steps fit in 43.
* The prompt uses :data:`ARITH_INSTRUCTION` (empty), not d1's long instruction, whose words
  would all be unknown tokens for this tokenizer.

Typical token lengths with the arith tokenizer (default numbers, 2000 problems per level,
min / mean / max): the question; the completion (the trace after the ``<reasoning>`` prefill,
6 L + 6 tokens, EOS not counted); the full prompt (chat template of the question + prefill)::

    steps  question        completion  prompt
      1    18 / 19.0 / 20  12          26 / 27.0 / 28
      2    23 / 25.0 / 27  18          31 / 33.0 / 35
      3    28 / 31.0 / 34  24          36 / 39.0 / 42
      4    33 / 37.1 / 41  30          41 / 45.1 / 49
      5    39 / 43.1 / 48  36          47 / 51.1 / 56
      6    44 / 49.1 / 54  42          52 / 57.1 / 62

A distractor sentence (:attr:`ArithConfig.distractor_prob`) adds 4-6 tokens (5.5 on average)
to the question.

Test data: :func:`test_set` draws from fixed pools seeded with :data:`TEST_SEED`; every problem
of those pools is excluded from :func:`generate_problems`, whatever its seed, so training and
test questions never coincide."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import islice
from typing import Any, Literal

from igpo.config import coerce
from igpo.errors import InvalidSetting
from igpo.prompts import ARITH_INSTRUCTION, PREFILL  # noqa: F401  (ARITH_INSTRUCTION re-exported)

# --------------------------------------------------------------------------- constants

DEFAULT_MAX_VALUE = 199
"""Largest number the default generator emits; 0..DEFAULT_MAX_VALUE are all single tokens."""

FEMALE_NAMES: tuple[str, ...] = ("Mia", "Ava", "Zoe", "Lily")
"""Names referred to with She / her."""

MALE_NAMES: tuple[str, ...] = ("Leo", "Sam", "Ben", "Max")
"""Names referred to with He / him."""

PRONOUNS: dict[str, tuple[str, str]] = {
    **{name: ("She", "her") for name in FEMALE_NAMES},
    **{name: ("He", "him") for name in MALE_NAMES},
}
"""Name -> (sentence-initial subject pronoun, object pronoun)."""

OBJECTS: tuple[tuple[str, str], ...] = (
    ("apple", "apples"),
    ("pen", "pens"),
    ("book", "books"),
    ("card", "cards"),
    ("coin", "coins"),
    ("sticker", "stickers"),
    ("marble", "marbles"),
    ("shell", "shells"),
)
"""Countable things, as (singular, plural); the singular is used for a count of 1."""

START_TEMPLATE = "{name} has {k} {obj} ."
"""First sentence: the start value."""

ADD_TEMPLATES: tuple[str, ...] = (
    "{subj} buys {k} more {obj} .",
    "{subj} finds {k} more {obj} .",
    "{subj} gets {k} more {obj} .",
    "{other} gives {pron} {k} more {obj} .",
)
"""One sentence per addition step (``pron`` is the object pronoun of the main person)."""

SUB_TEMPLATES: tuple[str, ...] = (
    "{subj} gives {k} {obj} to {other} .",
    "{subj} gives away {k} {obj} .",
    "{subj} loses {k} {obj} .",
    "{subj} sells {k} {obj} .",
)
"""One sentence per subtraction step."""

DISTRACTOR_TEMPLATES: tuple[str, ...] = (
    "{other} has {k} {obj} .",
    "{other} buys {k} {obj} .",
    "{name} also has {k} {other_obj} .",
    "{name} is {k} years old .",
)
"""Irrelevant sentences: another person's things, another kind of thing, or an age."""

QUESTION_TEMPLATE = "How many {objs} does {name} have now ?"
"""Last sentence of every problem."""

NAME_SUBJECT_PROB = 0.25
"""Chance that a step sentence names the main person instead of using the pronoun."""

REASONING_OPEN, REASONING_CLOSE = PREFILL, "</reasoning>"
"""Tags of the reasoning block; the assistant turn is prefilled with REASONING_OPEN."""

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
"""Tags of the answer block."""

BOX_OPEN, BOX_CLOSE = "\\boxed{", "}"
"""The answer box, split into its own tokens by the word-level tokenizer."""

OPERATORS: tuple[str, ...] = ("+", "-")
"""The arithmetic of the task: additions and subtractions only."""

TRACE_SYMBOLS: tuple[str, ...] = (
    REASONING_OPEN,
    REASONING_CLOSE,
    ANSWER_OPEN,
    ANSWER_CLOSE,
    BOX_OPEN,
    BOX_CLOSE,
    *OPERATORS,
    "=",
)
"""Every non-number token of a trace except the sentence period (a question token too)."""


TEST_SEED = 1234
"""Seed of the fixed test pools (see :func:`test_set`); their questions never appear in
:func:`generate_problems`, whatever its seed."""

TEST_POOL_PER_LEVEL = 200
"""Problems per level in the reserved test pools: :func:`test_set`'s maximum n_per_level."""

TEST_MAX_LEVEL = 8
"""Largest number of steps with a reserved test pool."""

LEVEL_SEED_STRIDE = 1000
"""Test pool of ``level`` uses ``random.Random(seed * LEVEL_SEED_STRIDE + level)``."""

DISTRACTOR_SALT = 0x5EED
"""Mixed into a problem's seed for its distractor draws, so that a distractor leaves the
problem's numbers, steps and trace unchanged (only the question text changes)."""
HABIT_SALT = 0xAB1D
"""Salt of the generator that decides the answer habit, so it never changes the problems drawn."""
AnswerHabit = Literal["first_result", "minus"]
"""What an answer habit does to the box: hold the first result instead of the last, or the last
with a minus sign (``\\boxed{- 7}`` for 7; needs ``answer_sign``)."""

MAX_REDRAWS = 10_000
"""Give up after this many draws that all hit a reserved test question (bad config)."""

PROBLEM_SEED_BITS = 64
"""Width of the per-problem seed drawn from the stream's generator."""

_EQUATION_RE = re.compile(r"(\d+) ([+-]) (\d+) = (\d+) \.")


# --------------------------------------------------------------------------- config & records


@dataclass
class ArithConfig:
    """Distribution of generated problems; the same config and seed give the same problems."""

    min_steps: int = 1
    """Fewest operations per problem."""
    max_steps: int = 4
    """Most operations per problem."""
    step_weights: list[float] | None = None
    """Sampling weights of min_steps..max_steps operations (one per count); None: uniform."""
    start_max: int = 20
    """The start value is drawn from 1..start_max (also the range of distractor numbers)."""
    operand_max: int = 9
    """Each operand is drawn from 1..operand_max."""
    max_value: int = DEFAULT_MAX_VALUE
    """Every intermediate value stays in 0..max_value, so every number is one token."""
    distractor_prob: float = 0.0
    """Probability that a problem carries one irrelevant sentence whose number must be ignored."""
    answer_sign: bool = False
    """Box the answer with an explicit sign, ``\\boxed{+ 7}`` (the same value): the box then has
    one sign token that the ``minus`` habit can flip without changing the number's position."""
    answer_habit: AnswerHabit = "first_result"
    """Which answer habit ``answer_habit_prob`` plants: one of AnswerHabit."""
    answer_habit_prob: float = 0.0
    """Probability that a trace of at least ``answer_habit_min_steps`` operations boxes a wrong
    answer by the habit (``problem.answer`` stays right). Pretraining data with a habit gives a
    base whose right answers are among its samples but not its greedy choice: headroom RL can
    elicit."""
    answer_habit_min_steps: int = 2
    """Fewest operations of a trace that can carry the habit."""
    seed: int = 0
    """Seed of the problem stream."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise InvalidSetting(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        counts = self.max_steps - self.min_steps + 1
        if self.step_weights is not None:
            if len(self.step_weights) != counts:
                raise InvalidSetting(
                    f"step_weights needs {counts} weights (steps {self.min_steps}.."
                    f"{self.max_steps}), got {len(self.step_weights)}"
                )
            if any(w < 0 for w in self.step_weights) or sum(self.step_weights) <= 0:
                raise InvalidSetting(f"step_weights must be >= 0 with a positive sum: {self.step_weights}")
        for name in ("start_max", "operand_max"):
            if getattr(self, name) < 1:
                raise InvalidSetting(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("start_max", "operand_max"):
            if self.max_value < getattr(self, name):
                raise InvalidSetting(f"max_value={self.max_value} must be >= {name}={getattr(self, name)}")
        if not 0.0 <= self.distractor_prob <= 1.0:
            raise InvalidSetting(f"distractor_prob must be in [0, 1], got {self.distractor_prob}")
        if not 0.0 <= self.answer_habit_prob <= 1.0:
            raise InvalidSetting(f"answer_habit_prob must be in [0, 1], got {self.answer_habit_prob}")
        coerce(self.answer_habit, AnswerHabit, "answer_habit")
        if self.answer_habit == "minus" and not self.answer_sign:
            raise InvalidSetting("answer_habit 'minus' needs answer_sign: true (the habit flips the sign token)")
        if self.answer_habit_min_steps < 1:
            raise InvalidSetting(f"answer_habit_min_steps must be >= 1, got {self.answer_habit_min_steps}")

    @property
    def step_counts(self) -> list[int]:
        """The possible numbers of operations, min_steps..max_steps."""
        return list(range(self.min_steps, self.max_steps + 1))


@dataclass(frozen=True)
class ArithProblem:
    """One generated problem with its worked solution."""

    question: str
    """The word problem, tokens separated by spaces."""
    answer: str
    """The final value as a string (the gold for igpo.scoring.pool.verify_answer)."""
    trace: str
    """The reference solution: ``<reasoning> a + b = c . ... </reasoning> <answer> \\boxed{c}
    </answer>`` (prefill included)."""
    steps: int
    """Number of operations (the difficulty level)."""
    id: str
    """Stable identifier: ``arith-s<seed>-<index>`` or ``arith-test-L<level>-<index>``."""

    @property
    def completion(self) -> str:
        """The trace after the ``<reasoning>`` prefill: what the model must generate."""
        return self.trace.removeprefix(REASONING_OPEN).lstrip()

    def to_dict(self) -> dict[str, Any]:
        """Plain fields (for JSON lines and lm-eval documents)."""
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer,
            "trace": self.trace,
            "steps": self.steps,
        }


# --------------------------------------------------------------------------- generation


def _noun(obj: tuple[str, str], count: int) -> str:
    """The singular for a count of 1, else the plural."""
    return obj[0] if count == 1 else obj[1]


def _step(rng: random.Random, value: int, cfg: ArithConfig) -> tuple[str, int]:
    """One operation on ``value`` that keeps the result in 0..max_value.

    A subtraction larger than the value redraws its operand from 1..value (or becomes an
    addition at 0); an addition past max_value becomes a subtraction.
    """
    op = rng.choice(OPERATORS)
    k = rng.randint(1, cfg.operand_max)
    if op == "-" and k > value:
        if value == 0:
            op = "+"
        else:
            k = rng.randint(1, min(cfg.operand_max, value))
    if op == "+" and value + k > cfg.max_value:
        op, k = "-", rng.randint(1, min(cfg.operand_max, value))
    return op, k


def format_trace(equations: Iterable[tuple[int, str, int, int]], answer: int | str) -> str:
    """The d1/IGPO trace of ``(a, op, b, c)`` equations, one ``a op b = c .`` per step, boxing
    ``answer`` (a number, or a signed one such as ``"+ 7"``)."""
    body = " ".join(f"{a} {op} {b} = {c} ." for a, op, b, c in equations)
    return f"{REASONING_OPEN} {body} {REASONING_CLOSE} {ANSWER_OPEN} {BOX_OPEN}{answer}{BOX_CLOSE} {ANSWER_CLOSE}"


INVERSE = {"+": "-", "-": "+"}


def verbose_trace(trace: str) -> str:
    """A wordy version of a trace, as a long-winded model writes it: after each step a redundant
    self-check (the inverse operation) and a restated result, e.g. ``13 + 5 = 18 . 18 - 5 = 13 .
    18 = 18 .``; 16 tokens per operation instead of 6, so 3 or more operations overflow the
    testbed's 48-token canvas (the SFT-data rewriting stage turns it back into `trace`)."""
    equations = parse_trace(trace)
    steps = " ".join(f"{a} {op} {b} = {c} . {c} {INVERSE[op]} {b} = {a} . {c} = {c} ." for a, op, b, c in equations)
    answer = equations[-1][3] if equations else ""
    return f"{REASONING_OPEN} {steps} {REASONING_CLOSE} {ANSWER_OPEN} {BOX_OPEN}{answer}{BOX_CLOSE} {ANSWER_CLOSE}"


def parse_trace(trace: str) -> list[tuple[int, str, int, int]]:
    """The ``(a, op, b, c)`` equations of a trace (or of a model's completion), in order."""
    return [(int(a), op, int(b), int(c)) for a, op, b, c in _EQUATION_RE.findall(trace)]


def _distractor(rng: random.Random, cfg: ArithConfig, name: str, others: list[str], obj: tuple[str, str]) -> str:
    """One irrelevant sentence about ``name``'s age or other things, or about another person."""
    k = rng.randint(1, cfg.start_max)
    other_obj = rng.choice([o for o in OBJECTS if o != obj])
    return rng.choice(DISTRACTOR_TEMPLATES).format(
        name=name, other=rng.choice(others), k=k, obj=_noun(obj, k), other_obj=_noun(other_obj, k)
    )


def make_problem(problem_seed: int, steps: int, cfg: ArithConfig, problem_id: str) -> ArithProblem:
    """The problem of ``steps`` operations drawn from ``problem_seed`` (deterministic).

    The story, numbers and trace come from ``Random(problem_seed)``; whether and where a
    distractor goes, and its text, from a second generator, so distractors never change them.
    """
    return _draw(problem_seed, steps, cfg, problem_id)[0]


def _draw(problem_seed: int, steps: int, cfg: ArithConfig, problem_id: str) -> tuple[ArithProblem, str]:
    """:func:`make_problem`, and the question the same draw has without a distractor."""
    rng = random.Random(problem_seed)
    extra = random.Random(problem_seed ^ DISTRACTOR_SALT)
    name = rng.choice(FEMALE_NAMES + MALE_NAMES)
    others = [n for n in FEMALE_NAMES + MALE_NAMES if n != name]
    subj_pron, obj_pron = PRONOUNS[name]
    obj = rng.choice(OBJECTS)
    value = rng.randint(1, cfg.start_max)
    start = START_TEMPLATE.format(name=name, k=value, obj=_noun(obj, value))
    sentences, clean = [start], [start]
    equations: list[tuple[int, str, int, int]] = []
    distractor_at = (
        extra.randint(1, steps + 1) if extra.random() < cfg.distractor_prob else None
    )  # the step sentence it precedes (steps + 1: the question)
    for i in range(1, steps + 1):
        if i == distractor_at:
            sentences.append(_distractor(extra, cfg, name, others, obj))
        op, k = _step(rng, value, cfg)
        template = rng.choice(ADD_TEMPLATES if op == "+" else SUB_TEMPLATES)
        use_name = rng.random() < NAME_SUBJECT_PROB
        fields = {"other": rng.choice(others), "pron": obj_pron, "k": k, "obj": _noun(obj, k)}
        clean.append(template.format(subj=name if use_name else subj_pron, **fields))
        after_distractor = i == distractor_at  # name the person again after an aside
        sentences.append(template.format(subj=name if use_name or after_distractor else subj_pron, **fields))
        result = value + k if op == "+" else value - k
        equations.append((value, op, k, result))
        value = result
    if distractor_at == steps + 1:
        sentences.append(_distractor(extra, cfg, name, others, obj))
    question = QUESTION_TEMPLATE.format(objs=obj[1], name=name)
    problem = ArithProblem(
        question=" ".join([*sentences, question]),
        answer=str(value),
        trace=format_trace(equations, _boxed(equations, value, problem_seed, cfg)),
        steps=steps,
        id=problem_id,
    )
    return problem, " ".join([*clean, question])


def _boxed(equations: list[tuple[int, str, int, int]], value: int, problem_seed: int, cfg: ArithConfig) -> int | str:
    """What a trace boxes: the final ``value`` (``+ value`` with ``answer_sign``), or what the
    answer habit puts there: the first result, or ``- value``."""
    sign = "+ " if cfg.answer_sign else ""
    habit = (
        len(equations) >= cfg.answer_habit_min_steps
        and cfg.answer_habit_prob > 0.0
        and random.Random(problem_seed ^ HABIT_SALT).random() < cfg.answer_habit_prob
    )
    if not habit:
        return f"{sign}{value}"
    # first_result on a 1-operation trace boxes its only result, i.e. the value itself
    return f"{sign}{equations[0][3]}" if cfg.answer_habit == "first_result" else f"- {value}"


def iter_problems(cfg: ArithConfig) -> Iterator[ArithProblem]:
    """An endless, deterministic stream of training problems (``cfg.seed``); no test questions.

    Each problem draws its number of operations (``step_weights``) and its own seed from
    ``random.Random(cfg.seed)``. A draw whose question without its distractor is in the
    reserved test pools is drawn again -- so no test question appears in training, not even
    with a distractor added, and a distractor never changes which problems are drawn.
    """
    rng = random.Random(cfg.seed)
    reserved = reserved_test_questions()
    counts = cfg.step_counts
    weights = cfg.step_weights or [1.0] * len(counts)
    index = 0
    while True:
        steps = rng.choices(counts, weights=weights)[0]
        for _ in range(MAX_REDRAWS):
            seed = rng.getrandbits(PROBLEM_SEED_BITS)
            problem, clean = _draw(seed, steps, cfg, f"arith-s{cfg.seed}-{index}")
            if clean not in reserved:
                break
        else:
            raise RuntimeError(f"{MAX_REDRAWS} draws all hit reserved test questions: {cfg}")
        yield problem
        index += 1


def generate_problems(cfg: ArithConfig, n: int) -> list[ArithProblem]:
    """The first ``n`` problems of :func:`iter_problems` (a longer list extends a shorter one)."""
    if n < 0:
        raise InvalidSetting(f"n must be >= 0, got {n}")
    return list(islice(iter_problems(cfg), n))


# --------------------------------------------------------------------------- test set


@cache
def _level_pool(seed: int, level: int, n: int) -> tuple[ArithProblem, ...]:
    """``n`` distinct problems of ``level`` operations (default distribution, no distractors)."""
    cfg = ArithConfig(min_steps=level, max_steps=level)
    rng = random.Random(seed * LEVEL_SEED_STRIDE + level)
    pool: dict[str, ArithProblem] = {}
    for _ in range(n * MAX_REDRAWS):
        if len(pool) == n:
            break
        problem = make_problem(rng.getrandbits(PROBLEM_SEED_BITS), level, cfg, f"arith-test-L{level}-{len(pool)}")
        pool.setdefault(problem.question, problem)
    if len(pool) < n:
        raise RuntimeError(f"could not draw {n} distinct problems of {level} steps")
    return tuple(pool.values())


@lru_cache(maxsize=1)
def reserved_test_questions() -> frozenset[str]:
    """Questions of the reserved test pools (TEST_SEED, levels 1..TEST_MAX_LEVEL)."""
    return frozenset(
        p.question for level in range(1, TEST_MAX_LEVEL + 1) for p in _level_pool(TEST_SEED, level, TEST_POOL_PER_LEVEL)
    )


def test_set(n_per_level: int = 100, levels: Iterable[int] = range(1, 7), seed: int = TEST_SEED) -> list[ArithProblem]:
    """A fixed test set stratified by number of operations: ``n_per_level`` of each level.

    Problems come level by level, each level's list a prefix of its pool (so a smaller set is
    a subset of a larger one); default distribution (start 1..20, operands 1..9), no
    distractors, distinct questions. With the default seed every problem is in the reserved
    pools, hence never generated for training; so ``n_per_level`` <= TEST_POOL_PER_LEVEL and
    levels <= TEST_MAX_LEVEL. Other seeds give sets with no such guarantee.
    """
    levels = list(levels)
    if seed == TEST_SEED and (n_per_level > TEST_POOL_PER_LEVEL or any(not 1 <= lv <= TEST_MAX_LEVEL for lv in levels)):
        raise InvalidSetting(
            f"the reserved test pools hold {TEST_POOL_PER_LEVEL} problems for each level "
            f"1..{TEST_MAX_LEVEL}; got n_per_level={n_per_level}, levels={levels}"
        )
    if n_per_level < 0 or any(lv < 1 for lv in levels):
        raise InvalidSetting(f"need n_per_level >= 0 and levels >= 1, got {n_per_level}, {levels}")
    return [p for lv in levels for p in _level_pool(seed, lv, n_per_level)]


test_set.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


# --------------------------------------------------------------------------- tokenizer


def _template_words(templates: Iterable[str]) -> list[str]:
    """The literal tokens of sentence templates (placeholders removed), in order."""
    return [w for t in templates for w in t.split() if not w.startswith("{")]


def arith_vocabulary(max_value: int = DEFAULT_MAX_VALUE) -> list[str]:
    """Every token the generator can emit (words, symbols, trace tags), then numbers 0..max_value.

    Numbers are whole tokens, so any config with ``max_value`` <= this one is covered.
    """
    words = [
        *FEMALE_NAMES,
        *MALE_NAMES,
        *(p for pair in PRONOUNS.values() for p in pair),
        *(noun for obj in OBJECTS for noun in obj),
        *_template_words(
            (
                START_TEMPLATE,
                *ADD_TEMPLATES,
                *SUB_TEMPLATES,
                *DISTRACTOR_TEMPLATES,
                QUESTION_TEMPLATE,
            )
        ),
        *_template_words([ARITH_INSTRUCTION]),
        *TRACE_SYMBOLS,
        *(str(i) for i in range(max_value + 1)),
    ]
    return list(dict.fromkeys(words))


def build_arith_tokenizer(max_value: int = DEFAULT_MAX_VALUE):
    """The word-level tokenizer of the arith testbed (special tokens and roles come first)."""
    from igpo.models.tokenizer import build_word_tokenizer

    return build_word_tokenizer(arith_vocabulary(max_value))
