"""Evaluating a candidate model with the baseline's protocol, seeds, limit and decoding; baseline updates."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.check.common import (
    DEFAULT_CHECK_OUT,
    CheckError,
)
from harness.check.compare import (
    _shown,
)
from harness.errors import UserError
from harness.eval.records import UNKNOWN, RunRecord
from harness.eval.results import (
    RESULTS_FILE,
    SAMPLES_FILE,
    ResultsError,
    load_results,
    load_samples,
    results_path,
)
from igpo.atomic import atomic_write_bytes
from igpo.decoding import DecodeOverrides
from igpo.decoding.config import OFF
from igpo.models.adapter import ADAPTER_CONFIG
from igpo.progress import say

# --------------------------------------------------------------------------- candidate model


@dataclass
class CandidateModel:
    """How to evaluate a candidate that is a model rather than a run."""

    out: Path | None = None
    """Run folder for the candidate (default runs/check/<name>)."""
    base_model: str | None = None
    """Base model under an adapter candidate (default: the checkpoint's or the baseline's)."""
    protocol: str | None = None
    """The baseline's protocol YAML when it is not built in (its file hash is checked)."""
    data_dir: Path | None = None
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False


def is_run(candidate: str | Path) -> bool:
    """A run folder (results.json or samples.jsonl inside) or a .json file, not a model."""
    path = Path(candidate)
    if path.is_dir():
        return (path / RESULTS_FILE).exists() or (path / SAMPLES_FILE).exists()
    return path.suffix == ".json"


def looks_like_model(candidate: str) -> bool:
    """An existing folder, a Hub id (owner/name) or a bare name (an embedded model such as
    `testbed`), rather than a local path that does not exist."""
    if Path(candidate).is_dir():
        return True
    return candidate.count("/") <= 1 and not candidate.startswith((".", "/", "~"))


def model_and_adapter(candidate: str, baseline: RunRecord, base_model: str | None) -> tuple[str, str | None]:
    """(model, adapter) for a candidate folder or Hub id; adapters sit on a base model: --base-model,
    else the one the checkpoint (igpo_checkpoint.json) or adapter_config.json names, else the
    baseline's model. A named base that is not there is an error naming it and --base-model."""
    from harness.lmeval.adapters import BASE_KEY, base_is_there, named_base
    from igpo.training.checkpoints import MARKER_FILE

    path = Path(candidate)
    marker = path / MARKER_FILE
    named, where = None, ""
    if marker.is_file():
        info = json.loads(marker.read_text(encoding="utf-8"))
        if info.get("kind") != "adapter":
            return candidate, None
        named, where = str(info["base_model"]), f"{marker} (base_model)"
    elif (path / ADAPTER_CONFIG).is_file():
        named, where = named_base(path), f"{path / ADAPTER_CONFIG} ({BASE_KEY})"
    else:
        return candidate, None
    if base_model:
        return base_model, candidate
    if named is not None:
        if not base_is_there(named):
            raise UserError(f"base model {named} named by {where} is not found; give the base with --base-model BASE")
        return named, candidate
    base = baseline.model.name_or_path if baseline.model.name_or_path != UNKNOWN else None
    if not base:
        raise UserError(f"{candidate} is an adapter and the baseline names no model: pass --base-model")
    return str(base), candidate


def baseline_protocol(baseline: RunRecord, allow_mismatch: bool, path: str | None = None):
    """(protocol, reference) of the baseline: the given YAML, else the built-in of that name;
    its file hash must equal the baseline's (a changed protocol file is a mismatch)."""
    from harness.eval.protocols import ProtocolError, load_protocol

    info = baseline.protocol
    ref = path or info.name
    if not ref:
        raise ResultsError(f"{baseline.path or 'the baseline'} names no protocol")
    try:
        protocol = load_protocol(ref)
    except ProtocolError as err:
        raise CheckError(
            f"the baseline's protocol {info.name!r} is not available here ({err}); pass its YAML with --protocol"
        ) from None
    if protocol.file_hash != info.file_hash and not allow_mismatch:
        raise CheckError(
            f"protocol {ref!r} differs from the baseline's: protocol.file_hash: "
            f"{_shown(info.file_hash)} != {_shown(protocol.file_hash)} (use --allow-mismatch)"
        )
    return protocol, ref


