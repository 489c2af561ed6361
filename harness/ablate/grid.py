"""Ablation grids: the YAML spec of cells x seeds (`GridSpec`), its jobs, and each job's RLConfig.

Shared by the runner (harness/ablate/run.py) and the reports (harness/ablate/report.py,
harness/ablate/claims.py), so neither imports the other's module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError

GRID_DIR = Path(__file__).resolve().parent / "grids"
"""Shipped grids (package data: harness/ablate/grids/*.yaml)."""
DEFAULT_GRID = "paper"
QUICK_GRID = "quick"
DEFAULT_OUT_ROOT = Path("runs/ablate")
DEFAULT_RESULTS = Path("results/ablations")
LAUNCHERS = ("local", "slurm")
DONE_FILE = "DONE"
BASE_DIR = "base"
"""Under the grid's out folder: the start model's evaluation, shared by every series."""
SERIES_PREFIX = "series-"
"""run_series writes `<eval out>/series-<train folder name>`."""
STEP_DIR = "step-{:06d}"
"""run_series' folder name of one evaluated step; step 0 is the start model."""
SBATCH_FILE = "sweep.sbatch"
SLURM_LOGS = "slurm"
"""Under the grid's out folder: one log per array task (created before submission)."""
CELL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------- grid spec
@dataclass
class CellSpec:
    """One grid cell: how its training differs from the grid's base recipe."""

    overrides: list[str] = field(default_factory=list)
    """RLConfig `key=value` overrides, applied after the grid's own overrides."""
    seeds: list[int] | None = None
    """Training seeds of this cell; None: the grid's seeds."""
    description: str = ""
    """One line for the report."""


@dataclass
class EvalSettings:
    """How every checkpoint is evaluated (the same for every cell, so curves compare)."""

    tasks: list[str] = field(default_factory=lambda: ["arith"])
    protocol: str = "igpo"
    """Protocol name or YAML file; `igpo` decodes arith with gen 48, block 16, steps 24."""
    limit: int | None = None
    """First N problems of each task; None: all (arith: 300, 50 per level)."""
    every: int = 1
    """Evaluate every K-th checkpoint (the last always) plus the start model as step 0."""
    batch_size: int = 8
    device: str | None = None
    dtype: str | None = None


@dataclass
class SlurmSettings:
    """Resources of the sbatch array written by `--launcher slurm` (one task per job)."""

    time: str = "04:00:00"
    cpus_per_task: int = 8
    gpus_per_task: int = 1
    mem: str | None = "32G"
    partition: str | None = None
    account: str | None = None
    extra: list[str] = field(default_factory=list)
    """More `#SBATCH` options, e.g. `--qos=high`."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before the command, e.g. `source .venv/bin/activate`."""
    command: str = "igpo"
    """How the cluster nodes call this CLI."""


@dataclass
class GridSpec:
    """An ablation grid: base recipe, cells, seeds, evaluation and where things go."""

    name: str = ""
    """Report and folder name; default: the YAML file's stem."""
    description: str = ""
    recipe: str = "igpo_tiny"
    """Base RL recipe (shipped name or YAML path); every cell starts from its model.path."""
    overrides: list[str] = field(default_factory=list)
    """Overrides applied to every cell, before the cell's own."""
    seeds: list[int] = field(default_factory=lambda: [0])
    cells: dict[str, CellSpec] = field(default_factory=dict)
    """Cell name -> spec; in YAML a cell is a list of overrides or a mapping (CellSpec keys)."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    out: str | None = None
    """Training and evaluation folder; default runs/ablate/<name>."""
    results: str | None = None
    """Report folder; default results/ablations."""
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    source: str = field(default="", init=False)
    """The YAML file this grid came from (set by load_grid; the sbatch script calls it)."""

    def seeds_of(self, cell: str) -> list[int]:
        own = self.cells[cell].seeds
        return list(own if own is not None else self.seeds)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else DEFAULT_OUT_ROOT / self.name

    @property
    def results_dir(self) -> Path:
        return Path(self.results) if self.results else DEFAULT_RESULTS


def resolve_grid(name_or_path: str) -> Path:
    """A grid file: an existing path, or the name of a shipped grid (harness/ablate/grids/<name>.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = GRID_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in GRID_DIR.glob("*.yaml")))
    raise UserError(f"grid not found: {name_or_path} (shipped grids: {names})")


def load_grid(name_or_path: str) -> GridSpec:
    """Read and check a grid YAML; unknown keys and malformed cells raise one-line errors."""
    from igpo.config import ConfigError, build, read_yaml_mapping

    file = resolve_grid(name_or_path)
    data = read_yaml_mapping(file, "grid")
    raw_cells = data.pop("cells", None)
    try:
        spec = build(GridSpec, data)
        spec.cells = _parse_cells(raw_cells)
    except ConfigError as err:
        raise UserError(f"grid {file}: {err}") from None
    spec.name = spec.name or file.stem
    spec.source = str(file.resolve())
    _check_grid(spec, file)
    return spec


def _parse_cells(raw: Any) -> dict[str, CellSpec]:
    """Cells from YAML: `name: [overrides]`, `name: null` or `name: {overrides, seeds, ...}`."""
    from igpo.config import ConfigError, build

    if not isinstance(raw, dict) or not raw:
        raise ConfigError("cells: expected a non-empty mapping of cell name -> overrides")
    cells = {}
    for name, value in raw.items():
        where = f"cells.{name}"
        if value is None or isinstance(value, list):
            value = {"overrides": value or []}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a list of overrides or a mapping")
        cells[str(name)] = build(CellSpec, value, where)
    return cells


def _check_grid(spec: GridSpec, file: Path) -> None:
    problems = []
    if not CELL_NAME.match(spec.name):
        problems.append(f"name {spec.name!r} must be letters, digits, '_', '.' or '-'")
    for name, cell in spec.cells.items():
        if not CELL_NAME.match(name):
            problems.append(f"cell name {name!r} must be letters, digits, '_', '.' or '-'")
        bad = [o for o in cell.overrides if "=" not in o]
        if bad:
            problems.append(f"cells.{name}: override {bad[0]!r} is not key=value")
    for where, seeds in [("seeds", spec.seeds)] + [(f"cells.{n}.seeds", c.seeds) for n, c in spec.cells.items()]:
        if seeds is not None and (not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0):
            problems.append(f"{where} must be distinct non-negative integers")
    if not spec.eval.tasks:
        problems.append("eval.tasks is empty")
    if spec.eval.every < 1:
        problems.append(f"eval.every must be >= 1, got {spec.eval.every}")
    if spec.eval.limit is not None and spec.eval.limit < 1:
        problems.append(f"eval.limit must be positive, got {spec.eval.limit}")
    if problems:
        raise UserError(f"grid {file}: {problems[0]}")


# ---------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One training run of the grid: a cell under one seed."""

    index: int
    """Position in the grid's job list (the slurm array index)."""
    cell: str
    seed: int
    overrides: list[str]
    """Every override applied to the base recipe, in order (seed last)."""
    folder: Path

    @property
    def series(self) -> Path:
        return self.folder / f"{SERIES_PREFIX}{self.folder.name}"

    @property
    def done_file(self) -> Path:
        return self.folder / DONE_FILE

    @property
    def label(self) -> str:
        return f"{self.cell} seed {self.seed}"


def grid_jobs(spec: GridSpec, extra: Iterable[str] = ()) -> list[Job]:
    """Every (cell, seed) in grid order; `extra` overrides (the CLI's) apply to every cell."""
    jobs = []
    for cell_name, cell in spec.cells.items():
        for seed in spec.seeds_of(cell_name):
            overrides = [*spec.overrides, *cell.overrides, *extra, f"seed={seed}"]
            folder = spec.out_dir / cell_name / f"seed{seed}"
            jobs.append(Job(len(jobs), cell_name, seed, overrides, folder))
    return jobs


def job_config(spec: GridSpec, job: Job):
    """The RLConfig of one job: base recipe + grid + cell + extra overrides + seed."""
    from igpo.config import load_config, resolve_recipe
    from igpo.training.rl_config import RLConfig

    return load_config(RLConfig, resolve_recipe(spec.recipe), job.overrides)


def grid_names(spec: GridSpec) -> tuple[str, ...]:
    """What the grid's run folder holds: a folder per cell, the start model's evaluation, logs."""
    return (*spec.cells, BASE_DIR, "logs", SLURM_LOGS, SBATCH_FILE)


def check_grid_folders(spec: GridSpec, configs: list) -> None:
    """The grid's run and report folders are no input of its jobs (`configs`), no protected
    folder, no other run's."""
    from igpo.outputs import OutputRefused, check_folder, check_output, marked_parent
    from igpo.training.run_folder import config_inputs

    inputs = [path for cfg in configs for path in config_inputs(cfg)]

    check_output(spec.out_dir, inputs)
    check_output(spec.results_dir, inputs, flag="--results")
    check_folder(spec.out_dir, kind="ablate", known=grid_names(spec))
    owner = marked_parent(spec.results_dir.resolve())
    if owner is not None:
        raise OutputRefused(f"--results {spec.results_dir} lies in the run folder {owner}; give a report folder")


def claim_grid_folder(spec: GridSpec) -> None:
    """Mark the grid's run folder as igpo's (igpo.outputs), before any job writes there."""
    from igpo.outputs import claim_folder

    claim_folder(spec.out_dir, kind="ablate", known=grid_names(spec))
