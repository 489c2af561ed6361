"""Acceptance: `igpo eval` under `accelerate launch` with 2 CPU processes gives, sample for
sample, the responses of a single-process run (greedy GSM8K and sampled AMC avg@16).

Why `--multi_gpu` and not `--cpu`: accelerate 1.x's `--cpu --num_processes 2` goes through its
simple launcher, which starts ONE process unless an MPI hostfile is given; `--multi_gpu` uses
torchrun, which really starts two, and the `dllm` model then builds a CPU (gloo) Accelerator.
An odd `--limit` leaves the ranks uneven, so lm-eval's rank padding is exercised too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA, save_tiny_checkpoint

PROCESSES = 2
LIMIT = 5
"""Odd on purpose: rank 0 gets 3 documents, rank 1 gets 2 and is padded by lm-eval."""
TIMEOUT_S = 300
RUN_NAME = "tiny-dllm-igpo"
EVAL_ARGS = [
    "--tasks",
    "gsm8k,amc",
    "--limit",
    str(LIMIT),
    "--gen-length",
    "32",
    "--block-length",
    "16",
    "--steps",
    "8",
    "--seeds",
    "0",
    "--batch-size",
    "4",
    "--device",
    "cpu",
    "--no-leaderboard",
]
"""GSM8K is greedy; AMC samples at the protocol's T=0.1 with 16 repeats (per-request seeding)."""
AMC_REPEATS = 16


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accelerate() -> list[str]:
    script = Path(sys.executable).parent / "accelerate"
    return [str(script), "launch"] if script.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def _responses(run: Path) -> dict[tuple, str]:
    rows = [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    keyed = {(r["task"], r["doc_id"], r["seed"], r["repeat"]): r["response"] for r in rows}
    assert len(keyed) == len(rows), "duplicate (task, doc_id, seed, repeat) rows"
    return keyed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").is_file():
        pytest.skip("shared/data is not beside this checkout")
    root = tmp_path_factory.mktemp("dp")
    model = save_tiny_checkpoint(root / "tiny-dllm")
    common = ["eval", "--model", str(model), "--data-dir", str(SHARED_DATA), *EVAL_ARGS]
    single, parallel = root / "single", root / "parallel"
    _run([sys.executable, "-m", "harness.cli", *common, "--out", str(single)], root)
    _run(
        [
            *_accelerate(),
            "--multi_gpu",
            "--num_processes",
            str(PROCESSES),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "harness.cli",
            *common,
            "--out",
            str(parallel),
        ],
        root,
    )
    return single / RUN_NAME, parallel / RUN_NAME


def test_both_ranks_did_work(runs):
    _, parallel = runs
    rank0, rank1 = parallel / "responses.jsonl", parallel / "responses.rank1.jsonl"
    assert rank0.is_file() and rank1.is_file()
    lines0 = rank0.read_text(encoding="utf-8").splitlines()
    lines1 = rank1.read_text(encoding="utf-8").splitlines()
    assert lines0 and lines1
    # Each response was decoded exactly once, by one rank: no duplicates, no padding samples.
    keys = [json.loads(line)["key"] for line in lines0 + lines1]
    assert len(keys) == len(set(keys)) == LIMIT * (1 + AMC_REPEATS)
    prov = json.loads((parallel / "results.json").read_text(encoding="utf-8"))["provenance"]
    assert prov["world_size"] == PROCESSES and prov["requests_decoded"] == len(keys)


def test_same_responses_as_one_process(runs):
    single, parallel = runs
    one, many = _responses(single), _responses(parallel)
    assert len(one) == LIMIT * (1 + AMC_REPEATS)
    assert one.keys() == many.keys()
    differing = [k for k in one if one[k] != many[k]]
    assert not differing, f"{len(differing)} responses differ, e.g. {differing[:3]}"
    amc = [one[k] for k in one if k[0] == "igpo_amc"]
    assert len(set(amc)) > 1, "sampling produced identical AMC repeats: seeding not exercised"


def test_same_scores_as_one_process(runs):
    single, parallel = runs
    tasks = [json.loads((run / "results.json").read_text(encoding="utf-8"))["tasks"] for run in runs]
    for key in ("igpo_gsm8k", "igpo_amc"):
        a, b = tasks[0][key], tasks[1][key]
        assert (a["accuracy"], a["n_items"], a["samples_per_item"]) == (
            b["accuracy"],
            b["n_items"],
            b["samples_per_item"],
        )
        assert a["metrics"] == b["metrics"]


def test_padding_copies_reuse_earlier_responses():
    """lm-eval pads a rank with `repeats` more copies of its last request object per missing doc."""
    from lm_eval.api.instance import Instance

    from harness.lmeval.model import padding_copies

    def request(idx: int, repeats: int) -> Instance:
        return Instance(
            request_type="generate_until", doc={}, arguments=("q", {}), idx=idx, metadata=("t", idx, repeats)
        )

    single, sampled = request(0, 1), request(1, 3)
    requests = [single, *[sampled] * 3, *[sampled] * 6]  # two documents' worth of padding
    assert padding_copies(requests) == {4: 1, 5: 2, 6: 3, 7: 1, 8: 2, 9: 3}
    assert padding_copies([single, sampled, sampled, sampled]) == {}


VOLATILE = ("timed_out",)
"""Sample fields that may differ between runs for reasons outside the model (a scoring timeout)."""


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def test_samples_file_equals_one_process_and_rows_are_complete(runs):
    """Every rank's records are gathered: samples.jsonl holds the same rows in the same order as
    one process, each with its decoding settings, token count and length flag."""
    one, many = (_rows(run) for run in runs)
    strip = [[{k: v for k, v in r.items() if k not in VOLATILE} for r in rows] for rows in (one, many)]
    assert strip[0] == strip[1]
    for row in many:
        assert row.get("decoding") and isinstance(row.get("tokens"), int) and isinstance(row.get("hit_length"), bool)
    a, b = (json.loads((run / "results.json").read_text()) for run in runs)
    assert a.get("length_conflicts") == b.get("length_conflicts")
