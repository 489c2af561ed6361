"""No command deletes or changes a file it did not create (igpo.outputs).

Every command that writes is pointed, with --out / --overwrite, at one of its own inputs, at the
working directory (a temporary folder full of the user's files) and at another run's folder: each
ends with exit 2 and one `error:` line naming the path, and the checksum of every file that was
there before (the work folder, the runs, the embedded models) is unchanged. Then the guards that
take a run: a second writer on one folder (the lock names its pid), eval runs that would replace
one another, and --overwrite of a folder igpo made (only what it wrote goes).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

import pytest
from test_bad_input import assert_one_error, igpo

from igpo.models.loading import EMBEDDED_MODELS
from igpo.outputs import LOCK, MARKER

TESTBED = EMBEDDED_MODELS["testbed"]
TESTBED_SIGN = EMBEDDED_MODELS["testbed-sign"]
REWRITE = ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--question-field", "question"]
REWRITE += ["--trace-field", "trace", "--answer-field", "answer"]


def checksums(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (a folder's listing included through its paths)."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A working directory full of the user's files, one training run and one eval run."""
    root = tmp_path_factory.mktemp("dataloss")
    work = root / "work"
    (work / "data").mkdir(parents=True)
    (work / "notes.txt").write_text("my notes\n")
    (work / "leaderboard.md").write_text("my own table\n")
    (work / "report.html").write_text("<p>mine</p>\n")
    rows = [{"question": "1+1?", "trace": "1+1=2", "answer": "2"}]
    (work / "data" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "prompt.txt").write_text("{question} {trace} {answer}\n")
    (root / "mine").mkdir()
    (root / "mine" / "mine.txt").write_text("not a run\n")
    train = root / "runs" / "train"
    done = igpo("sft", "--recipe", "sft_tiny", "--out", train, "max_steps=1", "log.progress=false")
    assert done.exit_code == 0, done.output
    evals = root / "runs" / "eval"
    done = igpo("eval", "--tasks", "arith", "--limit", "1", "--out", evals, "--name", "base", "--no-leaderboard")
    assert done.exit_code == 0, done.output
    return {"root": root, "work": work, "train": train, "evals": evals, "run": evals / "base"}


def refused(world, args: list, needle: str) -> None:
    """The command, run in the work folder, ends in one error naming `needle` and changes nothing."""
    roots = (world["root"], TESTBED, TESTBED_SIGN)
    before = checksums(*roots)
    result = igpo(*args, cwd=world["work"])
    assert_one_error(result, needle)
    assert checksums(*roots) == before


