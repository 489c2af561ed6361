"""No command deletes or changes a file it did not create (igpo.outputs).

Every command that writes is pointed, with --out / --overwrite, at one of its own inputs, at the
working directory (a temporary folder full of the user's files) and at another run's folder: each
ends with exit 2 and one `error:` line naming the path, and the checksum of every file that was
there before (the work folder, the runs, the embedded models) is unchanged. Then the guards that
take a run: a second writer on one folder (the lock names its pid), eval runs that would replace
one another, and --overwrite of a folder igpo made (only what it wrote goes).

Then the table of output files (igpo.owned): every output flag pointed at a user's file, a file of
a model folder, a README tracked by git and a symbolic link is refused (exit 2, one line naming the
file and --overwrite, every checksum unchanged); its own earlier output is replaced (exit 0); with
--overwrite the user's file, or the link itself (never its target), is replaced. An SFT run is
never replaced or continued by `igpo train`, and a start that fails leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
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
    (root / "bare").mkdir()  # a run-shaped folder igpo did not make
    (root / "bare" / "results.json").write_text("{}\n")
    (root / "boards").mkdir()  # a runs folder holding the user's own leaderboard.md
    (root / "boards" / "leaderboard.md").write_text("my own table\n")
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
        ("train-overwrite-sft-run", [*train, "--out", "{train}", "--overwrite"], "another kind of run (sft"),
        ("train-resume-sft-run", [*train, "--out", "{train}", "--resume"], "another kind of run (sft"),
        ("report-default-out-user-file", ["report", "{run}"], "report.html"),
        # eval: the runs folder (where leaderboard.md goes) and the run folder
        ("eval-out-cwd", ["eval", "--limit", "1", "--out", "."], "working directory"),
        ("eval-out-model", ["eval", "--model", "{sign}", "--limit", "1", "--out", "{sign}"], "input"),
        ("eval-out-train-run", ["eval", "--limit", "1", "--out", "{train}"], "{train}"),
        ("eval-out-run", ["eval", "--limit", "1", "--out", "{run}"], "{run}"),
        ("eval-name-other-run", ["eval", "--limit", "2", "--out", "{evals}", "--name", "base"], "another run"),
        ("eval-name-user-folder", ["eval", "--limit", "1", "--out", "{root}", "--name", "mine"], "mine.txt"),
        ("eval-name-unmarked-run", ["eval", "--limit", "1", "--out", "{root}", "--name", "bare"], MARKER),
        ("eval-out-user-leaderboard", ["eval", "--limit", "1", "--out", "{root}/boards"], "leaderboard.md"),
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


# --------------------------------------------------------------------------- output files (igpo.owned)

BASELINE = Path(__file__).resolve().parents[1] / "results" / "baselines" / "testbed-arith"
EVAL = ["eval", "--tasks", "arith", "--limit", "1"]
CHECK = ["check", str(BASELINE), "--baseline", str(BASELINE), "--max-drop", "50"]
ABLATE = ["ablate", "--quick", "--aggregate-only"]


def _flags():
    """(id, args(out, scratch) for the output at `out`, the user file of a model folder it is
    pointed at, whether its own output is made in seconds)."""
    return [
        ("report-out", lambda o, t: ["report", BASELINE, "--out", o], "model.safetensors", True),
        ("leaderboard-out", lambda o, t: ["leaderboard", BASELINE, "--out", o], "tokenizer.json", True),
        ("eval-leaderboard", lambda o, t: [*EVAL, "--out", t / "ev", "--leaderboard", o], "config.json", True),
        ("eval-html", lambda o, t: [*EVAL, "--out", t / "ev", "--no-leaderboard", "--html", o], "config.json", False),
        ("check-summary", lambda o, t: [*CHECK, "--summary", o], "tokenizer.json", True),
        ("check-json", lambda o, t: [*CHECK, "--json", o], "config.json", True),
        ("check-html", lambda o, t: [*CHECK, "--html", o], "model.safetensors", False),
        ("bench-ops-out", lambda o, t: ["bench", "ops", "--out", o], "config.json", True),
        ("bench-decode-out", lambda o, t: ["bench", "decode", "--repeats", "1", "--out", o], "config.json", False),
        ("bench-eval-out", lambda o, t: ["bench", "eval", "--limit", "1", "--out", o], "config.json", False),
        ("bench-train-out", lambda o, t: ["bench", "train", "--steps", "1", "--out", o], "config.json", False),
        ("bench-gpu-out", lambda o, t: ["bench", "gpu", "--shape", "tiny", "--out", o], "config.json", False),
        ("ablate-results", lambda o, t: [*ABLATE, "--out", t / "g", "--results", o.parent], "claims.md", True),
        (
            "ablate-html",
            lambda o, t: [*ABLATE, "--out", t / "g", "--results", t / "r", "--html", o],
            "config.json",
            False,
        ),
        ("rewrite-out", lambda o, t: ["rewrite-traces", t / "rows.jsonl", "--out", o, *REWRITE], "config.json", False),
    ]


FLAGS = _flags()
PLACES = ("user", "model", "readme", "link")


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A user's own files: a work folder, a tiny model folder, a git repository with a tracked
    README, a symbolic link to a user's file."""
    from conftest import save_tiny_checkpoint

    root = tmp_path_factory.mktemp("owned")
    work, repo, links = root / "work", root / "repo", root / "links"
    for folder in (work, repo, links):
        folder.mkdir()
    (work / "notes.md").write_text("my notes\n")
    (work / "claims.md").write_text("my claims\n")
    model = save_tiny_checkpoint(root / "model")
    (model / "claims.md").write_text("the model card's claims\n")
    (repo / "README.md").write_text("# my project\n")
    (repo / "claims.md").write_text("tracked claims\n")
    git = ["git", "-C", str(repo), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "mine"], check=True)
    (links / "claims.md").symlink_to(work / "claims.md")
    (links / "out.md").symlink_to(work / "notes.md")
    return {"root": root, "work": work, "model": model, "repo": repo, "links": links}


