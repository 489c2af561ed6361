"""Build the testbed model: masked-diffusion SFT from scratch on 1-4-step arith problems.

Step-based schedule (not clock-based), one seed: `python -m igpo.testbed.build` (also
`make testbed-model`) reproduces the shipped weights. Resumable: rerun with --resume.
Then measures greedy accuracy per level and group outcomes at the RL temperature and writes
them into the model card (card.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from igpo.models import ArchConfig, TokenSpec, new_model, save_model
from igpo.testbed import TESTBED_DECODE, TESTBED_DIR
from igpo.training.checkpoints import latest_checkpoint
from igpo.training.settings import (
    CheckpointSettings,
    LogSettings,
    LoraSettings,
    ModelSettings,
    OptimSettings,
)

ARCH = dict(d_model=128, n_layers=4, n_heads=4, mlp_hidden=512)
"""Width 128, 4 layers, 4 heads: ~1M parameters, learns the task in under an hour on 2 cores."""
TRAIN_MIX = {"min_steps": 1, "max_steps": 4, "step_weights": [0.35, 0.30, 0.20, 0.15], "seed": 0}
"""Pretraining covers 1-4 operations; 5-6 stay unseen, which is where RL has work to do."""
POOL_SIZE = 200_000
BATCH_SIZE = 64
MAX_STEPS = 4000
LEARNING_RATE = 2e-3
WARMUP_STEPS = 100
COMPLETION_TOKENS = TESTBED_DECODE.gen_length
"""The SFT canvas: the arith decoding's (6 operations need 42 tokens plus EOS)."""
SEED = 0
DEFAULT_WORKDIR = Path("runs/testbed-build")


def sft_config(init_dir: Path, max_steps: int = MAX_STEPS):
    from igpo.training.sft import SFTConfig, SFTDataSettings

    return SFTConfig(
        model=ModelSettings(path=str(init_dir), lora=LoraSettings(enabled=False)),
        data=SFTDataSettings(
            source="arith",
            arith=dict(TRAIN_MIX),
            arith_size=POOL_SIZE,
            max_completion_tokens=COMPLETION_TOKENS,
            max_prompt_tokens=64,
        ),
        optim=OptimSettings(
            lr=LEARNING_RATE,
            betas=(0.9, 0.95),
            weight_decay=0.01,
            grad_clip=1.0,
            warmup_steps=WARMUP_STEPS,
            schedule="cosine",
        ),
        checkpoint=CheckpointSettings(every=250, keep=2),
        log=LogSettings(progress=True),
        batch_size=BATCH_SIZE,
        max_steps=max_steps,
        seed=SEED,
    )


def init_model(folder: Path) -> None:
    """The untrained model + arith tokenizer, deterministic in SEED."""
    from igpo.arith import build_arith_tokenizer
    from igpo.models.tokenizer import EOT

    tok = build_arith_tokenizer()
    spec = TokenSpec(
        mask_id=tok.mask_token_id,
        eos_id=tok.eos_token_id,
        eot_id=tok.convert_tokens_to_ids(EOT),
        pad_id=tok.pad_token_id,
    )
    model = new_model(ArchConfig(vocab_size=len(tok), **ARCH), spec, seed=SEED)
    save_model(model, folder)
    tok.save_pretrained(str(folder))


def export(checkpoint: Path, dest: Path, card: dict) -> None:
    """Copy weights + tokenizer of the final checkpoint into the package, atomically."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".testbed-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the package ships it
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
    ):
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, tmp / name)
    (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def ship(checkpoint: Path, dest: Path, card: dict) -> None:
    """Export `checkpoint` to `dest`, then measure the shipped model into its card (and print it)."""
    from igpo.testbed.measure import measure

    dest.parent.mkdir(parents=True, exist_ok=True)
    export(checkpoint, dest, card)
    card["measured"] = measure(dest)
    (dest / "card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    print(json.dumps(card["measured"], indent=2))


def main(argv: list[str] | None = None) -> None:
    from igpo.training.sft import train_sft

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted build")
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS)
    parser.add_argument("--dest", type=Path, default=TESTBED_DIR)
    args = parser.parse_args(argv)
    init_dir = args.workdir / "init"
    out = args.workdir / "sft"
    if not args.resume:
        if args.workdir.exists():
            shutil.rmtree(args.workdir)
        init_model(init_dir)
    cfg = sft_config(init_dir, args.max_steps)
    train_sft(cfg, out, resume=args.resume, overwrite=False)
    final = latest_checkpoint(out)
    card = {
        "arch": ARCH,
        "train_mix": TRAIN_MIX,
        "pool_size": POOL_SIZE,
        "batch_size": BATCH_SIZE,
        "max_steps": args.max_steps,
        "lr": LEARNING_RATE,
        "warmup_steps": WARMUP_STEPS,
        "completion_tokens": COMPLETION_TOKENS,
        "seed": SEED,
        "sft_config": asdict(cfg) if hasattr(cfg, "__dataclass_fields__") else None,
    }
    ship(final, args.dest, card)


if __name__ == "__main__":
    main()
