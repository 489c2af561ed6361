"""Tests of the igpo lm-eval tasks: registry, local-data overrides and scoring through lm-eval."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from igpo.scoring.answers import format_gold_number, gsm8k_gold
from tasks import registry
from tasks.registry import (
    SPECS,
    TASK_DIR,
    TASKS,
    data_hash,
    dataset_source,
    local_task_dir,
    resolve_tasks,
    task_config,
    task_overrides,
)
from tasks.utils import PROMPT_INSTRUCTION, doc_to_text, score_responses

DATA_DIR = (Path(__file__).resolve().parents[2] / "shared" / "data").resolve()  # ../shared may be a link
"""Offline copies of the benchmarks (see shared/data/README.md); never copied into the repo."""

needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"no offline data at {DATA_DIR}")

LIMIT = 12
"""Documents per task in the lm-eval acceptance run (the first LIMIT of each file)."""

WRONG = "<reasoning> I guessed. </reasoning> <answer> \\boxed{-987654} </answer>"
"""A response that is wrong for every benchmark document."""

NO_BOX_WRONG = "<reasoning> no idea </reasoning>"
"""A wrong response without any answer."""


def _rows(rel: str) -> list[dict[str, Any]]:
    """All rows of one offline JSON-lines file."""
    with (DATA_DIR / rel).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _boxed(answer: str) -> str:
    """A d1-format response whose answer is ``answer``."""
    return f"<reasoning> worked it out </reasoning> <answer> \\boxed{{{answer}}} </answer>"


# Correct responses in varied but equivalent forms, by task and document index (first LIMIT docs).
# Entries flagged False are correct for math-verify but carry no \boxed{} (strict counts them
# wrong). Golds: gsm8k 18, 3, 70000, 540, 20, 64, 260, 160, 45, ...; math500 0
# "\left( 3, \frac{\pi}{2} \right)", 2 "\frac{14}{3}", 4 "\text{Evelyn}", 5 "42", 7 "90^\circ",
# 11 "\frac{3}{56}"; amc 142, 144, 81, 4, 13, 2, 30, 18, -4, 359, 8178, 5.
CORRECT: dict[str, dict[int, tuple[str, bool]]] = {
    "igpo_gsm8k": {
        0: (_boxed("\\$18"), True),
        2: (_boxed("70,000"), True),
        3: (_boxed("540.00"), True),
        5: ("<reasoning> 8 * 8 </reasoning> <answer> The answer is $64$. </answer>", False),
        8: (_boxed("45 \\text{ apples}"), True),
    },
    "igpo_math500": {
        0: (_boxed("(3, \\dfrac{\\pi}{2})"), True),
        2: (_boxed("\\dfrac{14}{3}"), True),
        4: (_boxed("\\text{Evelyn}"), True),
        5: (_boxed("42.0"), True),
        7: (_boxed("90^{\\circ}"), True),
        11: (_boxed("3/56"), True),
    },
    "igpo_amc": {
        0: (_boxed("142"), True),
        1: (_boxed("144.0"), True),
        3: (_boxed("\\frac{8}{2}"), True),
        8: (_boxed("-4"), True),
        10: (_boxed("8,178"), True),
    },
}

# Multiple-choice golds of MATH-500 (\text{(C)} style), answered as bare letters or (X).
MC_CORRECT: dict[int, str] = {227: _boxed("C"), 255: _boxed("(E)"), 296: _boxed("\\textbf{(B)}")}


class _FakeLM:
    """Factory of an lm-eval LM that answers from a fixed table keyed by the question text."""

    @staticmethod
    def build(answers: dict[str, dict[int, str]], repeat_answers: list[str] | None = None):
        """An LM answering ``answers[task][idx]`` (else WRONG); repeats cycle ``repeat_answers``."""
        from lm_eval.api.model import LM

        index: dict[str, tuple[str, int]] = {}
        for task, rel in (
            ("igpo_gsm8k", "gsm8k/test.jsonl"),
            ("igpo_math500", "math500/test.jsonl"),
            ("igpo_amc", "amc/test.jsonl"),
        ):
            for i, row in enumerate(_rows(rel)):
                index.setdefault(str(row.get("problem") or row["question"]).strip(), (task, i))

        class FakeLM(LM):
            """Looks the question up in the data files and answers from the table."""

            def __init__(self) -> None:
                super().__init__()
                self.contexts: list[str] = []
                self.seen: Counter[str] = Counter()

            def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
                out = []
                for request in requests:
                    context, gen_kwargs = request.args
                    assert context.startswith(PROMPT_INSTRUCTION + "\n\n")
                    assert context.endswith("<reasoning>")
                    assert gen_kwargs["until"] == [] and gen_kwargs["do_sample"] is False
                    self.contexts.append(context)
                    question = context[len(PROMPT_INSTRUCTION) + 2 :].removesuffix("<reasoning>")
                    task, idx = index[question.strip()]
                    if repeat_answers is not None:
                        out.append(repeat_answers[self.seen[context] % len(repeat_answers)])
                        self.seen[context] += 1
                    else:
                        out.append(answers.get(task, {}).get(idx, WRONG if idx % 2 else NO_BOX_WRONG))
                return out

            def loglikelihood(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

        return FakeLM()


def _evaluate(lm, tasks: list, include: Path, **kwargs) -> dict[str, Any]:
    """Run lm-eval's simple_evaluate offline on our task folder only."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include), include_defaults=False)
    return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, bootstrap_iters=0, **kwargs)


