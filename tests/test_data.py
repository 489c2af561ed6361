"""Training data: real GSM8K / MATH train files, JSONL errors, MetaMathQA, sources, prompt."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from igpo.data import (
    D1_SYSTEM_PROMPT,
    SOURCES,
    DataConfig,
    Example,
    load_examples,
    load_gsm8k_train,
    load_jsonl,
    load_math_train,
    load_metamath,
    load_sft_jsonl,
    register_source,
    render_prompt,
    unbox,
)

NUMBER = re.compile(r"-?\d+(\.\d+)?")


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gsm8k_train(shared_data):
    examples = load_gsm8k_train(shared_data)
    assert len(examples) == 7473
    first = examples[0]
    assert first.answer == "72" and first.prompt.startswith("Natalia sold clips")
    assert first.trace == (
        "<reasoning>\nNatalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.\n</reasoning>\n"
        "<answer>\n\\boxed{72}\n</answer>"
    )
    for ex in examples:
        assert "<<" not in ex.trace and "####" not in ex.trace
        assert NUMBER.fullmatch(ex.answer), ex.answer
        assert ex.trace.endswith(f"\\boxed{{{ex.answer}}}\n</answer>")
    assert len({ex.id for ex in examples}) == len(examples)


def test_math_train(shared_data):
    examples = load_math_train(shared_data)
    assert len(examples) == 7498  # 2 rows with an empty \boxed{} are skipped
    assert all(ex.answer for ex in examples)
    assert all(ex.trace.count("\\boxed") == 1 for ex in examples)  # only the answer block's
    assert examples[0].meta["subject"] == "Algebra" and examples[0].id == "train/algebra/0.json"


def test_unbox():
    text = r"so $\boxed{\frac{1}{2}}$ and \fbox{x}, \boxed 9."
    assert unbox(text) == r"so $\frac{1}{2}$ and x, 9."


def test_jsonl_loader_and_missing_trace(tmp_path):
    path = write_lines(
        tmp_path / "rl.jsonl",
        [
            json.dumps({"prompt": "1+1?", "answer": 2, "trace": "<reasoning>\n1+1=2"}),
            "",
            json.dumps({"prompt": "2+2?", "answer": "4", "id": "q2", "level": 1}),
        ],
    )
    first, second = load_jsonl(path)
    assert first == Example("1+1?", "2", "<reasoning>\n1+1=2", "rl-1", {})
    assert second.trace is None and second.id == "q2" and second.meta == {"level": 1}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ('["a list"]', "JSON object"),
        ('{"prompt": "x"}', "'answer'"),
        ('{"prompt": "x", "answer": "1", "trace": 3}', "'trace'"),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps({"prompt": "a", "answer": "1"}), line])
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2: .*{re.escape(message)}"):
        load_jsonl(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="gsm8k"):
        load_gsm8k_train(tmp_path)


def test_sft_jsonl(tmp_path):
    path = write_lines(tmp_path / "sft.jsonl", [json.dumps({"prompt": "q", "completion": "c"})])
    (row,) = load_sft_jsonl(path)
    assert (row.prompt, row.completion, row.id) == ("q", "c", "sft-1")
    write_lines(path, [json.dumps({"prompt": "q"})])
    with pytest.raises(ValueError, match="sft.jsonl:1: .*'completion'"):
        load_sft_jsonl(path)


METAMATH = [
    {"query": "Q1", "type": "GSM_AnsAug", "response": "She has 3 + 4 = 7.\n#### 7\nThe answer is: 7"},
    {"query": "Q1", "type": "GSM_AnsAug", "response": "duplicate\nThe answer is: 8"},
    {"query": "Q2", "type": "MATH_AnsAug", "response": "So $x = \\boxed{\\frac{1}{2}}$.\nThe answer is: \\frac{1}{2}"},
    {"query": "Q3", "type": "GSM_SV", "response": "x\nThe answer is: 3"},
]


def test_metamath(tmp_path):
    path = tmp_path / "mm.json"
    path.write_text(json.dumps(METAMATH))
    first, second = load_metamath(path, types=["GSM_AnsAug", "MATH_AnsAug"])
    assert (first.prompt, first.answer, first.meta) == ("Q1", "7", {"type": "GSM_AnsAug"})
    assert first.trace == ("<reasoning>\nShe has 3 + 4 = 7.\n</reasoning>\n<answer>\n\\boxed{7}\n</answer>")
    assert second.answer == "\\frac{1}{2}" and second.trace.count("\\boxed") == 1
    assert len(load_metamath(path)) == 3  # all types, Q1 deduplicated
    verbatim = load_metamath(path, verbatim=True)[0]
    assert verbatim.trace == "<reasoning>\n" + METAMATH[0]["response"]
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="JSON list"):
        load_metamath(path)


def test_load_examples_shuffle_limit_and_env(shared_data, monkeypatch):
    monkeypatch.setenv("IGPO_DATA_DIR", str(shared_data))
    a = load_examples(DataConfig(source="gsm8k", limit=5, shuffle_seed=1))
    b = load_examples(DataConfig(source="gsm8k", limit=5, shuffle_seed=1))
    c = load_examples(DataConfig(source="gsm8k", limit=5, shuffle_seed=None))
    assert [e.id for e in a] == [e.id for e in b] != [e.id for e in c]
    assert c[0].answer == "72"


def test_sources_registry_and_errors(tmp_path, monkeypatch):
    fake = [Example("1+2?", "3", None, f"arith-{i}") for i in range(3)]
    monkeypatch.setitem(SOURCES, "arith-test", lambda cfg: list(fake))
    assert len(load_examples(DataConfig(source="arith-test", limit=2))) == 2
    with pytest.raises(ValueError, match="already registered"):
        register_source("gsm8k", lambda cfg: [])
    with pytest.raises(ValueError, match="unknown data source 'nope'"):
        load_examples(DataConfig(source="nope"))
    with pytest.raises(ValueError, match="needs path"):
        load_examples(DataConfig(source="jsonl"))
    monkeypatch.delenv("IGPO_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match="IGPO_DATA_DIR"):
        load_examples(DataConfig(source="gsm8k"))
    with pytest.raises(ValueError, match="limit"):
        DataConfig(limit=0)


def test_max_trace_tokens_filter(tmp_path):
    from igpo.models.tokenizer import build_word_tokenizer

    path = write_lines(
        tmp_path / "rl.jsonl",
        [
            json.dumps({"prompt": "a", "answer": "1", "trace": "one two"}),
            json.dumps({"prompt": "b", "answer": "2", "trace": "one two three four"}),
            json.dumps({"prompt": "c", "answer": "3"}),
        ],
    )
    tok = build_word_tokenizer(["one", "two", "three", "four"])
    cfg = DataConfig(source="jsonl", path=str(path), max_trace_tokens=3, shuffle_seed=None)
    assert [e.prompt for e in load_examples(cfg, tok)] == ["a", "c"]
    with pytest.raises(ValueError, match="tokenizer"):
        load_examples(cfg)


def test_render_prompt_ends_with_prefill():
    from igpo.models.tokenizer import build_word_tokenizer

    tok = build_word_tokenizer(["how", "many"])
    text = render_prompt(tok, " how many? ")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n<reasoning>")
    assert f"{D1_SYSTEM_PROMPT}\n\nhow many?<|eot_id|>" in text
    assert render_prompt(tok, "q", system="", prefill="").endswith(
        "\n\nq<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(tok, "q")


def test_data_module_imports_no_harness_or_lm_eval():
    code = (
        "import sys, igpo.data, igpo.rewards, igpo.hints; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('harness', 'lm_eval')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
