"""lm-eval's own CLI with the `dllm` model and the igpo tasks registered (`igpo lm-eval -- ...`).

Every lm-eval flag works; `--include_path` defaults to the installed igpo task folder, or, when
$IGPO_DATA_DIR is set, to task copies that read that offline data folder.
Also runnable as `python -m harness.lm_eval ...` (harness/lm_eval.py starts this module's `main`).
(`lm_eval --model dllm` cannot work on lm-eval
0.4.x: it has no plugin entry point, so a model class registers only when its module is imported,
which is what this wrapper does.)

Two things are added for `--model dllm`:
- `--use_cache PATH` becomes `PATH.dllm-<hash of model_args>`: lm-eval's cache key is the request
  alone (prompt and generation_kwargs) and ignores model_args, where dllm's decoding settings
  live, so a cache written with other settings would be served silently;
- with `--output_path`, each request's decoding settings, token count and whether it hit the
  length go to `<output_path>/dllm_requests.jsonl`, and the run's warnings are repeated at the end.
Bad input that lm-eval or the dllm model reports as ValueError / KeyError / FileNotFoundError (an
unknown task, a missing model, a model_arg of the wrong type), and a Hub that cannot be reached
for a task's data, ends in one `error:` line and exit
code 2; IGPO_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from igpo.progress import say

DLLM_MODELS = ("dllm", "igpo")
REQUEST_LOG = "dllm_requests.jsonl"


def main(argv: list[str] | None = None) -> None:
    import os

    from igpo.progress import verbose

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    wants_help = any(a in ("-h", "--help") for a in args)
    if not wants_help:
        args = _checked_early(args)  # bad model_args / --limit: seconds, not lm-eval's task loading
    if not verbose():
        os.environ.setdefault("LMEVAL_LOG_LEVEL", "WARNING")  # lm-eval's INFO lines only with igpo --verbose

    from lm_eval.__main__ import cli_evaluate

    from harness.lmeval.model import DiffusionLM  # registers the dllm model with lm-eval
    from tasks.registry import TASK_DIR, hub_error_types

    hub_errors = hub_error_types()
    # no --device (nor a --config file that may name one): the device dllm receives is lm-eval's
    # default, not something to warn about when CUDA is missing
    asked = _flag(args, "--device") is not None or _flag(args, "--config") is not None
    DiffusionLM.unasked_device = None if asked else lmeval_default_device()
    try:
        if args and not wants_help and "--include_path" not in args:
            # With $IGPO_DATA_DIR set, the igpo tasks read that offline folder instead of the Hub;
            # only the requested ones need their data files there.
            from tasks.registry import data_dir_or_env, local_task_dir

            data_dir = data_dir_or_env(None)
            folder = local_task_dir(data_dir, _requested_igpo_tasks(args)) if data_dir else TASK_DIR
            args += ["--include_path", str(folder)]
        if not wants_help and _flag(args, "--model") in DLLM_MODELS:
            args = keyed_cache_path(args)
        sys.argv = ["lm-eval", *args]
        cli_evaluate()
        if not wants_help:
            write_request_logs(_flag(args, "--output_path"))
    except (ValueError, KeyError, FileNotFoundError, *hub_errors) as err:  # ModelLoadError is a ValueError
        from harness.errors import EXIT_ERROR, debugging, one_line
        from tasks.registry import DATA_DIR_ENV

        if debugging():
            raise
        hint = f" (offline? set {DATA_DIR_ENV} to the data folder)" if isinstance(err, hub_errors) else ""
        print(f"error: {one_line(err)}{hint}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    finally:
        DiffusionLM.unasked_device = None


def lmeval_default_device() -> str:
    """The device lm-eval's CLI hands a model when --device is not given (its EvaluatorConfig)."""
    from dataclasses import MISSING, fields

    try:
        from lm_eval.config.evaluate_config import EvaluatorConfig
    except ImportError:  # an lm-eval without that module: its long-standing default
        return "cuda:0"
    default = next((f.default for f in fields(EvaluatorConfig) if f.name == "device"), MISSING)
    return default if isinstance(default, str) else "cuda:0"


MODEL_ARGS_FLAGS = ("--model_args", "-a")
LIMIT_FLAGS = ("--limit", "-L")
MAX_LIMIT = 10**9


def _checked_early(args: list[str]) -> list[str]:
    """Refuse bad input before lm-eval loads (one `error:` line, exit 2): a --limit that is not a
    positive count or fraction; for dllm, model_args it would reject. `batch_size` inside
    model_args (LLaDA's command lines put it there, lm-eval passes --batch_size beside it) becomes
    --batch_size; both given with different values is refused."""
    from harness.errors import EXIT_ERROR, debugging, one_line
    from igpo.errors import IgpoError

    try:
        _check_limit(next((v for f in LIMIT_FLAGS if (v := _flag(args, f)) is not None), None))
        if _flag(args, "--model") in DLLM_MODELS:
            args = _dllm_model_args(args)
    except IgpoError as err:
        if debugging():
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None
    return args