# --------------------------------------------------------------------------- registry


def test_resolve_tasks() -> None:
    assert resolve_tasks(["gsm8k", "igpo_math500", "amc,amc23", "gsm8k"]) == [
        "igpo_gsm8k",
        "igpo_math500",
        "igpo_amc",
        "igpo_amc23",
    ]
    assert resolve_tasks(["math"]) == ["igpo_math"]
    assert set(TASKS.values()) == {*SPECS, *registry.GROUPS}


def test_resolve_tasks_unknown() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'mmlu' \(known: .*gsm8k"):
        resolve_tasks(["gsm8k", "mmlu"])


def test_task_dir_ships_yamls() -> None:
    names = {p.stem for p in TASK_DIR.glob("igpo_*.yaml")}
    assert names == {*SPECS, *registry.GROUPS}


def test_task_config_resolves_template() -> None:
    cfg = task_config("amc")
    assert cfg["task"] == "igpo_amc" and cfg["dataset_path"] == "AI-MO/aimo-validation-amc"
    assert cfg["test_split"] == "train"
    assert cfg["output_type"] == "generate_until" and cfg["num_fewshot"] == 0
    assert cfg["gen_prefix"] == "<reasoning>"
    assert cfg["generation_kwargs"] == {"until": [], "do_sample": False, "max_gen_toks": 512}
    assert callable(cfg["process_results"]) and callable(cfg["doc_to_text"])
    assert {m["metric"] for m in cfg["metric_list"]} == {"exact_match", "strict_match", "timeouts"}
    assert cfg["metadata"]["version"] == 1.0


def test_task_overrides_hub_without_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.DATA_DIR_ENV, raising=False)
    cfg = task_overrides("gsm8k")
    assert (cfg["dataset_path"], cfg["dataset_name"]) == ("openai/gsm8k", "main")
    assert data_hash("gsm8k") == "hf:openai/gsm8k/main:test@unpinned"
    assert dataset_source("amc") == "hf:AI-MO/aimo-validation-amc:train@unpinned"
    assert local_task_dir() == TASK_DIR


def test_task_overrides_missing_file(tmp_path: Path) -> None:
    (tmp_path / "gsm8k").mkdir()
    missing = tmp_path / "gsm8k" / "test.jsonl"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        task_overrides("igpo_gsm8k", tmp_path)
    with pytest.raises(FileNotFoundError, match="gsm8k"):
        local_task_dir(tmp_path, ["math"])
    (tmp_path / "amc23").mkdir()
    (tmp_path / "amc23" / "test.jsonl").write_text('{"problem": "1+1?", "answer": 2.0}\n')
    include = local_task_dir(tmp_path, ["amc23"])
    assert sorted(p.name for p in include.iterdir()) == ["igpo_amc23.yaml"]


def test_task_overrides_rejects_groups() -> None:
    with pytest.raises(ValueError, match="group"):
        task_overrides("math", DATA_DIR)


