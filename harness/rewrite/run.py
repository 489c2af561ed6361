"""The rewrite job: every input row ends kept (OUT), rejected with a reason (OUT.rejects.jsonl)
or failed (OUT.failures.jsonl), exactly once, across any number of interrupted reruns.

Each finished row is appended to its file as one line, flushed and fsynced (igpo.jsonfile's
JsonlAppender), so a kill loses at most the requests in flight; a rerun reads the three files,
skips the ids already there and repairs a torn last line. Kept rows are what `igpo sft data.source=jsonl data.path=OUT` reads:
`{"id", "prompt", "completion", "answer", "trace", "source_line", "tokens", "rewriter"}` (`completion`
for SFT, `trace` for RL hints: the same text; `rewriter` the settings that made the row, also on
rejects and failures). A rerun whose settings differ from the finished rows' is refused, naming
both (a row's id covers only the input row and the prompt). The closing summary (kept,
rejected by reason, failed, tokens, cost, wall time) goes to stdout and OUT.summary.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.rewrite.checks import REJECT_REASONS, check
from harness.rewrite.client import ClientSettings, KeyRefused, RateLimiter, complete, make_client, redact_url
from harness.rewrite.rows import Preset, Source, load_prompt, read_sources, render
from igpo.atomic import atomic_write_text
from igpo.errors import InvalidSetting, MissingInput, require_file
from igpo.jsonfile import JsonlAppender

PER_MILLION = 1_000_000


@dataclass
class RewriteJob:
    """One `igpo rewrite-traces` run."""

    input: Path
    out: Path
    fields: Preset
    client: ClientSettings
    prompt: Path | None = None
    tokenizer: str | None = None
    """Tokenizer that counts a rewrite's length (default: the embedded testbed's)."""
    max_tokens: int | None = None
    """Longest rewrite kept, in tokens of `tokenizer` (None: no cap)."""
    limit: int | None = None
    price_in: float = 0.0
    """Price per million prompt tokens (for the cost estimate)."""
    price_out: float = 0.0
    seed: int = 0
    """Seed of the backoff jitter."""
    progress: bool = True
    split: str = "train"
    """Split of a Hub dataset given as INPUT."""
    overwrite: bool = False
    """Replace an OUT (or a file beside it) igpo did not write; a symbolic link is replaced, not followed."""

    def settings(self) -> dict[str, Any]:
        """What decides a row's outcome besides its input row and the prompt: recorded on every
        finished row, and a rerun must match the rows already there."""
        return {
            "model": self.client.model,
            "temperature": self.client.temperature,
            "max_output_tokens": self.client.max_output_tokens,
            "tokenizer": self.tokenizer or "testbed",
            "max_tokens": self.max_tokens,
        }

    def files(self) -> dict[str, Path]:
        stem = self.out.with_suffix("")
        return {
            "kept": self.out,
            "rejects": Path(f"{stem}.rejects.jsonl"),
            "failures": Path(f"{stem}.failures.jsonl"),
            "summary": Path(f"{stem}.summary.json"),
            "source": Path(f"{stem}.source.jsonl"),
        }


OUTPUTS = ("kept", "rejects", "failures")
"""The files a finished row lands in (one of them, once)."""


def finished_rows(path: Path) -> dict[str, dict[str, Any]]:
    """The finished rows of one output file by id (the first record of an id; a torn line is not
    finished)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                rows.setdefault(str(rec["id"]), rec)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return rows


def done_ids(paths: list[Path]) -> set[str]:
    """Ids already finished in any of the files."""
    return {row_id for path in paths for row_id in finished_rows(path)}