def _cases():
    """(id, args with {work}/{train}/{run}/{evals}/{testbed}/{sign} placeholders, needle)."""
    sft = ["sft", "--recipe", "sft_tiny", "max_steps=1"]
    train = ["train", "--recipe", "grpo_tiny", "max_steps=1"]
    bench = {
        "decode": ["bench", "decode", "--repeats", "1"],
        "eval": ["bench", "eval", "--limit", "1"],
        "train": ["bench", "train", "--steps", "1"],
        "ops": ["bench", "ops"],
        "gpu": ["bench", "gpu", "--shape", "tiny"],
    }
    cases = [
        # sft / train: --overwrite of an input, the working directory, another run, user files
        ("sft-out-model", [*sft, "--out", "{testbed}", "--overwrite"], "input"),
        ("sft-out-inside-model", [*sft, "--out", "{testbed}/x"], "inside the input"),
        ("sft-out-model-path", [*sft, "model.path={work}/data", "--out", "{work}/data", "--overwrite"], "input"),
        ("sft-out-cwd", [*sft, "--out", ".", "--overwrite"], "working directory"),
        ("sft-out-home", [*sft, "--out", "{home}", "--overwrite"], "home directory"),
        ("sft-out-user-folder", [*sft, "--out", "{work}/data", "--overwrite"], "rows.jsonl"),
        ("sft-out-eval-run", [*sft, "--out", "{run}", "--overwrite"], "{run}"),
        ("sft-out-train-run", [*sft, "--out", "{train}"], "{train}"),
        ("sft-out-runs-root", [*sft, "--out", "{evals}", "--overwrite"], "{evals}"),
        ("train-out-model", [*train, "--out", "{sign}", "--overwrite"], "input"),
        ("train-out-cwd", [*train, "--out", ".", "--overwrite"], "working directory"),
        ("train-out-eval-run", [*train, "--out", "{run}", "--overwrite"], "{run}"),
        ("train-resume-eval-run", [*train, "--out", "{run}", "--resume"], "{run}"),
        # eval: the runs folder (where leaderboard.md goes) and the run folder
        ("eval-out-cwd", ["eval", "--limit", "1", "--out", "."], "working directory"),
        ("eval-out-model", ["eval", "--model", "{sign}", "--limit", "1", "--out", "{sign}"], "input"),
        ("eval-out-train-run", ["eval", "--limit", "1", "--out", "{train}"], "{train}"),
        ("eval-out-run", ["eval", "--limit", "1", "--out", "{run}"], "{run}"),
        ("eval-name-other-run", ["eval", "--limit", "2", "--out", "{evals}", "--name", "base"], "another run"),
        ("eval-name-user-folder", ["eval", "--limit", "1", "--out", "{root}", "--name", "mine"], "mine.txt"),
        ("eval-html-input", ["eval", "--model", "{sign}", "--limit", "1", "--html", "{sign}/config.json"], "input"),
        ("eval-leaderboard-run-file", ["eval", "--limit", "1", "--leaderboard", "{run}/results.json"], "results.json"),
        # ablate: its run folder and report folder
        ("ablate-out-cwd", ["ablate", "--quick", "--out", "."], "working directory"),
        ("ablate-out-train-run", ["ablate", "--quick", "--out", "{train}"], "{train}"),
        ("ablate-out-in-model", ["ablate", "--quick", "--out", "{sign}/grid"], "input"),
        ("ablate-results-cwd", ["ablate", "--quick", "--out", "{work}/g", "--results", "."], "working directory"),
        ("ablate-results-run", ["ablate", "--quick", "--out", "{work}/g", "--results", "{run}"], "{run}"),
        # rewrite-traces: the input, the working directory, another run's file
        ("rewrite-out-input", ["rewrite-traces", "data/rows.jsonl", "--out", "data/rows.jsonl", *REWRITE], "input"),
        ("rewrite-out-cwd", ["rewrite-traces", "data/rows.jsonl", "--out", ".", *REWRITE], "folder"),
        (
            "rewrite-out-run-file",
            ["rewrite-traces", "data/rows.jsonl", "--out", "{run}/samples.jsonl", *REWRITE],
            "run",
        ),
        (
            "rewrite-out-prompt",
            ["rewrite-traces", "data/rows.jsonl", "--out", "prompt.txt", "--prompt", "prompt.txt", *REWRITE],
            "input",
        ),
        ("rewrite-out-user-file", ["rewrite-traces", "data/rows.jsonl", "--out", "notes.txt", *REWRITE], "notes.txt"),
        # check: its report files and the candidate's run folder
        ("check-json-input", ["check", "{run}", "--baseline", "{run}", "--json", "{run}/results.json"], "input"),
        ("check-summary-cwd", ["check", "{run}", "--baseline", "{run}", "--summary", "."], "folder"),
        ("check-out-cwd", ["check", "testbed", "--baseline", "{run}", "--out", "."], "working directory"),
        ("check-out-model", ["check", "{sign}", "--baseline", "{run}", "--out", "{sign}"], "input"),
        ("check-out-train-run", ["check", "testbed", "--baseline", "{run}", "--out", "{train}"], "{train}"),
        # report / leaderboard: a file of an input, the working directory, another run's file
        ("report-out-input", ["report", "{run}", "--out", "{run}/results.json"], "input"),
        ("report-out-cwd", ["report", "{run}", "--out", "."], "folder"),
        ("report-out-run-file", ["report", "{run}", "--out", "{train}/metrics.jsonl"], "run"),
        ("leaderboard-out-input", ["leaderboard", "{run}", "--out", "{run}/samples.jsonl"], "input"),
        ("leaderboard-out-cwd", ["leaderboard", "{run}", "--out", "."], "folder"),
        ("leaderboard-out-run-file", ["leaderboard", "{run}", "--out", "{train}/metrics.jsonl"], "run"),
    ]
    for name, args in bench.items():
        cases.append((f"bench-{name}-out-cwd", [*args, "--out", "."], "folder"))
        cases.append((f"bench-{name}-out-run-file", [*args, "--out", "{run}/results.json"], "run"))
    cases.append(
        ("bench-decode-out-model", ["bench", "decode", "--model", "{sign}", "--out", "{sign}/config.json"], "input")
    )
    return cases


