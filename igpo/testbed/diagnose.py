"""Why the testbed's greedy answers go wrong: the decoding pass of the final result and the answer.

`python -m igpo.testbed.diagnose [MODEL]` decodes the igpo_arith test set greedily (the testbed
protocol: gen 48, block 16, 24 steps, 2 tokens per pass), records the pass that committed every
token, and splits the answers by when the boxed answer was committed relative to the last
equation's result: before it, in the same pass (the two sampled independently, neither seeing
the other), or after it (the answer could copy the result). It prints accuracy per group and
per level, and how many wrong answers are copy errors (trace right, answer off).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass

import torch

from igpo.testbed import TESTBED_DECODE, TESTBED_DIR

BATCH = 100


@dataclass
class Outcome:
    level: int
    correct: bool
    order: str
    """before / same / after: the answer's commit pass against the last result's; unparsed."""
    trace_right: bool
    """The last equation's result equals the gold answer (the answer token alone is off)."""


def _order(tokens: list[str], steps: list[int]) -> tuple[str, int | None, int | None]:
    try:
        answer = tokens.index("\\boxed{") + 1
        result = tokens.index("</reasoning>") - 2  # "... = R . </reasoning>"
    except ValueError:
        return "unparsed", None, None
    a, r = steps[answer], steps[result]
    return ("before" if a < r else "same" if a == r else "after"), answer, result


def diagnose(model_dir: str = str(TESTBED_DIR), n_per_level: int = 50) -> list[Outcome]:
    from igpo.arith import test_set
    from igpo.decoding import generate
    from igpo.decoding.text import completion_texts, stop_ids
    from igpo.models import load_model, load_tokenizer
    from igpo.scoring.pool import verify_answer
    from igpo.testbed.measure import arith_prompts

    model, tok = load_model(model_dir, device="cpu"), load_tokenizer(model_dir)
    spec = model.token_spec
    problems = test_set(n_per_level)
    out: list[Outcome] = []
    for start in range(0, len(problems), BATCH):
        chunk = problems[start : start + BATCH]
        ids, mask = arith_prompts(tok, [p.question for p in chunk], spec.pad_id or 0)
        dec = generate(model, ids, TESTBED_DECODE, attention_mask=mask, record_steps=True)
        texts = completion_texts(tok, dec.completions, stop_ids(spec))
        for i, p in enumerate(chunk):
            tokens = tok.convert_ids_to_tokens(dec.completions[i].tolist())
            order, _, result = _order(tokens, dec.commit_step[i].tolist())
            trace_right = result is not None and tokens[result].strip() == str(p.answer)
            out.append(Outcome(p.steps, verify_answer(p.answer, texts[i]).correct, order, trace_right))
    return out


def summary(outcomes: list[Outcome]) -> dict:
    by_order = Counter(o.order for o in outcomes)
    wrong = [o for o in outcomes if not o.correct]
    return {
        "problems": len(outcomes),
        "accuracy": sum(o.correct for o in outcomes) / len(outcomes),
        "answer_vs_result_pass": dict(by_order),
        "accuracy_by_order": {k: sum(o.correct for o in outcomes if o.order == k) / n for k, n in by_order.items()},
        "wrong": len(wrong),
        "wrong_with_answer_in_same_pass_as_result": sum(o.order == "same" for o in wrong),
        "wrong_with_right_trace": sum(o.trace_right for o in wrong),
        "accuracy_by_level": {
            lv: sum(o.correct for o in outcomes if o.level == lv) / max(1, sum(o.level == lv for o in outcomes))
            for lv in sorted({o.level for o in outcomes})
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(TESTBED_DIR))
    parser.add_argument("--per-level", type=int, default=50)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(json.dumps(summary(diagnose(args.model, args.per_level)), indent=2))


if __name__ == "__main__":
    main()
