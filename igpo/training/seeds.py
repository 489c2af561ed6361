"""The seeds of training's randomness: one generator per (seed, step, rank, stream), derived
instead of carried, so a resumed run or another process count draws exactly what an
uninterrupted run would; the training seed's range; the launch's process count."""

from __future__ import annotations

import os
from enum import IntEnum
from typing import Any

import torch

from igpo.errors import InvalidSetting
from igpo.training.settings import TrainingError

SEED_STRIDE = 1_000_003
"""Mixes (seed, step, rank) into one generator seed; a prime keeps streams apart."""


class Stream(IntEnum):
    """The named random streams of a training step (step_seed's `stream`): every source of
    randomness draws from its own, so adding draws to one never shifts another."""

    STEP = 0
    """The step's generator: data order within the step, rollouts and hints."""
    DROPOUT = 1
    """torch's global RNG (dropout) within a step."""
    SFT_CANVAS = 2
    """SFT: which canvas length the step trains on."""
    ESTIMATOR = 3
    """RL: one seed per prompt group for the log-prob estimator's random masks."""
    ADAPTER_INIT = 7
    """New LoRA weights (drawn once, at step 0)."""


STREAMS = 8
"""Streams per (seed, step, rank): Stream's values lie below it."""


def per_process(total: int, processes: int, setting: str, what: str) -> int:
    """Each process's share of a per-step count that spans every process (`setting`, counting
    `what`); refused, naming both numbers, when `processes` does not divide it."""
    if total % processes:
        raise TrainingError(
            f"{setting}={total} does not divide over {processes} processes (it counts {what} per step over all of them)"
        )
    return total // processes


def process_count() -> int:
    """Processes of this launch: WORLD_SIZE, which torchrun / accelerate launch set (1 alone).
    Read from the environment, not accelerate's state, which the session must make first."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def step_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """The seed of one training step's randomness on one process.

    Deriving it from (seed, step, rank) instead of carrying generator state makes a resumed run
    draw exactly what an uninterrupted one would, on any number of processes. `stream` must lie
    in [0, STREAMS): a larger one would reuse another (step, rank)'s seed.
    """
    if not 0 <= stream < STREAMS or not 0 <= rank < SEED_STRIDE or not 0 <= step < SEED_STRIDE:
        raise InvalidSetting(
            f"seed stream {stream}, step {step} or rank {rank} out of range "
            f"(streams 0..{STREAMS - 1}, steps and ranks below {SEED_STRIDE})"
        )
    return ((seed * SEED_STRIDE + step) * SEED_STRIDE + rank) * STREAMS + stream


MAX_SEED = 2**63 - 1
"""The largest training `seed` (torch.Generator.manual_seed takes it; the data order is drawn
from it directly), and the modulus that brings step_seed's values into that range."""


def check_seed(seed: Any) -> None:
    """Refuse a training `seed` the generators would reject (one line naming it)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise TrainingError(f"seed must be an integer from 0 to {MAX_SEED} (2**63 - 1), got {seed!r}")


def torch_seed(seed: int, step: int, rank: int = 0, stream: int = 0) -> int:
    """step_seed in the range torch.manual_seed takes (unchanged for seeds below ~2 million; a
    larger one would overflow torch's 64 bits)."""
    return step_seed(seed, step, rank, stream) % MAX_SEED


def step_generator(seed: int, step: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(torch_seed(seed, step, rank, stream))


MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
"""Where an MPI launcher states its process count (accelerate's CPU launch with a hostfile)."""


def lone_cpu_launch(environ: dict[str, str] | None = None) -> str | None:
    """What to say when `accelerate launch --cpu --num_processes N` (or a config with use_cpu
    and N processes) started one process: without an MPI hostfile its simple launcher runs the
    script once, setting only the rendezvous address. None for any other launch."""
    env = os.environ if environ is None else environ
    asked = env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env
    if not asked or "WORLD_SIZE" in env or any(v in env for v in MPI_SIZE_VARS):
        return None
    return (
        "accelerate launch --cpu started ONE process (its CPU launcher needs an MPI hostfile for more): this runs "
        "on 1 process; for N CPU processes use --multi_gpu --num_processes N (gloo) or igpo ... --processes N"
    )
