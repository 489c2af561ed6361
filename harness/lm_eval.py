"""lm-eval's own CLI with the `dllm` model and the igpo tasks registered (`igpo lm-eval -- ...`).

Every lm-eval flag works; `--include_path` defaults to the installed igpo task folder.
Also runnable as `python -m harness.lm_eval ...`.
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
    if args and not wants_help and "--include_path" not in args:
        args += ["--include_path", str(TASK_DIR)]
    sys.argv = ["lm-eval", *args]
    cli_evaluate()


if __name__ == "__main__":
    main()
