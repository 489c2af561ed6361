"""`python -m harness.lm_eval ARGS`: `igpo lm-eval -- ARGS`, lm-eval's own CLI with the `dllm` model
and the igpo tasks registered. It lives in harness.lmeval.cli; this module only starts it."""

from harness.lmeval.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
