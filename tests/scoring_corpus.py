"""A deterministic corpus of (gold, response) pairs for checking the scorer against math-verify.

Golds: a built-in list of MATH-500- and GSM8K-shaped answers (so the corpus exists without any
data folder), plus every MATH-500 and GSM8K test gold of an offline data folder when one is
given. Each gold gets responses that a model might write: the gold itself in the d1 answer
format, or rewritten with thousands separators, currency and percent signs, units, ``\\text{}``,
``\\approx``, "Answer: \\( 9 \\)", nested boxes, equations ``x = 3``, degrees, sets, intervals,
tuples, other decimals and fractions, spacing and sizing commands, and wrong answers (off by
one, scaled, another problem's gold). Everything is drawn from one ``random.Random(seed)``, so
the same seed and golds give the same corpus.

``python -m tests.scoring_corpus [DATA_DIR] [--check]`` prints the corpus size per rewrite kind
and, with ``--check``, compares the whole corpus with plain math-verify.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SEED = 28
"""Seed of the corpus the tests use."""

REWRITES_PER_DATA_GOLD = 3
"""Rewrites drawn for each gold of a data folder besides the gold itself and, for numbers of 1000
or more, one thousands-separator style (every applicable rewrite for built-in golds)."""

BUILTIN_MATH_GOLDS = (
    "10",
    "0",
    "-2",
    "1000",
    "12500",
    "0.5",
    "3.75",
    "-0.25",
    "\\frac{1}{2}",
    "\\frac{14}{3}",
    "-\\frac{3}{4}",
    "\\dfrac{7}{2}",
    "\\frac{\\sqrt{3}}{2}",
    "2\\sqrt{5}",
    "3\\sqrt{13}",
    "\\sqrt{2}",
    "\\pi",
    "2\\pi",
    "\\frac{\\pi}{3}",
    "6 - 5i",
    "1 + 2i",
    "x^2 + 7x + 10",
    "2k+2",
    "p - q",
    "y = 2x + 3",
    "x = 5",
    "(3, \\frac{\\pi}{2})",
    "(-2, 1)",
    "(1,-2,3)",
    "\\{1, 2, 3\\}",
    "1, -2",
    "[-2, 7]",
    "(-\\infty, 3)",
    "(-\\infty, -2) \\cup (3, \\infty)",
    "[0, 1) \\cup (1, 2]",
    "\\begin{pmatrix} -7 \\\\ 16 \\\\ 5 \\end{pmatrix}",
    "90^\\circ",
    "145^\\circ",
    "30^{\\circ}",
    "10\\%",
    "25\\%",
    "\\$18.90",
    "\\$1,000",
    "1,000,000",
    "15\\mbox{ cm}^2",
    "5.4 \\text{ cents}",
    "\\text{(C)}",
    "\\text{B}",
    "\\text{Navin}",
    "\\text{even}",
    "52_8",
    "1011_2",
    "3R^2",
    "\\frac{11 + 9a}{20}",
    "e^{-1}",
    "\\log_2 3",
    "\\cot x",
    "4\\sqrt{2} - 4",
    "1 \\pm \\sqrt{5}",
    "\\infty",
)
"""MATH-500-shaped golds (numbers, fractions, radicals, expressions, tuples, sets, intervals,
matrices, degrees, percent, money, units, choices, words, bases)."""

BUILTIN_GSM8K_GOLDS = (
    "18",
    "3",
    "70000",
    "1000",
    "160",
    "-5",
    "0",
    "2.5",
    "1250",
    "45",
    "624",
    "100",
    "7",
    "12345",
    "0.75",
    "99",
    "20",
    "1500000",
)
"""GSM8K-shaped golds (the number after ``####``, commas removed)."""

REASONINGS = (
    "We add the two amounts and subtract what was spent.",
    "First, $3 \\times 4 = 12$. Then we divide by $2$ to get the total.",
    "Let $x$ be the number of apples. Then $2x + 3 = 11$, so we solve for $x$.",
    "The area is \\(\\frac{1}{2} b h\\) and the perimeter is the sum of the sides.",
    "Each box holds 12 eggs, and there are 5 boxes, so 60 eggs in all; 7 are broken.",
    "By the quadratic formula, \\[x = \\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}.\\]",
    "Since the sequence is arithmetic, the common difference is $d = 3$, and the 10th term is $a + 9d$.",
    "We find $f(2) = 7$ and then $f(f(2)) = f(7)$.",
)
"""Reasoning used for built-in golds (data golds use their reference solution)."""

REASONING_CHARS = 400
"""Reasoning text kept from a reference solution."""


@dataclass(frozen=True)
class Pair:
    """One (gold, response) to score, with where it came from."""

    gold: str
    response: str
    kind: str
    source: str


def plain_math_verify(gold: str, response: str) -> bool:
    """math-verify called directly as the project's worker calls it: default extraction targets
    (LaTeX and plain expressions), default verify settings, the gold boxed unless it carries its
    own delimiters (``igpo.scoring.answers.gold_for_math_verify``), the response as written. math-verify's
    own time limits stay on (5 s), so a hang fails instead of blocking."""
    from math_verify import parse, verify

    from igpo.scoring.answers import gold_for_math_verify

    return bool(verify(parse(gold_for_math_verify(gold)), parse(response)))


# --------------------------------------------------------------------------- answer rewrites

_INT_RE = re.compile(r"-?\d+")
_DEC_RE = re.compile(r"-?\d+\.\d+")


def _is_number(gold: str) -> bool:
    return bool(_INT_RE.fullmatch(gold) or _DEC_RE.fullmatch(gold))


def _grouped(digits: str, sep: str) -> str:
    """``1234567`` -> ``1{sep}234{sep}567`` (sign and decimals kept)."""
    sign = "-" if digits.startswith("-") else ""
    whole, dot, frac = digits.lstrip("-").partition(".")
    groups = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    return sign + sep.join(groups) + dot + frac


def _other_number(gold: str, rng: random.Random) -> str:
    """A different number close to or far from the gold."""
    if _INT_RE.fullmatch(gold):
        return str(int(gold) + rng.choice([-10, -2, -1, 1, 2, 100]))
    value = float(gold)
    return repr(round(value + rng.choice([-1.0, -0.5, 0.25, 1.0]), 4))


Rewrite = Callable[[str, random.Random, list[str]], str | None]
"""(gold, rng, other golds) -> the answer text, or None where the rewrite does not apply."""


def _num(fn: Callable[[str, random.Random], str | None]) -> Rewrite:
    """A rewrite that applies to plain numeric golds only."""
    return lambda gold, rng, others: fn(gold, rng) if _is_number(gold) else None


NUMERIC_REWRITES: dict[str, Rewrite] = {
    "comma_thousands": _num(lambda g, r: _grouped(g, ",") if abs(float(g)) >= 1000 else None),
    "brace_comma_thousands": _num(lambda g, r: _grouped(g, "{,}") if abs(float(g)) >= 1000 else None),
    "thin_space_thousands": _num(lambda g, r: _grouped(g, "\\,") if abs(float(g)) >= 1000 else None),
    "space_thousands": _num(lambda g, r: _grouped(g, " ") if abs(float(g)) >= 1000 else None),
    "dollar_escaped": _num(lambda g, r: f"\\${g}"),
    "dollar_in_box": _num(lambda g, r: f"${_grouped(g, ',')}"),
    "dollar_cents": _num(lambda g, r: f"\\${g}.00" if "." not in g else f"\\${g}"),
    "percent": _num(lambda g, r: f"{g}\\%"),
    "percent_plain": _num(lambda g, r: f"{g}%"),
    "unit_text": _num(lambda g, r: f"{g} \\text{{ {r.choice(['dollars', 'cm', 'apples', 'minutes', 'miles'])}}}"),
    "unit_mbox": _num(lambda g, r: f"{g}\\mbox{{ cm}}^2"),
    "unit_bare": _num(lambda g, r: f"{g} {r.choice(['cm', 'm', 'kg', 'hours'])}"),
    "text_wrap": _num(lambda g, r: f"\\text{{{g}}}"),
    "approx": _num(lambda g, r: f"x \\approx {g}"),
    "approx_bare": _num(lambda g, r: f"\\approx {g}"),
    "trailing_zero": _num(lambda g, r: f"{g}.0" if "." not in g else f"{g}0"),
    "leading_zero_decimal": _num(lambda g, r: g.replace("0.", ".", 1) if g.lstrip("-").startswith("0.") else None),
    "seven_decimals": _num(lambda g, r: f"{float(g) + 1e-7:.7f}"),
    "near_decimal": _num(lambda g, r: f"{float(g) + 0.001:.3f}"),
    "fraction_of_int": _num(lambda g, r: f"\\frac{{{2 * int(g)}}}{{2}}" if _INT_RE.fullmatch(g) else None),
    "plus_sign": _num(lambda g, r: f"+{g}" if not g.startswith("-") else None),
    "degrees": _num(lambda g, r: f"{g}^\\circ"),
    "degrees_braced": _num(lambda g, r: f"{g}^{{\\circ}}"),
    "equation_x": _num(lambda g, r: f"{r.choice(['x', 'n', 'y', 'k'])} = {g}"),
    "set_single": _num(lambda g, r: f"\\{{{g}\\}}"),
    "set_pair": _num(lambda g, r: f"\\{{{g}, {_other_number(g, r)}\\}}"),
    "tuple_pair": _num(lambda g, r: f"({g}, {_other_number(g, r)})"),
    "interval": _num(lambda g, r: f"[{g}, \\infty)"),
    "wrong_near": _num(lambda g, r: _other_number(g, r)),
    "wrong_scaled": _num(lambda g, r: str(int(g) * 10) if _INT_RE.fullmatch(g) and g != "0" else None),
    "wrong_negated": _num(lambda g, r: g[1:] if g.startswith("-") else (f"-{g}" if g != "0" else None)),
    "expression_in_x": _num(lambda g, r: f"{g}x"),
}
"""Rewrites of plain numeric golds (right, wrong, or for math-verify to judge)."""

GENERAL_REWRITES: dict[str, Rewrite] = {
    "exact": lambda g, r, o: g,
    "no_spaces": lambda g, r, o: g.replace(" ", "") if " " in g else None,
    "more_spaces": lambda g, r, o: re.sub(r"([,+=])", r"\1 ", g) if re.search(r"[,+=]", g) else None,
    "dfrac": lambda g, r, o: g.replace("\\frac", "\\dfrac") if "\\frac" in g else None,
    "left_right": lambda g, r, o: (
        f"\\left{g[0]} {g[1:-1]} \\right{g[-1]}" if g[:1] in "([" and g[-1:] in ")]" else None
    ),
    "text_wrap_any": lambda g, r, o: f"\\text{{{g}}}" if "\\text" not in g and "{" not in g else None,
    "equation_any": lambda g, r, o: f"x = {g}" if "=" not in g else None,
    "degrees_any": lambda g, r, o: f"{g}^\\circ" if "circ" not in g and len(g) < 12 else None,
    "decimal_of_fraction": lambda g, r, o: _decimal_of_fraction(g),
    "slash_fraction": lambda g, r, o: re.sub(r"\\frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", g) if "\\frac{" in g else None,
    "wrong_other_gold": lambda g, r, o: r.choice([x for x in o if x != g]) if len(o) > 1 else None,
}
"""Rewrites that apply to any gold (several only where the gold has the right shape)."""


def _decimal_of_fraction(gold: str) -> str | None:
    match = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", gold)
    if match is None or int(match.group(3)) == 0:
        return None
    value = int(match.group(2)) / int(match.group(3))
    return f"{match.group(1)}{value:.6g}"


# --------------------------------------------------------------------------- response shapes


def _d1(reasoning: str, answer: str, rng: random.Random | None = None) -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>"


RESPONSE_SHAPES: dict[str, Callable[[str, str, random.Random], str]] = {
    "d1_boxed": _d1,
    "d1_boxed_period": lambda reasoning, a, r: _d1(reasoning, a, r).replace("}\n</answer>", "}.\n</answer>"),
    "dollar_boxed": lambda reasoning, a, r: f"{reasoning}\nSo the answer is $\\boxed{{{a}}}$.",
    "display_boxed": lambda reasoning, a, r: f"{reasoning}\n\\[ \\boxed{{{a}}} \\]",
    "nested_boxes": lambda reasoning, a, r: f"{reasoning}\n\\boxed{{\\boxed{{{a}}}}}",
    "two_boxes": lambda reasoning, a, r: f"{reasoning} First \\boxed{{{r.randint(2, 99)}}}, then \\boxed{{{a}}}.",
    "final_answer_is": lambda reasoning, a, r: (
        f"{reasoning}\nThe final answer is $\\boxed{{{a}}}$. I hope it is correct."
    ),
    "answer_colon_paren": lambda reasoning, a, r: f"{reasoning}\nAnswer: \\( {a} \\)",
    "answer_is_plain": lambda reasoning, a, r: f"{reasoning}\nThe answer is {a}.",
    "bare": lambda reasoning, a, r: a,
    "fbox": lambda reasoning, a, r: f"{reasoning}\n\\fbox{{{a}}}",
    "box_then_text": lambda reasoning, a, r: f"{reasoning}\n\\boxed{{{a}}} is the number of {{ways}}.",
}
"""How the answer sits in the response (d1 format most of the time)."""

SHAPE_WEIGHTS = {"d1_boxed": 12, "d1_boxed_period": 2}
"""Draw weights of the shapes (1 where not listed)."""


# --------------------------------------------------------------------------- golds


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def data_golds(data_dir: Path) -> list[tuple[str, str, str]]:
    """(source, gold, reasoning) of every MATH-500 and GSM8K test problem in `data_dir`."""
    from igpo.scoring.answers import gsm8k_gold

    rows = []
    for row in _read_jsonl(data_dir / "math500" / "test.jsonl"):
        reasoning = row["solution"].replace("\\boxed", "")[:REASONING_CHARS]
        rows.append(("math500", str(row["answer"]).strip(), reasoning))
    for row in _read_jsonl(data_dir / "gsm8k" / "test.jsonl"):
        reasoning = re.sub(r"<<[^>]*>>", "", row["answer"].rsplit("####", 1)[0]).strip()[:REASONING_CHARS]
        rows.append(("gsm8k", gsm8k_gold(row["answer"]), reasoning))
    return rows


def builtin_golds(rng: random.Random) -> list[tuple[str, str, str]]:
    """(source, gold, reasoning) of the built-in golds."""
    return [("builtin-math", g, rng.choice(REASONINGS)) for g in BUILTIN_MATH_GOLDS] + [
        ("builtin-gsm8k", g, rng.choice(REASONINGS)) for g in BUILTIN_GSM8K_GOLDS
    ]


# --------------------------------------------------------------------------- the corpus


def _applicable(gold: str, rng: random.Random, others: list[str]) -> list[tuple[str, str]]:
    """(kind, answer) for every rewrite that applies to `gold`."""
    out = []
    for kind, rewrite in {**GENERAL_REWRITES, **NUMERIC_REWRITES}.items():
        answer = rewrite(gold, rng, others)
        if answer is not None:
            out.append((kind, answer))
    return out


def _shape(rng: random.Random) -> str:
    names = list(RESPONSE_SHAPES)
    return rng.choices(names, weights=[SHAPE_WEIGHTS.get(n, 1) for n in names])[0]


def _pairs_for(source: str, gold: str, reasoning: str, rng: random.Random, others: list[str], limit: int | None):
    rewrites = _applicable(gold, rng, others)
    if limit is not None:
        exact = [rw for rw in rewrites if rw[0] == "exact"]
        rest = [rw for rw in rewrites if rw[0] != "exact"]
        grouped = [rw for rw in rest if rw[0].endswith("_thousands")]
        rest = [rw for rw in rest if not rw[0].endswith("_thousands")]
        rewrites = exact + grouped[:1] + rng.sample(rest, min(limit, len(rest)))
        if grouped:  # one separator style of the four, drawn
            rewrites[len(exact)] = rng.choice(grouped)
    for kind, answer in rewrites:
        shape = _shape(rng)
        yield Pair(gold, RESPONSE_SHAPES[shape](reasoning, answer, rng), f"{kind}/{shape}", source)


def build_corpus(data_dir: Path | None = None, seed: int = SEED) -> list[Pair]:
    """The corpus: every applicable rewrite of each built-in gold; for a data folder's golds,
    the gold itself and REWRITES_PER_DATA_GOLD drawn rewrites each."""
    rng = random.Random(seed)
    pairs: list[Pair] = []
    builtin = builtin_golds(rng)
    builtin_answers = [g for _, g, _ in builtin]
    for source, gold, reasoning in builtin:
        pairs.extend(_pairs_for(source, gold, reasoning, rng, builtin_answers, None))
    if data_dir is not None:
        rows = data_golds(data_dir)
        by_source = {s: [g for src, g, _ in rows if src == s] for s in ("math500", "gsm8k")}
        for source, gold, reasoning in rows:
            pairs.extend(_pairs_for(source, gold, reasoning, rng, by_source[source], REWRITES_PER_DATA_GOLD))
    return pairs


def sample(pairs: list[Pair], count: int, seed: int = SEED) -> list[Pair]:
    """A fixed subset of `count` pairs (all of them when there are fewer), in corpus order."""
    if len(pairs) <= count:
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), count))
    return [pairs[i] for i in keep]


