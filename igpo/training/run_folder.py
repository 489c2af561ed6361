"""A training run's output folder: the checks before a run writes there (never an input, another
run or a user's folder), its lock, and the metrics log (metrics.jsonl, TensorBoard, W&B)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igpo.atomic import atomic_write_bytes
from igpo.config import to_dict
from igpo.jsonfile import finite
from igpo.training.checkpoints import CHECKPOINT_DIR, latest_checkpoint
from igpo.training.settings import LogSettings, TrainingError

METRICS_FILE = "metrics.jsonl"
OUTPUT_KIND = "train"
OUTPUT_NAMES = (CHECKPOINT_DIR, METRICS_FILE, "tensorboard", "wandb", "DONE", "series-*")
"""What a training folder holds (ablate adds DONE and the series of its evaluations)."""


def config_inputs(config: Any) -> list[str | None]:
    """The paths a training config reads (model, tokenizer, adapter, data): never an output."""
    from igpo.outputs import model_input

    model, data = config.model, getattr(config, "data", None)
    return [model_input(model.path), model_input(model.tokenizer), model.adapter, getattr(data, "path", None)]


def check_output_folder(
    out: Path, *, resume: bool, overwrite: bool, inputs: Any = (), trainer: str | None = None
) -> None:
    """Refuse (changing nothing) an output folder that is an input or holds one, a protected
    folder, a folder igpo did not make, a run of another `trainer` (run_kind), or a non-empty
    one without --resume / --overwrite."""
    from igpo import outputs

    if resume and overwrite:
        raise TrainingError("--resume and --overwrite exclude each other")
    outputs.check_output(out, inputs, clears=overwrite)
    outputs.ensure_free(out)
    outputs.check_variant(out, trainer)
    if resume:
        if not latest_checkpoint(out):
            raise TrainingError(f"nothing to resume: no checkpoint under {out / CHECKPOINT_DIR}")
        return
    exists = out.is_dir() and any(p.name not in outputs.OWN for p in out.iterdir())
    if exists and not overwrite:
        raise TrainingError(f"output folder {out} exists; pass --resume to continue or --overwrite to replace it")
    outputs.check_folder(out, kind=OUTPUT_KIND, known=OUTPUT_NAMES, overwrite=overwrite)


def run_kind(config: Any) -> str:
    """'sft' or 'rl': the trainer a config drives, recorded in its output folder's marker."""
    return "sft" if type(config).__name__ == "SFTConfig" else "rl"


def prepare_output(out: Path, *, resume: bool, overwrite: bool, inputs: Any = (), trainer: str | None = None):
    """Check the output folder, take its lock (one writer per folder), clear it with --overwrite
    (only what training writes, only in a folder igpo made for the same `trainer`). Returns the
    held lock: close it when the run ends."""
    from igpo import outputs

    check_output_folder(out, resume=resume, overwrite=overwrite, inputs=inputs, trainer=trainer)
    lock = outputs.acquire(out)
    try:
        check_output_folder(out, resume=resume, overwrite=overwrite, inputs=inputs, trainer=trainer)  # now, locked
        if not resume:
            outputs.claim_folder(out, kind=OUTPUT_KIND, known=OUTPUT_NAMES, overwrite=overwrite, variant=trainer)
    except BaseException:
        lock.close()
        raise
    return lock


def _step_of(line: str, resume_step: int) -> bool:
    """Whether a metrics line belongs to the steps kept on resume; a torn line (a crash
    mid-write) is dropped with a warning instead of failing the resume."""
    if not line.strip():
        return False
    try:
        return int(json.loads(line)["step"]) <= resume_step
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        import logging

        logging.getLogger(__name__).warning("metrics.jsonl: dropped a damaged line (%.40s...)", line)
        return False


class MetricsLog:
    """metrics.jsonl in the output folder (one line per step), plus TensorBoard / W&B if asked."""

    def __init__(self, out: Path, settings: LogSettings, config: Any, resume_step: int = 0, enabled: bool = True):
        self.path = out / METRICS_FILE
        self.enabled = enabled
        self._tb = self._wandb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.is_file():  # drop lines written after the checkpoint we resume
            kept = [ln for ln in self.path.read_text(errors="replace").splitlines() if _step_of(ln, resume_step)]
            atomic_write_bytes(self.path, ("\n".join(kept) + ("\n" if kept else "")).encode())
        elif self.path.exists():
            self.path.unlink()
        if settings.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise TrainingError("log.tensorboard needs the tensorboard package (pip install tensorboard)") from err
            self._tb = SummaryWriter(str(out / "tensorboard"))
        if settings.wandb:
            try:
                import wandb
            except ImportError as err:
                raise TrainingError("log.wandb needs the wandb package (pip install wandb)") from err
            self._wandb = wandb.init(project=settings.wandb_project, config=to_dict(config), dir=str(out))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **metrics}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(finite(record), allow_nan=False) + "\n")
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