def _check_limit(text: str | None) -> None:
    import math

    from igpo.errors import InvalidSetting

    if text is None:
        return
    try:
        value = float(text)
    except ValueError:
        raise InvalidSetting(f"--limit must be a number of examples or a fraction, got {text!r}") from None
    if not math.isfinite(value) or value <= 0 or (value >= 1 and value != int(value)) or value > MAX_LIMIT:
        raise InvalidSetting(
            f"--limit must be a fraction in (0, 1) or a whole number of examples from 1 to {MAX_LIMIT:,}, got {text}"
        )


def _model_args_spans(args: list[str]) -> tuple[list[str], list[str]]:
    """(args without any --model_args / -a, the key=value items they held, in order). The flag
    takes one or more values (lm-eval merges `a=1,b=2` and `a=1 b=2`)."""
    rest: list[str] = []
    items: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in MODEL_ARGS_FLAGS and eq:
            items += value.split(",")
        elif arg in MODEL_ARGS_FLAGS:
            while i + 1 < len(args) and not args[i + 1].startswith("-"):
                i += 1
                items += args[i].split(",")
        else:
            rest.append(arg)
        i += 1
    return rest, [item for item in items if item.strip()]


def _dllm_model_args(args: list[str]) -> list[str]:
    """dllm's model_args parsed as the model will (harness.lmeval.args), batch_size moved to
    --batch_size; returns the command line to hand to lm-eval."""
    from harness.lmeval.args import parse_args
    from igpo.errors import InvalidSetting

    rest, items = _model_args_spans(args)
    pairs: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InvalidSetting(f"dllm model_args item {item!r} is not key=value")
        pairs[key.strip()] = value.strip()
    batch = pairs.pop("batch_size", None)
    parse_args({**pairs, **({"batch_size": batch} if batch is not None else {})})
    if batch is not None:
        given = next((v for f in ("--batch_size", "-b") if (v := _flag(rest, f)) is not None), None)
        if given is not None and given.strip() != batch:
            raise InvalidSetting(f"batch_size={batch} in --model_args and --batch_size {given} differ: give one")
        if given is None:
            rest += ["--batch_size", batch]
    if not pairs:
        return rest
    return [*rest, "--model_args", ",".join(f"{k}={v}" for k, v in pairs.items())]


def _flag(args: list[str], name: str) -> str | None:
    """The value of a flag (`--name V` or `--name=V`; the last one wins, as in argparse)."""
    value = None
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(args):
            value = args[i + 1]
    return value


def settings_hash(model_args: str | None) -> str:
    """A short hash of dllm's parsed model_args (aliases resolved, values typed, order ignored)."""
    from dataclasses import asdict

    from lm_eval.utils import simple_parse_args_string

    from harness.lmeval.args import parse_args

    parsed = asdict(parse_args(simple_parse_args_string(model_args or "")))
    parsed["decode_given"] = sorted(parsed["decode_given"])
    blob = json.dumps(parsed, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def keyed_cache_path(args: list[str]) -> list[str]:
    """`--use_cache PATH` -> `PATH.dllm-<settings hash>`, said on stderr (no --use_cache: unchanged)."""
    path = _flag(args, "--use_cache")
    if path is None:
        return args
    keyed = f"{path}.dllm-{settings_hash(_flag(args, '--model_args'))}"
    out = []
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--use_cache" and i + 1 < len(args):
            skip = True
            continue
        if arg.startswith("--use_cache="):
            continue
        out.append(arg)
    say("lm-eval", f"--use_cache {path} -> {keyed} (keyed by dllm's model_args: lm-eval's own cache key ignores them)")
    return [*out, "--use_cache", keyed]


def write_request_logs(output_path: str | None) -> None:
    """The dllm model's request records into `<output_path>/dllm_requests.jsonl` (rank N > 0:
    `dllm_requests.rankN.jsonl`), and its warnings once more on stderr."""
    from harness.lmeval import DiffusionLM
    from igpo.atomic import atomic_write_text

    for lm in [DiffusionLM.latest] if DiffusionLM.latest is not None else []:
        if output_path and lm.request_log:
            folder = Path(output_path)
            folder = folder if folder.suffix != ".json" else folder.parent
            name = REQUEST_LOG if lm.rank == 0 else REQUEST_LOG.replace(".jsonl", f".rank{lm.rank}.jsonl")
            lines = [json.dumps(rec, ensure_ascii=False, default=str) for rec in lm.request_log]
            atomic_write_text(folder / name, "\n".join(lines) + "\n")
            if lm.rank == 0:
                say("lm-eval", f"per-request decoding records: {folder / name}")
        if lm.rank == 0:
            for text in lm.warnings:
                print(f"warning: dllm: {text}", file=sys.stderr)


def _requested_igpo_tasks(args: list[str]) -> list[str] | None:
    """The igpo tasks / groups named by --tasks (None: not given, so every one is written)."""
    from tasks.registry import TASKS

    value = _flag(args, "--tasks")
    if value is None:
        return None
    names = (name.strip() for name in value.split(","))
    return [TASKS[n] for n in names if n in TASKS and n.startswith("igpo_")]


if __name__ == "__main__":
    main()