def disagreements(pairs: list[Pair]) -> tuple[list[tuple[Pair, bool, bool]], int]:
    """(pair, scorer's verdict, math-verify's verdict) wherever ``igpo.scoring.pool.verify_answers``
    and :func:`plain_math_verify` differ, and how many scorer calls timed out."""
    from igpo.scoring.pool import verify_answers

    scores = verify_answers([(p.gold, p.response) for p in pairs])
    differ = []
    for pair, score in zip(pairs, scores, strict=True):
        reference = plain_math_verify(pair.gold, pair.response)
        if score.correct != reference:
            differ.append((pair, score.correct, reference))
    return differ, sum(s.timed_out for s in scores)


def main(argv: list[str]) -> None:
    """Print the corpus (of DATA_DIR when given) per rewrite and source; with --check, also
    score it and list every disagreement with plain math-verify."""
    check = "--check" in argv
    args = [a for a in argv if a != "--check"]
    pairs = build_corpus(Path(args[0]) if args else None)
    print(f"{len(pairs)} pairs")
    for kind, n in sorted(Counter(p.kind.split("/")[0] for p in pairs).items()):
        print(f"{n:6d}  {kind}")
    for source, n in sorted(Counter(p.source for p in pairs).items()):
        print(f"{n:6d}  {source}")
    if check:
        differ, timeouts = disagreements(pairs)
        for pair, mine, reference in differ:
            print(f"differ: scorer {mine}, math-verify {reference}: {pair.gold!r} | {pair.response[-120:]!r}")
        print(f"{len(differ)} disagreements, {timeouts} timeouts in {len(pairs)} pairs")


if __name__ == "__main__":
    main(sys.argv[1:])
