"""Build the testbed's RL base, `testbed-sign`: the testbed continued with a planted answer habit.

`python -m igpo.testbed.build_sign` (also `make testbed-sign`, about 5 minutes on 2 cores) runs
the `sft_tiny_sign` recipe from the embedded testbed and ships its final checkpoint as
igpo/assets/testbed-sign with a model card. Why: the testbed itself is at its ceiling on every
level its rollouts can solve (README "Does RL improve the testbed?"), so RL has nothing to
improve; this base boxes its answers with a minus sign in most 3+-operation problems, a
systematic mistake whose correction is among its own samples, which is the headroom RL elicits.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from igpo.models.loading import EMBEDDED_MODELS

RECIPE = "sft_tiny_sign"
DEFAULT_WORKDIR = Path("runs/testbed-sign")
DEST = EMBEDDED_MODELS["testbed-sign"]


def main(argv: list[str] | None = None) -> None:
    from igpo.config import load_config, resolve_recipe
    from igpo.testbed.build import ship
    from igpo.training.checkpoints import latest_checkpoint
    from igpo.training.sft import SFTConfig, train_sft

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted build")
    parser.add_argument("--dest", type=Path, default=DEST)
    args = parser.parse_args(argv)
    cfg = load_config(SFTConfig, resolve_recipe(RECIPE))
    train_sft(cfg, args.workdir, resume=args.resume, overwrite=not args.resume)
    final = latest_checkpoint(args.workdir)
    ship(final, args.dest, {"recipe": RECIPE, "base": cfg.model.path, "sft_config": asdict(cfg)})


if __name__ == "__main__":
    main()