CASES = _cases()


@pytest.mark.parametrize("args, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_outputs_never_touch_inputs_cwd_or_other_runs(world, args, needle):
    values = {k: str(world[k]) for k in ("root", "work", "train", "run", "evals")}
    values.update(testbed=str(TESTBED), sign=str(TESTBED_SIGN), home=str(Path.home()))
    refused(world, [a.format(**values) for a in args], needle.format(**values))


def test_every_writing_command_is_covered():
    """A command that takes --out without a case here would go unguarded."""
    covered = {c[1][0] if c[1][0] != "bench" else "bench " + c[1][1] for c in CASES}
    assert covered >= {"sft", "train", "eval", "ablate", "rewrite-traces", "check", "report", "leaderboard"}
    assert {f"bench {n}" for n in ("decode", "eval", "train", "ops", "gpu")} <= covered


def test_a_second_writer_is_refused_with_the_holders_pid(world, tmp_path):
    out = tmp_path / "run"
    done = igpo("sft", "--recipe", "sft_tiny", "--out", out, "max_steps=1", "log.progress=false")
    assert done.exit_code == 0, done.output
    before = checksums(out)
    with open(out / LOCK, "a+") as held:  # another process writing there
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("4242")
        held.flush()
        for extra in (["--overwrite"], ["--resume", "max_steps=2"]):
            assert_one_error(igpo("sft", "--recipe", "sft_tiny", "--out", out, "max_steps=1", *extra), "pid 4242")
        before[str(out / LOCK)] = hashlib.sha256(b"4242").hexdigest()
        assert checksums(out) == before
        run = tmp_path / "evals" / "r"
        run.mkdir(parents=True)
        with open(run / LOCK, "w") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.write(str(os.getpid()))
            lock.flush()
            result = igpo("eval", "--limit", "1", "--out", run.parent, "--name", "r", "--no-leaderboard")
            assert_one_error(result, f"pid {os.getpid()}")


def test_overwrite_clears_only_what_igpo_wrote(tmp_path):
    out = tmp_path / "run"
    args = ["sft", "--recipe", "sft_tiny", "--out", out, "max_steps=1", "log.progress=false"]
    assert igpo(*args).exit_code == 0
    assert (out / MARKER).is_file() and (out / "checkpoints").is_dir()
    done = igpo(*args, "--overwrite")
    assert done.exit_code == 0, done.output
    (out / "mine.txt").write_text("keep me")  # a file the user put there: --overwrite now refuses
    before = checksums(out)
    assert_one_error(igpo(*args, "--overwrite"), "mine.txt")
    assert checksums(out) == before
    bare = tmp_path / "bare"  # a training-shaped folder igpo did not mark: not deleted
    (bare / "checkpoints").mkdir(parents=True)
    (bare / "metrics.jsonl").write_text("{}\n")
    assert_one_error(igpo("sft", "--recipe", "sft_tiny", "--out", bare, "--overwrite", "max_steps=1"), MARKER)
    assert (bare / "metrics.jsonl").read_text() == "{}\n"


def test_eval_runs_do_not_replace_one_another(tmp_path):
    """`eval --tasks arith` then other settings under the same run name: refused, the first kept;
    the same command again resumes (its cache) and keeps its folder."""
    out = tmp_path / "runs"
    first = ["eval", "--tasks", "arith", "--limit", "1", "--out", out, "--no-leaderboard"]
    assert igpo(*first).exit_code == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    before = checksums(out)
    for other in (["--limit", "2"], ["--steps", "6"], ["--seeds", "3"]):
        assert_one_error(igpo(*first, *other), "another run")
        assert checksums(out) == before
    again = igpo(*first)
    assert again.exit_code == 0, again.output
    assert json.loads((run / MARKER).read_text())["kind"] == "eval"
