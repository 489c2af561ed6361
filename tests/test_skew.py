"""Results cannot be skewed silently (issue 29): what a user gives either counts as what it is or
is refused. Labels cannot forge table rows, duplicated or foreign sample rows are refused, a
non-finite gold answer is refused, an edited protocol is marked, an adapter runs on the base it
records, and the device a run used is recorded. Bad input that ends in one error line is in
tests/test_bad_input.py's table; these are the checks of what is written instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.eval.records import ModelInfo, ProtocolInfo, RunRecord, TaskResult
from harness.eval.results import write_results
from harness.markdown import cells

FORGED = "mine\n| forged | igpo | reported | 99.9 [99.0, 100.0] | 99.9 | paper |\n<script>x</script>"


def make_run(root: Path, name: str, label: str | None = None, protocol: ProtocolInfo | None = None) -> Path:
    task = TaskResult(
        task="igpo_gsm8k",
        metric="exact_match",
        accuracy=0.5,
        n_items=2,
        samples_per_item=1,
        ci95=(0.1, 0.9),
        ci_kind="wilson",
        stderr=0.3,
        seeds=[0],
    )
    record = RunRecord(
        tasks={"igpo_gsm8k": task},
        model=ModelInfo(name_or_path="testbed"),
        protocol=protocol or ProtocolInfo(name="igpo"),
        run_name=name,
        label=label,
        label_given=label is not None,
    )
    rows = [{"task": "igpo_gsm8k", "doc_id": d, "seed": 0, "repeat": 0, "gold": "1", "correct": d == 0} for d in (0, 1)]
    write_results(root / name, record, rows)
    return root / name


@pytest.mark.parametrize("fmt", ["markdown", "github"])
def test_label_cannot_forge_a_leaderboard_row(tmp_path, fmt):
    from harness.eval.leaderboard import write_leaderboard

    text = write_leaderboard([make_run(tmp_path, "r", label=FORGED)], None, fmt, None)
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) == 3, text  # header, rule, the one run: no forged row
    header, row = cells(lines[0]), cells(lines[2])
    assert len(row) == len(header) and row[header.index("result")] == "measured"
    assert row[0].startswith("mine |") and "forged" in row[0]  # the label is kept, on one line
    assert "<script>" not in text and "&lt;script>" in text  # no tag a renderer would run


def test_label_in_latex_and_csv_stays_in_its_row(tmp_path):
    import csv
    import io

    from harness.eval.leaderboard import write_leaderboard

    run = make_run(tmp_path, "r", label=FORGED)
    latex = write_leaderboard([run], None, "latex", None)
    body = latex.split("\\midrule")[1].split("\\bottomrule")[0]
    assert body.count("\\\\") == 1 and len(body.strip().splitlines()) == 1, body
    rows = list(csv.reader(io.StringIO(write_leaderboard([run], None, "csv", None))))
    assert len(rows) == 2 and rows[1][0] == FORGED  # csv quotes the label whole


def test_markdown_table_escapes_every_cell():
    from harness.markdown import table

    text = table(["a|b", "c"], [["x\r\ny", "1 | 2"], ["<b>bold</b>", "<0.0001"]])
    lines = text.splitlines()
    assert len(lines) == 4
    assert [cells(line) for line in lines[2:]] == [["x y", "1 | 2"], ["&lt;b>bold&lt;/b>", "<0.0001"]]
    assert cells(lines[0]) == ["a|b", "c"]


# --------------------------------------------------------------------------- samples.jsonl as a set

BASELINE = Path(__file__).resolve().parents[1] / "results" / "baselines" / "testbed-arith"


def _baseline_copy(dest: Path, change) -> Path:
    """The committed baseline run with its samples.jsonl lines passed through `change`."""
    import shutil

    shutil.copytree(BASELINE, dest)
    lines = (dest / "samples.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (dest / "samples.jsonl").write_text("".join(change(lines)), encoding="utf-8")
    return dest


def _retask(line: str, task: str) -> str:
    import json

    return json.dumps({**json.loads(line), "task": task}) + "\n"


def _reseed(line: str, seed: int) -> str:
    import json

    return json.dumps({**json.loads(line), "seed": seed}) + "\n"


@pytest.mark.parametrize(
    "change, needle",
    [
        (lambda lines: [x for line in lines for x in (line, line)], "line 2 repeats line 1"),
        (lambda lines: lines + lines, f"line {60 + 1} repeats line 1"),
        (lambda lines: [*lines, _retask(lines[0], "igpo_gsm8k")], "task 'igpo_gsm8k' is not one of the run's tasks"),
        (lambda lines: [*lines, _reseed(lines[0], 7)], "seed 7 is not one of task igpo_arith's seeds"),
    ],
    ids=["every-row-twice", "file-appended-to-itself", "foreign-task", "foreign-seed"],
)
def test_duplicated_or_foreign_sample_rows_refused(tmp_path, change, needle):
    from test_bad_input import assert_one_error, igpo

    bad = _baseline_copy(tmp_path / "bad", change)
    for cmd in (["check", bad, "--baseline", BASELINE], ["check", BASELINE, "--baseline", bad]):
        assert_one_error(igpo(*cmd), needle)
    html = tmp_path / "r.html"
    result = igpo("report", bad, "--out", html)
    assert_one_error(result, needle)
    assert f"{bad / 'samples.jsonl'}: line " in result.output and not html.exists()


def test_extra_item_and_extra_sample_refused(tmp_path):
    import json

    from harness.eval.results import ResultsError, load_samples

    lines = (BASELINE / "samples.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    new_item = json.dumps({**json.loads(lines[0]), "doc_id": 10_000}) + "\n"
    with pytest.raises(ResultsError, match=r"line 61: doc_id 10000 would be item 61 of task igpo_arith, which has 60"):
        load_samples(_baseline_copy(tmp_path / "item", lambda ls: [*ls, new_item]))
    no_keys = [
        json.dumps({k: v for k, v in json.loads(x).items() if k not in ("seed", "repeat")}) + "\n" for x in lines
    ]
    with pytest.raises(ResultsError, match=r"line 61: sample 2 of doc_id 0 .* 1 per item"):
        load_samples(_baseline_copy(tmp_path / "twice", lambda ls: no_keys + no_keys[:1]))
    assert len(load_samples(BASELINE)) == 60  # the run as written loads


# --------------------------------------------------------------------------- gold answers


@pytest.mark.parametrize("gold", [float("nan"), float("inf"), "nan", " -inf ", "Infinity"])
def test_training_data_refuses_non_finite_gold(tmp_path, gold):
    import json

    from igpo.data import load_jsonl
    from igpo.errors import BadFile

    path = tmp_path / "rows.jsonl"
    rows = [{"prompt": "1 + 1 ?", "answer": "2"}, {"prompt": "0 / 0 ?", "answer": gold}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadFile, match=rf"{path}:2: .*not a finite number"):
        load_jsonl(path)
    rows[1]["answer"] = "\\infty"  # an answer that reads as infinity in LaTeX is a gold like any
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [e.answer for e in load_jsonl(path)] == ["2", "\\infty"]


def test_hub_row_with_a_nan_gold_is_refused_by_its_problem():
    from igpo.errors import BadFile
    from tasks.utils import gold_amc, gold_math

    assert gold_amc({"problem": "p", "answer": 142.0}) == "142"
    with pytest.raises(BadFile, match="problem 'What is 0/0\\?'.*'nan'"):
        gold_amc({"problem": "What is 0/0?", "answer": float("nan")})
    with pytest.raises(BadFile, match="not a finite number"):
        gold_math({"problem": "x", "answer": "inf"})


# --------------------------------------------------------------------------- issue 34 item 5


def test_protocol_lengths_that_decode_alike_run_once(tmp_path):
    """d1's 128 / 256 / 512 all decode igpo_arith on its fixed 48-token canvas: one column
    `igpo_arith`, decoded once, not three equal columns averaged; gsm8k keeps one per length."""
    from harness.eval.protocols import load_protocol
    from harness.eval.run import EvalRequest, plan
    from igpo.decoding.config import DecodeOverrides

    d1 = load_protocol("d1")
    [(suffix, cfg, repeats)] = d1.task_variants("igpo_arith")
    assert (suffix, cfg.gen_length, cfg.steps, repeats) == ("", 48, 24, 1)
    assert [s for s, _, _ in d1.task_variants("igpo_gsm8k")] == ["@128", "@256", "@512"]
    assert [s for s, _, _ in d1.task_variants("igpo_arith", DecodeOverrides(temperature=0.5))] == [""]
    p = plan(EvalRequest(model="testbed", tasks=["arith", "gsm8k"], protocol="d1", out=tmp_path))
    assert sorted(p.settings) == [
        ("", "igpo_arith"),
        ("@128", "igpo_gsm8k"),
        ("@256", "igpo_gsm8k"),
        ("@512", "igpo_gsm8k"),
    ]
    assert p.batches() == [
        ("@128", [("igpo_arith", ""), ("igpo_gsm8k", "@128")]),
        ("@256", [("igpo_gsm8k", "@256")]),
        ("@512", [("igpo_gsm8k", "@512")]),
    ]


def test_d1_on_arith_records_one_column(tmp_path):
    from test_bad_input import igpo

    from harness.eval.results import load_results

    out = tmp_path / "runs"
    result = igpo("eval", "--tasks", "arith", "--protocol", "d1", "--limit", 2, "--no-leaderboard", "--out", out)
    assert result.exit_code == 0, result.output
    record = load_results(out / "testbed-d1")
    assert list(record.tasks) == ["igpo_arith"] and record.tasks["igpo_arith"].decoding["gen_length"] == 48