def decoding_overrides(protocol, baseline: RunRecord, keys: Sequence[str]) -> DecodeOverrides:
    """Decoding overrides that make the protocol reproduce the baseline's per-task settings."""
    wanted = {k: baseline.tasks[k].decoding for k in keys}

    def predicted(proto, key: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        leaf, _, length = key.partition("@")
        variants = dict(proto.variants())
        # a task keyed without a length under a protocol with lengths decodes alike at every length
        variant = variants.get(f"@{length}") if length else variants.get("", next(iter(variants.values())))
        if variant is None:
            raise CheckError(f"the baseline's task {key} is not a variant of protocol {proto.name!r}")
        return proto.for_task(leaf, variant, DecodeOverrides(**overrides) if overrides else None)[0].to_dict()

    overrides: dict[str, Any] = {}
    for key, target in wanted.items():
        for name, value in target.items():
            if predicted(protocol, key).get(name) != value:
                value = OFF if value is None and name in ("cache", "compile") else value  # None: not given
                if name in overrides and overrides[name] != value:
                    raise CheckError(
                        f"the baseline's decoding cannot be reproduced with one override: "
                        f"decoding.{name} is {overrides[name]!r} and {value!r}"
                    )
                overrides[name] = value
    if overrides:  # what `igpo eval` will decode with these overrides (flags win per task)
        bad = [
            f"{k}.decoding.{n}: {_shown(v)} != {_shown(predicted(protocol, k, overrides).get(n))}"
            for k, target in wanted.items()
            for n, v in target.items()
            if predicted(protocol, k, overrides).get(n) != v
        ]
        if bad:
            raise CheckError("the baseline's decoding cannot be reproduced: " + "; ".join(bad))
    return DecodeOverrides(**overrides)


def baseline_data_dir(baseline: RunRecord, keys: Sequence[str]) -> Path | None:
    """The data folder the baseline read (from its local:<path> sources), if it exists here."""
    from tasks.registry import SPECS

    roots = set()
    for key in keys:
        task = baseline.tasks[key]
        source = str(task.data.get("source") or "")
        spec = SPECS.get(task.task)
        rel = getattr(spec, "local_file", None)
        if source.startswith("local:") and rel:
            path = Path(source.removeprefix("local:"))
            if path.as_posix().endswith(rel):
                roots.add(Path(path.as_posix()[: -len(rel)]))
    if len(roots) == 1 and next(iter(roots)).is_dir():
        return next(iter(roots))
    return None


def evaluate_candidate(
    candidate: str,
    baseline: RunRecord,
    keys: Sequence[str],
    options: CandidateModel,
    allow_mismatch: bool,
) -> Path:
    """Evaluate a model/adapter with the baseline's protocol, seeds, limit and decoding; the run."""
    from harness.eval.run import EvalRequest, plan, run_eval, run_name
    from tasks.registry import DATA_DIR_ENV

    protocol, ref = baseline_protocol(baseline, allow_mismatch, options.protocol)
    overrides = decoding_overrides(protocol, baseline, keys)
    tasks = baseline.tasks
    seeds: list[int] = []
    for key in keys:
        seeds.extend(s for s in tasks[key].seeds if s not in seeds)
    limits = {tasks[k].limit for k in keys}
    if len(limits) > 1:
        raise CheckError(
            f"the baseline's tasks use different limits ({sorted(map(str, limits))}); "
            "check them separately with --tasks"
        )
    leaves = list(dict.fromkeys(tasks[k].task or k.split("@")[0] for k in keys))
    model, adapter = model_and_adapter(candidate, baseline, options.base_model)
    out = options.out or DEFAULT_CHECK_OUT / run_name(model, adapter, protocol.name)
    data_dir = options.data_dir or (None if os.environ.get(DATA_DIR_ENV) else baseline_data_dir(baseline, keys))
    request = EvalRequest(
        model=model,
        adapter=adapter,
        tasks=leaves,
        protocol=ref,
        limit=limits.pop(),
        seeds=seeds or None,
        data_dir=data_dir,
        out=out.parent,
        name=out.name,
        batch_size=options.batch_size,
        device=options.device,
        dtype=options.dtype,
        overrides=overrides,
        leaderboard=None,
        trust_remote_code=options.trust_remote_code,
    )
    plan(request)  # inputs and the run folder checked before anything is said or written
    say("check", f"evaluating {candidate} with the baseline's settings into {out}")
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the check's markdown
        return run_eval(request).parent


# --------------------------------------------------------------------------- baseline update


def update_baseline(candidate_run: str | Path, baseline: str | Path) -> list[Path]:
    """Copy a run's samples.jsonl then results.json into the baseline folder, each atomically.

    The candidate is validated first; other files in the baseline folder are left alone.
    """
    source = results_path(candidate_run)
    load_results(source)
    load_samples(source)
    target = Path(baseline)
    folder = target.parent if target.suffix == ".json" else target
    written = []
    for name in (SAMPLES_FILE, RESULTS_FILE):  # results last: its presence marks a complete run
        atomic_write_bytes(folder / name, source.with_name(name).read_bytes())
        written.append(folder / name)
    return written