def _target(places, place: str, model_file: str) -> Path:
    """The existing file an output flag is pointed at (ablate --results: the folder holding claims.md)."""
    claims = model_file == "claims.md"
    name = {
        "user": "claims.md" if claims else "notes.md",
        "model": model_file,
        "readme": "claims.md" if claims else "README.md",
    }
    name["link"] = "claims.md" if claims else "out.md"
    return places[{"user": "work", "model": "model", "readme": "repo", "link": "links"}[place]] / name[place]


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("args, model_file", [f[1:3] for f in FLAGS], ids=[f[0] for f in FLAGS])
def test_output_flags_never_replace_a_file_igpo_did_not_write(places, tmp_path, args, model_file, place):
    target = _target(places, place, model_file)
    before = checksums(places["root"])
    result = igpo(*args(target, tmp_path))
    assert_one_error(result, str(target) if model_file != "claims.md" else "claims.md")
    assert "--overwrite" in result.output
    assert checksums(places["root"]) == before
    assert not list(tmp_path.iterdir())  # nothing else written either
    if place == "link":
        assert target.is_symlink()


OWN = [f for f in FLAGS if f[3]]


@pytest.mark.parametrize("args, model_file", [f[1:3] for f in OWN], ids=[f[0] for f in OWN])
def test_its_own_earlier_output_is_replaced_and_overwrite_replaces_the_users(tmp_path, args, model_file):
    from igpo.owned import read_manifest, sha256

    name = "quick.md" if model_file == "claims.md" else "out.md"  # ablate --results: the grid's report
    out = tmp_path / "out" / name
    for _ in range(2):  # written, then replaced as igpo's own
        done = igpo(*args(out, tmp_path))
        assert done.exit_code == 0, done.output
        assert read_manifest(out.parent)[name] == sha256(out)
    theirs = tmp_path / "theirs.txt"
    theirs.write_text("theirs\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "links").mkdir()
    mine, link = tmp_path / "mine" / name, tmp_path / "links" / name
    mine.write_text("mine\n")
    link.symlink_to(theirs)
    for target in (mine, link):  # --overwrite: the user's file, or the link itself, is replaced
        done = igpo(*args(target, tmp_path), "--overwrite")
        assert done.exit_code == 0, done.output
        assert not target.is_symlink() and target.read_text() not in ("mine\n", "theirs\n")
        assert read_manifest(target.parent)[name] == sha256(target)
    assert theirs.read_text() == "theirs\n"


def test_eval_never_rewrites_the_users_leaderboard_in_its_runs_folder(tmp_path):
    from igpo.owned import read_manifest

    runs = tmp_path / "runs"
    runs.mkdir()
    board = runs / "leaderboard.md"
    board.write_text("my own table\n")
    assert_one_error(igpo(*EVAL, "--out", runs), f"{board}: exists and was not written by igpo")
    assert board.read_text() == "my own table\n" and sorted(runs.iterdir()) == [board]
    done = igpo(*EVAL, "--out", runs, "--overwrite")
    assert done.exit_code == 0, done.output
    assert "my own table" not in board.read_text() and "leaderboard.md" in read_manifest(runs)
    again = igpo(*EVAL, "--out", runs)  # its own table now: refreshed without a flag
    assert again.exit_code == 0, again.output


def test_rewrite_traces_appends_to_its_own_and_replaces_a_users_with_overwrite(tmp_path):
    from harness.rewrite.fake_server import FakeRewriter, cli_args, write_rows

    data = write_rows(tmp_path / "rows.jsonl", 2, [""])
    out = tmp_path / "kept.jsonl"
    out.write_text('{"id": "x", "prompt": "my own SFT row"}\n')
    with FakeRewriter() as server:
        args = cli_args(data, out, server.base_url, timeout_s=5)
        before = checksums(tmp_path)
        assert_one_error(igpo(*args), "not written by igpo")
        assert checksums(tmp_path) == before
        done = igpo(*args, "--overwrite")
        assert done.exit_code == 0, done.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 2 and all("source_line" in row for row in rows)
        kept = out.read_text()
        again = igpo(*args)  # its own rows: a rerun appends (here: nothing left to do)
        assert again.exit_code == 0, again.output
        assert out.read_text() == kept


@pytest.mark.parametrize("made", [True, False], ids=["absent", "empty"])
def test_a_failed_start_leaves_nothing_behind(tmp_path, made):
    out = tmp_path / "run"
    if not made:
        out.mkdir()
    bad = ["max_steps=1", "data.max_completion_tokens=1"]  # refused after the folder was claimed
    assert_one_error(igpo("sft", "--recipe", "sft_tiny", "--out", out, *bad), "max_completion_tokens")
    assert out.exists() is not made and (made or not list(out.iterdir()))