@needs_data
def test_task_overrides_local(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = task_overrides("amc", DATA_DIR, extra={"repeats": 16})
    assert cfg["task"] == "igpo_amc" and cfg["repeats"] == 16
    assert cfg["dataset_path"] == "json" and cfg["dataset_name"] is None
    assert cfg["dataset_kwargs"] == {"data_files": {"train": str(DATA_DIR / "amc" / "test.jsonl")}}
    monkeypatch.setenv(registry.DATA_DIR_ENV, str(DATA_DIR))
    assert task_overrides("math500")["dataset_kwargs"]["data_files"]["test"].endswith("math500/test.jsonl")


@needs_data
def test_data_hash_and_source() -> None:
    expected = hashlib.sha256((DATA_DIR / "math500" / "test.jsonl").read_bytes()).hexdigest()
    assert data_hash("math500", DATA_DIR) == f"sha256:{expected}"
    assert dataset_source("gsm8k", DATA_DIR) == f"local:{DATA_DIR / 'gsm8k' / 'test.jsonl'}"


@needs_data
@pytest.mark.parametrize("name", sorted(n for n, s in SPECS.items() if s.local_file))
def test_local_rows_prompts_and_golds(name: str) -> None:
    spec = SPECS[name]
    rows = _rows(spec.local_file)
    assert len(rows) == spec.rows
    prompt = doc_to_text(rows[0])
    assert prompt.startswith(PROMPT_INSTRUCTION + "\n\n") and len(prompt) > len(PROMPT_INSTRUCTION)
    if name == "igpo_gsm8k":
        assert all(gsm8k_gold(r["answer"]).lstrip("-").isdigit() for r in rows)
    if name.startswith("igpo_amc"):
        assert format_gold_number(rows[0]["answer"]) == str(int(rows[0]["answer"]))


def test_score_responses_averages_repeats() -> None:
    responses = [["\\boxed{2}", "\\boxed{3}", "2", "\\boxed{2.0}"]]
    assert score_responses("2", responses) == {
        "exact_match": 0.75,
        "strict_match": 0.5,
        "timeouts": 0.0,
    }
    assert score_responses("2", ["\\boxed{2}"])["exact_match"] == 1.0


# --------------------------------------------------------------------------- through lm-eval


@needs_data
def test_lm_eval_reports_the_correct_share() -> None:
    """Acceptance: equivalent answer forms score correct, the rest wrong, for each task."""
    answers = {task: {i: resp for i, (resp, _) in table.items()} for task, table in CORRECT.items()}
    lm = _FakeLM.build(answers)
    specs = [task_overrides(name, DATA_DIR) for name in ("gsm8k", "math500", "amc")]
    out = _evaluate(lm, specs, TASK_DIR, limit=LIMIT)
    assert len(lm.contexts) == 3 * LIMIT
    for task, table in CORRECT.items():
        res = out["results"][task]
        assert res["exact_match,none"] == pytest.approx(len(table) / LIMIT), task
        boxed = sum(1 for _, has_box in table.values() if has_box)
        assert res["strict_match,none"] == pytest.approx(boxed / LIMIT), task
        assert res["timeouts,none"] == 0
        assert out["n-samples"][task]["effective"] == LIMIT


@needs_data
def test_lm_eval_multiple_choice_answers() -> None:
    lm = _FakeLM.build({"igpo_math500": MC_CORRECT})
    ids = [*MC_CORRECT, 0]
    out = _evaluate(lm, [task_overrides("math500", DATA_DIR)], TASK_DIR, samples={"igpo_math500": ids})
    res = out["results"]["igpo_math500"]
    assert res["exact_match,none"] == pytest.approx(len(MC_CORRECT) / len(ids))
    assert res["strict_match,none"] == pytest.approx(len(MC_CORRECT) / len(ids))


@needs_data
def test_lm_eval_repeats_average() -> None:
    """avg@k: with repeats 4, two right and two wrong answers per document give 0.5."""
    lm = _FakeLM.build({}, repeat_answers=[_boxed("142"), WRONG, _boxed("142.0"), WRONG])
    spec = task_overrides("amc", DATA_DIR, extra={"repeats": 4})
    out = _evaluate(lm, [spec], TASK_DIR, limit=1)
    assert len(lm.contexts) == 4
    assert out["results"]["igpo_amc"]["exact_match,none"] == pytest.approx(0.5)


@needs_data
def test_lm_eval_group_from_local_task_dir() -> None:
    """The igpo_math group loads by name from local_task_dir and averages its members."""
    lm = _FakeLM.build({t: {i: r for i, (r, _) in table.items()} for t, table in CORRECT.items()})
    include = local_task_dir(DATA_DIR, ["math"])
    out = _evaluate(lm, ["igpo_math"], include, limit=LIMIT)
    members = registry.GROUPS["igpo_math"]
    shares = [len(CORRECT[task]) / LIMIT for task in members]
    assert out["results"]["igpo_math"]["exact_match,none"] == pytest.approx(sum(shares) / 3)
    for task in members:
        assert out["configs"][task]["dataset_path"] == "json"
