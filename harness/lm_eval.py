"""lm-eval's own CLI with the `dllm` model and the igpo tasks registered (`igpo lm-eval -- ...`).

Every lm-eval flag works; `--include_path` defaults to the installed igpo task folder, or, when
$IGPO_DATA_DIR is set, to task copies that read that offline data folder.
Also runnable as `python -m harness.lm_eval ...`. Bad input that lm-eval or the dllm model reports
as ValueError / KeyError / FileNotFoundError (an unknown task, a missing model, a model_arg of the
wrong type) ends in one `error:` line and exit code 2; IGPO_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from lm_eval.__main__ import cli_evaluate

    import harness.lmeval  # noqa: F401  (registers the dllm model with lm-eval)
    from tasks.registry import TASK_DIR

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    wants_help = any(a in ("-h", "--help") for a in args)
    try:
        if args and not wants_help and "--include_path" not in args:
            # With $IGPO_DATA_DIR set, the igpo tasks read that offline folder instead of the Hub;
            # only the requested ones need their data files there.
            from tasks.registry import data_dir_or_env, local_task_dir

            data_dir = data_dir_or_env(None)
            folder = local_task_dir(data_dir, _requested_igpo_tasks(args)) if data_dir else TASK_DIR
            args += ["--include_path", str(folder)]
        sys.argv = ["lm-eval", *args]
        cli_evaluate()
    except (ValueError, KeyError, FileNotFoundError) as err:  # ModelLoadError is a ValueError
        from harness.errors import EXIT_ERROR, debugging, one_line

        if debugging():
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None


def _requested_igpo_tasks(args: list[str]) -> list[str] | None:
    """The igpo tasks / groups named by --tasks (None: not given, so every one is written)."""
    from tasks.registry import TASKS

    value = None
    for i, arg in enumerate(args):
        if arg.startswith("--tasks="):
            value = arg.split("=", 1)[1]
        elif arg == "--tasks" and i + 1 < len(args):
            value = args[i + 1]
    if value is None:
        return None
    names = (name.strip() for name in value.split(","))
    return [TASKS[n] for n in names if n in TASKS and n.startswith("igpo_")]


if __name__ == "__main__":
    main()