def check_settings(job: RewriteJob, finished: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Refuse a rerun whose settings differ from those the finished rows were made with (one
    `error:` line naming both). Rows written before settings were recorded carry none: the model
    of the last summary stands for them."""
    want = job.settings()
    legacy = _summary_model(job.files()["summary"])
    for name, rows in finished.items():
        for row in rows.values():
            had = row.get("rewriter")
            if not isinstance(had, dict):
                if legacy is None:
                    continue
                had = {"model": legacy}
            diff = [key for key in want if key in had and had[key] != want[key]]
            if diff:
                was = ", ".join(f"{key}={had[key]!r}" for key in diff)
                now = ", ".join(f"{key}={want[key]!r}" for key in diff)
                raise InvalidSetting(
                    f"{job.files()[name]} holds rows rewritten with {was}; this run asks {now}: "
                    "rerun with the same settings or give another --out"
                )


def _summary_model(path: Path) -> str | None:
    try:
        model = json.loads(path.read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return model if isinstance(model, str) else None


def hub_input(dataset_id: str, split: str, dest: Path) -> Path:
    """A Hub dataset (`owner/name`) written once to `dest` as JSONL, so row ids and resumes work
    as for a local file; a local path that does not exist is an error."""
    if dest.is_file():
        return dest
    if Path(dataset_id).exists():  # a folder or FIFO given as INPUT: said so, not "not found"
        require_file(Path(dataset_id), "input file")
    from igpo.models.loading import looks_like_hub_id

    if not looks_like_hub_id(dataset_id):
        raise MissingInput(f"input file not found: {dataset_id}")
    try:
        from datasets import load_dataset

        rows = load_dataset(dataset_id, split=split)
    except Exception as err:  # offline, unknown id, no such split: the Hub's many error types
        raise MissingInput(
            f"input {dataset_id!r} is neither a file nor a loadable Hub dataset ({type(err).__name__})"
        ) from None
    atomic_write_text(dest, "".join(json.dumps(dict(r), ensure_ascii=False, default=str) + "\n" for r in rows))
    return dest


def dry_run(job: RewriteJob, count: int = 3) -> str:
    """The first `count` requests as they would be sent (nothing is sent)."""
    template = load_prompt(job.prompt)
    shown = []
    for source in read_sources(job.input, job.fields, template, limit=count):
        body = {"model": job.client.model, "messages": render(template, source), "temperature": job.client.temperature}
        shown.append(f"# row {source.line} (id {source.id})\n{json.dumps(body, indent=2, ensure_ascii=False)}")
    return "\n\n".join(shown)


def preflight(cfg: ClientSettings) -> None:
    """Fail before any rewrite request when the server is unreachable or refuses the key."""
    import httpx

    url = cfg.base_url.rstrip("/") + "/models"
    try:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {cfg.api_key}"}, timeout=min(cfg.timeout_s, 10.0))
    except httpx.HTTPError as err:
        raise MissingInput(f"cannot reach {redact_url(cfg.base_url)} ({type(err).__name__})") from None
    if resp.status_code in (401, 403):
        raise InvalidSetting(f"{redact_url(cfg.base_url)} refused the API key (HTTP {resp.status_code})")


def check_outputs(job: RewriteJob) -> list[Path]:
    """OUT and the files beside it are no input of the job, no other run's files, and one that
    exists holds rewrite-traces rows (a rerun appends to it) or was written by igpo
    (igpo.owned), unless --overwrite. Returns the files --overwrite replaces."""
    from igpo.outputs import check_output, model_input
    from igpo.owned import check_replace

    inputs = [job.input, job.prompt, model_input(job.tokenizer)]
    replaced = []
    for name, path in _written(job).items():
        flag = "--out" if name == "kept" else f"--out ({name})"
        check_output(path, inputs, flag=flag, folder=False)
        if (
            name in OUTPUTS
            and not path.is_symlink()
            and path.is_file()
            and (_has_rows(path) or not path.stat().st_size)
        ):
            continue  # this job's rows (or an empty file): a rerun appends
        if check_replace(path, flag=flag, overwrite=job.overwrite) not in ("absent", "own"):
            replaced.append(path)
    return replaced


def _written(job: RewriteJob) -> dict[str, Path]:
    """The files the job writes: `source` only for a Hub dataset (a local INPUT is read in place)."""
    return {name: path for name, path in job.files().items() if name != "source" or not job.input.is_file()}


def _has_rows(path: Path) -> bool:
    """Holds rows rewrite-traces wrote (each with an id and its source line), not another JSONL."""
    try:
        rows = finished_rows(path)
    except UnicodeDecodeError:
        return False
    return bool(rows) and all(isinstance(row, dict) and "source_line" in row for row in rows.values())


def run(job: RewriteJob) -> dict[str, Any]:
    """Rewrite every row not yet finished; returns the summary (also written next to OUT). Its
    files are recorded as igpo's (igpo.owned), so a rerun appends to them."""
    from igpo.owned import claim_file, claiming

    replaced = check_outputs(job)
    with claiming(), contextlib.ExitStack() as held:
        for path in _written(job).values():
            claim_file(path)
        return _run(job, held, replaced)


def _run(job: RewriteJob, held: contextlib.ExitStack, replaced: list[Path]) -> dict[str, Any]:
    from igpo.models import load_tokenizer
    from igpo.outputs import locked
    from igpo.testbed import TESTBED_DIR

    if not job.input.is_file():
        job.input = hub_input(str(job.input), job.split, job.files()["source"])
    if job.max_tokens is not None and job.max_tokens < 1:
        raise InvalidSetting(f"--max-tokens must be >= 1, got {job.max_tokens}")
    for flag, price in (("--price-in", job.price_in), ("--price-out", job.price_out)):
        if not 0 <= price < float("inf"):  # NaN fails too: it would be the summary's cost
            raise InvalidSetting(f"{flag} must be a finite price >= 0, got {price}")
    template = load_prompt(job.prompt)
    sources = list(read_sources(job.input, job.fields, template, job.limit))  # bad rows fail before any request
    for path in replaced:  # --overwrite: replaced, never appended to (nor a link written through)
        path.unlink(missing_ok=True)
    files = job.files()
    check_settings(job, {name: finished_rows(files[name]) for name in OUTPUTS})
    done = done_ids([files[name] for name in OUTPUTS])
    todo = [s for s in sources if s.id not in done]
    tokenizer = load_tokenizer(job.tokenizer or str(TESTBED_DIR))
    if todo:
        preflight(job.client)
        held.enter_context(locked(job.out, folder=False))  # one writer per OUT (created here)
    started = time.perf_counter()
    counts = asyncio.run(_run_all(job, template, todo, tokenizer, files))
    wall = time.perf_counter() - started
    after = {name: finished_rows(files[name]) for name in OUTPUTS}
    reasons = Counter(row.get("reason") for row in after["rejects"].values())
    summary = {
        "input_rows": len(sources),
        "already_done": len(sources) - len(todo),
        "this_run": len(todo),
        "kept": len(after["kept"]),
        "rejected": {r: reasons.get(r, 0) for r in REJECT_REASONS},
        "failed": len(after["failures"]),
        "missing": len({s.id for s in sources} - set().union(*after.values())),
        "prompt_tokens": counts["prompt_tokens"],
        "completion_tokens": counts["completion_tokens"],
        "cost_estimate": round(
            counts["prompt_tokens"] * job.price_in / PER_MILLION
            + counts["completion_tokens"] * job.price_out / PER_MILLION,
            6,
        ),
        "attempts": counts["attempts"],
        "wall_seconds": round(wall, 2),
        "model": job.client.model,
        "base_url": redact_url(job.client.base_url),
    }
    atomic_write_text(files["summary"], json.dumps(summary, indent=2) + "\n")
    return summary


async def _run_all(job: RewriteJob, template: str, todo: list[Source], tokenizer, files) -> Counter:
    from tqdm import tqdm

    counts: Counter = Counter()
    if not todo:
        return counts
    writers = {name: JsonlAppender(files[name]) for name in OUTPUTS}
    client = make_client(job.client)
    limiter = RateLimiter(job.client.requests_per_minute)
    rng = random.Random(job.seed)
    queue: asyncio.Queue[Source] = asyncio.Queue()
    for source in todo:
        queue.put_nowait(source)
    bar = tqdm(total=len(todo), desc="rewrite", unit="row", disable=not job.progress, file=sys.stderr)

    async def worker() -> None:
        while True:
            try:
                source = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            reply = await complete(client, render(template, source), job.client, limiter, rng)
            counts["prompt_tokens"] += reply.prompt_tokens
            counts["completion_tokens"] += reply.completion_tokens
            counts["attempts"] += reply.attempts
            _record(source, reply, tokenizer, job, writers, counts)
            bar.update(1)
            cost = (counts["prompt_tokens"] * job.price_in + counts["completion_tokens"] * job.price_out) / PER_MILLION
            bar.set_postfix(
                kept=counts["kept"],
                rejected=counts["rejected"],
                failed=counts["failed"],
                tok_in=counts["prompt_tokens"],
                tok_out=counts["completion_tokens"],
                cost=f"{cost:.4f}",
            )

    try:
        await asyncio.gather(*(worker() for _ in range(job.client.concurrency)))
    except KeyRefused as err:
        raise InvalidSetting(str(err)) from None
    finally:
        bar.close()
        await client.close()
    return counts


def _record(source: Source, reply, tokenizer, job: RewriteJob, writers, counts: Counter) -> None:
    rewriter = job.settings()
    if reply.text is None:
        writers["failures"].append(
            {
                "id": source.id,
                "source_line": source.line,
                "attempts": reply.attempts,
                "error": reply.error,
                "errors": reply.errors,
                "rewriter": rewriter,
            }
        )
        counts["failed"] += 1
        return
    verdict = check(reply.text, source.answer, tokenizer, job.max_tokens)
    if verdict.kept:
        writers["kept"].append(
            {
                "id": source.id,
                "prompt": source.question,
                "answer": source.answer,
                "trace": reply.text.strip(),
                "completion": reply.text.strip(),
                "source_line": source.line,
                "tokens": verdict.tokens,
                "rewriter": rewriter,
            }
        )
        counts["kept"] += 1
    else:
        writers["rejects"].append(
            {
                "id": source.id,
                "source_line": source.line,
                "reason": verdict.reason,
                "tokens": verdict.tokens,
                "response": reply.text,
                "rewriter": rewriter,
            }
        )
        counts["rejected"] += 1
