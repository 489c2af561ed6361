"""The `igpo` command line. Heavy imports (torch, lm-eval) happen inside commands, never here;
an option used by several commands, or written over several lines, is an `Annotated` alias."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from harness.errors import OneLineUsageErrors, UserError, friendly
from harness.eval.flags import decoding_flags
from igpo.atomic import check_output_path
from igpo.errors import MissingInput
from igpo.outputs import check_output, model_input

if TYPE_CHECKING:
    from harness.check import CheckSettings
    from igpo.decoding import DecodeOverrides

app = typer.Typer(
    name="igpo",
    cls=OneLineUsageErrors,  # `--limit abc`: one `error:` line, exit 2
    help="Train IGPO checkpoints of masked diffusion LMs and benchmark them in lm-evaluation-harness.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
bench_app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Speed and memory benchmarks; each writes a table under results/bench/.",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")

OVERWRITE_HELP = (
    "Replace an output file igpo did not write, or one changed since it did (a symbolic link is replaced, "
    "never written through); igpo's own earlier output is replaced without it."
)
Overwrite = Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)]
BenchModelOpt = Annotated[str | None, typer.Option(help="Model folder or Hub id; default: a random tiny model.")]
BenchOutOpt = Annotated[Path, typer.Option(help="Markdown file to write.")]

MAX_DROP_POINTS = 1.0
"""`--max-drop` of igpo check and igpo report: harness.check's DEFAULT_MAX_DROP_POINTS, restated
because importing harness.check here would load numpy for every command (a test keeps them equal)."""


def _print_version(value: bool) -> None:
    """--version: print igpo's version and exit before any command is parsed (an eager option)."""
    if value:
        from importlib.metadata import version as pkg_version

        typer.echo(f"igpo {pkg_version('igpo')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also show lm-eval's INFO logs and git's messages.")
    ] = False,
) -> None:
    """Train IGPO checkpoints of masked diffusion LMs and benchmark them in lm-evaluation-harness."""
    if verbose:
        import os

        from igpo.progress import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"  # read where the libraries are set up (and by subprocesses)


@bench_app.command("decode")
@friendly
def bench_decode(
    model: BenchModelOpt = None,
    gen_length: Annotated[int, typer.Option(help="Completion length.")] = 256,
    block_length: Annotated[int, typer.Option(help="Block length.")] = 32,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Prompts decoded together.")] = 8,
    repeats: Annotated[int, typer.Option(help="Timed repetitions (the median is reported).")] = 3,
    out: BenchOutOpt = Path("results/bench/decode.md"),
    overwrite: Overwrite = False,
    fast: Annotated[
        bool, typer.Option(help="Also measure KV caches and parallel rules against exact decoding.")
    ] = True,
    problems: Annotated[
        str, typer.Option(help="igpo_arith problems per fast length (256,512), comma-separated.")
    ] = "300,300",
    data_dir: Annotated[
        Path | None, typer.Option(help="Offline data folder: also decode a GSM8K subset in part 2.")
    ] = None,
    gsm8k: Annotated[int, typer.Option(help="GSM8K test problems per mode (with --data-dir).")] = 16,
) -> None:
    """Decoder throughput (tokens/s, NFE, peak memory), and fast decoding against exact decoding.

    Part 1 times exact decoding (--model, else a random tiny model); part 2 runs every KV-cache mode
    and parallel rule against exact decoding (one token per step; the d1 two-per-step schedule is a
    mode; the dual cache also refreshed every 2 and 4 passes and every 4, 8, 16 committed tokens) at gen_length 256 and 512 on
    --model (else the embedded testbed): speed-up, identical tokens, igpo_arith accuracy with
    McNemar p (and GSM8K with --data-dir).
    """
    from harness.bench.decode import DecodeBenchConfig, run

    _check_outputs(("--out", out, False), inputs=[model_input(model), data_dir], overwrite=overwrite)
    _positive(gen_length=gen_length, block_length=block_length, steps=steps, batch_size=batch_size, repeats=repeats)
    try:
        counts = [int(v) for v in problems.split(",")]
    except ValueError:
        counts = []
    if len(counts) != 2 or min(counts) < 1:
        raise UserError(f"--problems needs two positive counts (gen_length 256 and 512), got {problems!r}")
    if gsm8k < 0:
        raise UserError(f"--gsm8k must be >= 0, got {gsm8k}")
    if data_dir is not None:
        from igpo.data import GSM8K_TEST

        if not (data_dir / GSM8K_TEST).is_file():
            raise UserError(f"--data-dir {data_dir}: no {GSM8K_TEST.as_posix()} there")
    run(
        DecodeBenchConfig(
            model=model,
            gen_length=gen_length,
            block_length=block_length,
            steps=steps,
            batch_size=batch_size,
            repeats=repeats,
            out=out,
            fast=fast,
            fast_problems=counts,
            data_dir=data_dir,
            gsm8k_problems=gsm8k,
        )
    )


@bench_app.command("eval")
@friendly
def bench_eval(
    model: BenchModelOpt = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Offline data folder (default $IGPO_DATA_DIR, else ../shared/data).")
    ] = None,
    limit: Annotated[int, typer.Option(help="GSM8K problems in the timed igpo eval run.")] = 50,
    out: BenchOutOpt = Path("results/bench/eval.md"),
    overwrite: Overwrite = False,
) -> None:
    """Harness overhead per sample (igpo eval minus forward passes) and scoring throughput."""
    from harness.bench.eval import EvalBenchConfig, run

    _check_outputs(("--out", out, False), inputs=[model_input(model), data_dir], overwrite=overwrite)
    _positive(limit=limit)
    run(EvalBenchConfig(model=model, data_dir=data_dir, limit=limit, out=out))


@bench_app.command("train")
@friendly
def bench_train(
    model: Annotated[
        str | None, typer.Option(help="Model folder; default: the recipes' own model.path (testbed-sign).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Training steps per trainer and rollout mode (the first is dropped).")] = 3,
    out: BenchOutOpt = Path("results/bench/train.md"),
    overwrite: Overwrite = False,
) -> None:
    """GRPO vs IGPO step time, exact vs fast rollouts, split into generation / hinting / scoring / log-prob / backward."""
    from harness.bench.train import TrainBenchConfig, run

    _check_outputs(("--out", out, False), inputs=[model_input(model)], overwrite=overwrite)
    _positive(steps=steps)
    run(TrainBenchConfig(model=model, steps=steps, out=out))


@bench_app.command("scale")
@friendly
def bench_scale(
    processes: Annotated[int, typer.Option(min=2, max=64, help="Processes of the scaled runs (against one).")] = 2,
    out: BenchOutOpt = Path("results/bench/scale.md"),
    overwrite: Overwrite = False,
) -> None:
    """The same eval and 2-step RL run on 1 and N processes: checked equal, timed, speed-up."""
    from harness.bench.scale import ScaleBenchConfig, run

    _check_outputs(("--out", out, False), overwrite=overwrite)
    run(ScaleBenchConfig(processes=processes, out=out))


@bench_app.command("ops")
@friendly
def bench_ops(
    out: BenchOutOpt = Path("results/bench/ops.md"),
    overwrite: Overwrite = False,
) -> None:
    """Eager aten ops per layer and per decoding pass, and host synchronisations (CPU, seconds)."""
    from harness.bench.ops import OpsBenchConfig, run

    _check_outputs(("--out", out, False), overwrite=overwrite)
    typer.echo(run(OpsBenchConfig(out=out)))


@bench_app.command("gpu")
@friendly
def bench_gpu(
    shape: Annotated[
        str, typer.Option(help="llada8b (the GPU check; refuses without a GPU) or tiny (seconds on a CPU).")
    ] = "llada8b",
    peer: Annotated[
        Path | None,
        typer.Option(help="Fast-dLLM's llada/ folder for the side-by-side rows (never committed; rows say if absent)."),
    ] = Path("peers/fast-dllm/llada"),
    budget: Annotated[
        float, typer.Option(help="Seconds after which rows not yet started are listed as skipped.")
    ] = 210.0,
    out: Annotated[Path, typer.Option(help="Markdown file, rewritten after every row.")] = Path("results/bench/gpu.md"),
    overwrite: Overwrite = False,
) -> None:
    """LLaDA-8B-shaped random model in bf16: decoding (exact, dual cache, CUDA graphs) next to its floors,
    bf16 numerics, the published code side by side, and one LoRA RL step; each row written as measured."""
    from harness.bench.gpu import config_for, run

    _check_outputs(("--out", out, False), inputs=[peer], overwrite=overwrite)
    cfg = config_for(shape, out=out, peer=peer, budget_s=budget)
    run(cfg, echo=typer.echo)


def _check_outputs(
    *outputs: tuple[str, Path | None, bool], inputs: list | tuple = (), overwrite: bool = False, claim: bool = True
) -> None:
    """(flag, path or None, is a folder) for each output: refused before any work when it cannot
    be written (igpo.atomic.check_output_path), would change an input, the working or home
    directory or another run (igpo.outputs.check_output), or (`claim`) would replace a file igpo
    did not write without --overwrite (igpo.owned); output files are then claimed, so igpo knows
    them as its own once the command ends."""
    from igpo.owned import check_replace, claim_file

    files = []
    for flag, path, folder in outputs:
        if path is not None:
            check_output_path(path, flag, folder=folder)
            check_output(path, inputs, flag=flag, folder=folder)
            files += [] if folder else [(flag, path)]
    if not claim:  # the command checks and claims its files itself (rewrite-traces)
        return
    for flag, path in files:  # all checked before any is claimed
        check_replace(path, flag=flag, overwrite=overwrite)
    for _, path in files:
        claim_file(path)


def _positive(**counts: int) -> None:
    """Each count option must be >= 1 (named as its --flag)."""
    for name, value in counts.items():
        if value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]


def _task_names(values: list[str] | None) -> list[str]:
    """--tasks as names; given but empty (`--tasks ''`, `--tasks ,`) is refused rather than read
    as not given (which would run the default tasks)."""
    names = _split(values)
    if values is not None and not names:
        raise UserError(f"--tasks {' '.join(values)!r} names no task: name at least one (e.g. gsm8k)")
    return names


# ---------------------------------------------------------------- options shared by the model commands
BatchSizeOpt = Annotated[int, typer.Option(help="Prompts decoded together.")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ... (default: cuda if available).")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, bfloat16 or float16 (default: bf16 on GPU, fp32 on CPU).")]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(help="Allow a non-native model's own modeling code.")]

# ---------------------------------------------------------------- igpo eval's options
EvalModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model folder, Hub id, or an adapter folder (on the base its adapter_config.json names); "
        "default: the embedded testbed model.",
    ),
]
EvalTasksOpt = Annotated[
    list[str] | None,
    typer.Option("--tasks", "-t", help="Comma-separated: gsm8k, math500, amc, amc23, math (group), arith."),
]
ProtocolOpt = Annotated[
    str,
    typer.Option(
        help="Protocol name or a protocol YAML file. igpo: IGPO Table 1 (512 tokens, block 32, 3 seeds, "
        "AMC avg@16); igpo_fast: igpo with dual cache + threshold 0.9; d1: lengths 128/256/512, block 32; "
        "llada: LLaDA-8B-Instruct's settings (GSM8K 256/block 8, MATH500 512/block 64, steps = length); "
        "llada15: LLaDA-1.5's (GSM8K 256/block 16, MATH500 1024/block 128)."
    ),
]
AdapterOpt = Annotated[
    str | None,
    typer.Option(
        help="LoRA adapter folder, applied to the base its adapter_config.json records "
        "(--model must be that base unless --allow-base-mismatch)."
    ),
]
AllowBaseMismatchOpt = Annotated[
    bool, typer.Option("--allow-base-mismatch", help="Apply --adapter to a --model other than its recorded base.")
]
LimitOpt = Annotated[int | None, typer.Option(help="Evaluate only the first N problems of each task.")]
SeedsOpt = Annotated[str | None, typer.Option(help="Comma-separated seeds (default: the protocol's).")]
EvalDataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Offline data folder (layout of shared/data); default $IGPO_DATA_DIR, else the Hub."),
]
RunsOpt = Annotated[Path, typer.Option(help="Folder holding run folders.")]
NameOpt = Annotated[str | None, typer.Option(help="Run folder name (default: model-adapter-protocol).")]
LabelOpt = Annotated[str | None, typer.Option(help="Row name in leaderboards.")]
LeaderboardOpt = Annotated[
    Path | None,
    typer.Option(
        help="Leaderboard markdown refreshed after the run (default: results/leaderboard.md for the default --out, "
        "else <out>/leaderboard.md)."
    ),
]
NoLeaderboardOpt = Annotated[bool, typer.Option("--no-leaderboard", help="Do not refresh the leaderboard file.")]
TrainRunOpt = Annotated[
    Path | None, typer.Option("--run", help="A training run folder: evaluate its checkpoints (accuracy vs step).")
]
EveryOpt = Annotated[int, typer.Option(help="With --run: every K-th checkpoint (the last always).")]
EvalHtmlOpt = Annotated[Path | None, typer.Option(help="Also write the run's HTML report (igpo report) here.")]
EvalOverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help=OVERWRITE_HELP + " Files only (--leaderboard, --html): never a run folder."),
]


@app.command("eval")
@friendly
@decoding_flags
def eval_cmd(
    model: EvalModelOpt = None,
    tasks: EvalTasksOpt = None,
    protocol: ProtocolOpt = "igpo",
    adapter: AdapterOpt = None,
    allow_base_mismatch: AllowBaseMismatchOpt = False,
    limit: LimitOpt = None,
    seeds: SeedsOpt = None,
    data_dir: EvalDataDirOpt = None,
    out: RunsOpt = Path("runs/eval"),
    name: NameOpt = None,
    label: LabelOpt = None,
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    decoding: DecodeOverrides = None,  # one --flag per DecodeConfig field (harness.eval.flags)
    leaderboard: LeaderboardOpt = None,
    no_leaderboard: NoLeaderboardOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    run: TrainRunOpt = None,
    every: EveryOpt = 1,
    html: EvalHtmlOpt = None,
    overwrite: EvalOverwriteOpt = False,
) -> None:
    """Evaluate a dLLM on GSM8K / MATH500 / AMC with diffusion decoding inside lm-eval.

    A decoding flag (--gen-length, --steps, ...) overrides the protocol's setting for every task."""
    from harness.eval.run import EvalRequest, run_eval, run_series

    inputs = [model_input(model), adapter, data_dir, run, protocol]
    board = None if no_leaderboard else leaderboard or _leaderboard_for(out)
    _check_outputs(
        ("--out", out, True),
        ("--html", html, False),
        ("--leaderboard", board, False),
        inputs=inputs,
        overwrite=overwrite,
    )
    check_output(out, inputs, nested=True)  # a folder of runs, not inside another run
    if model is None and run is None and adapter is None:  # an --adapter brings its recorded base
        model, tasks = _testbed_model(), tasks or ["arith"]
    request = EvalRequest(
        model=model or "",
        tasks=_task_names(tasks) or ["gsm8k", "math500", "amc"],
        protocol=protocol,
        adapter=adapter,
        limit=limit,
        seeds=_seed_list(seeds),
        data_dir=data_dir,
        out=out,
        name=name,
        label=label,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        overrides=decoding,
        leaderboard=board,
        trust_remote_code=trust_remote_code,
        allow_base_mismatch=allow_base_mismatch,
    )
    if run is not None:
        made = [run_series(request, run, every), run]
    else:
        path = run_eval(request)
        made = [path if path.is_dir() else path.parent]
    _report_hint(made, html)


def _testbed_model() -> str:
    """The embedded testbed, the model of an `igpo eval` given none."""
    from igpo.models.loading import EMBEDDED_MODELS

    if not (EMBEDDED_MODELS["testbed"] / "config.json").is_file():
        raise UserError("no --model given and the embedded testbed model is not built (make testbed-model)")
    return "testbed"


def _seed_list(seeds: str | None) -> list[int] | None:
    """--seeds as integers (None: not given, the protocol's); the plan checks them
    (harness.eval.protocols.check_seeds)."""
    if seeds is None:
        return None
    try:
        return [int(s) for s in _split([seeds])]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from None


def _report_hint(
    paths: list[Path],
    html: Path | None,
    baseline: Path | None = None,
    err: bool = False,
    settings: CheckSettings | None = None,
) -> None:
    """Write the HTML report of what a command made (--html; a check's page decides its verdict
    with the check's settings), or say how to."""
    if html is not None:
        from harness.report import write_report

        typer.echo(f"report: {write_report(paths, html, baseline=baseline, settings=settings)}", err=err)
        return
    args = " ".join(str(p) for p in paths) + (f" --baseline {baseline}" if baseline else "")
    if settings is not None:  # the page's verdict as the check's
        from harness.check import POINTS

        if settings.max_drop * POINTS != MAX_DROP_POINTS:
            args += f" --max-drop {settings.max_drop * POINTS:g}"
    typer.echo(f"HTML report: igpo report {args} --out report.html", err=err)


def _leaderboard_for(out: Path) -> Path:
    """The committed leaderboard reflects the default runs folder; other folders keep their own."""
    from harness.eval.run import DEFAULT_LEADERBOARD, DEFAULT_OUT

    return DEFAULT_LEADERBOARD if Path(out) == DEFAULT_OUT else Path(out) / "leaderboard.md"


@app.command("leaderboard")
@friendly
def leaderboard_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders or results.json files (folders are searched for runs).")
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="markdown, github, latex or csv.")] = "markdown",
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Reference numbers (YAML); default: the published rows shipped with igpo (harness/eval/reference.yaml)."
        ),
    ] = None,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="Leave out published reference rows.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the table to this file.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """One row per model/checkpoint, a column per task, 95% intervals, published rows marked."""
    from harness.eval.leaderboard import DEFAULT_REFERENCE, discover_runs, write_leaderboard
    from harness.eval.results import RESULTS_FILE

    _check_outputs(("--out", out, False), inputs=[*runs, reference], overwrite=overwrite)
    paths: list[Path] = []
    for r in runs:
        if r.is_dir() and not (r / RESULTS_FILE).is_file():
            found = discover_runs(r)
            if not found:
                raise MissingInput(f"no runs (results.json) under {r}")
            paths.extend(found)
        else:
            paths.append(r)
    if reference is None and not no_reference:
        reference = DEFAULT_REFERENCE
    typer.echo(write_leaderboard(paths, out, fmt, None if no_reference else reference))


@app.command("report")
@friendly
def report_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Run folders (or folders of runs), training folders, `igpo eval --run` series folders, ablation results folders."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    overwrite: Overwrite = False,
    baseline: Annotated[
        Path | None, typer.Option("--baseline", "-b", help="Run to compare every other run against (flipped items).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Page title.")] = None,
    max_drop: Annotated[
        float,
        typer.Option(
            help="With --baseline: the verdict is pass only if a drop larger than this many points is ruled out (as igpo check)."
        ),
    ] = MAX_DROP_POINTS,
) -> None:
    """One self-contained HTML page (works offline from disk): with --baseline it opens on the
    gate's verdict (igpo check's: pass, regression or cannot-rule-out), a forest plot of each
    task's difference and the flipped items; then leaderboard, runs, sample browser, checkpoint
    series, training curves, ablations."""
    from harness.report import write_report

    _check_outputs(("--out", out, False), inputs=[*paths, baseline], overwrite=overwrite)
    settings = None
    if baseline is not None:
        from harness.check import POINTS, CheckSettings

        settings = CheckSettings(max_drop=max_drop / POINTS)
    path = write_report(paths, out, baseline=baseline, title=title, settings=settings)
    typer.echo(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")


@app.command(
    "lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
)
def lm_eval_cmd(ctx: typer.Context) -> None:
    """lm-eval's own CLI with the dllm model and igpo tasks registered: igpo lm-eval -- ARGS."""
    from harness.lmeval.cli import main as lm_eval_main

    lm_eval_main(list(ctx.args))


@app.command("ablate")
@friendly
def ablate_cmd(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="RLConfig overrides for every cell, e.g. model.path=DIR.")
    ] = None,
    grid: Annotated[
        str | None,
        typer.Option(help="Shipped grid name (paper, lambda, rollouts, quick) or a grid YAML; default paper."),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="The 2-cell, 1-seed, 2-step smoke grid.")] = False,
    launcher: Annotated[str, typer.Option(help="local: run here; slurm: write an sbatch array job.")] = "local",
    only_index: Annotated[int | None, typer.Option(help="Run only job N of the grid (a slurm array task).")] = None,
    aggregate_only: Annotated[
        bool, typer.Option("--aggregate-only", help="Only write the report from finished jobs.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/ablate/<grid>).")] = None,
    results: Annotated[Path | None, typer.Option(help="Report folder (default results/ablations).")] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", help="Local launcher: run N jobs at once (subprocesses, torch threads split between them)."
        ),
    ] = 1,
    html: Annotated[Path | None, typer.Option(help="Also write the grid's HTML report (igpo report) here.")] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help=OVERWRITE_HELP + " Report files in --results and --html only: never a training run.",
        ),
    ] = False,
) -> None:
    """Ablation grid (cells x seeds): train each from the same start, evaluate every checkpoint, report."""
    from harness.ablate.run import ablate

    models = [model_input(o.split("=", 1)[1]) for o in overrides or [] if o.startswith("model.") and "=" in o]
    inputs = [*models, grid if grid and Path(grid).exists() else None]
    _check_outputs(
        ("--out", out, True), ("--results", results, True), ("--html", html, False), inputs=inputs, overwrite=overwrite
    )
    if only_index is None:  # one job of the grid writes no report
        _claim_grid_reports(grid, quick, results, overwrite)
    made = ablate(
        grid=grid,
        quick=quick,
        launcher=launcher,
        only_index=only_index,
        aggregate_only=aggregate_only,
        out=out,
        results=results,
        overrides=overrides,
        workers=jobs,
    )
    if made.suffix == ".md":  # the grid's report (not a slurm script or one job's marker)
        _report_hint([made.parent], html)


def _claim_grid_reports(grid: str | None, quick: bool, results: Path | None, overwrite: bool) -> None:
    """Refuse report files of the grid in its results folder that igpo did not write (its
    <name>.md, .json, plots, per-run metrics, claims) unless --overwrite; claim those it writes."""
    from harness.ablate.grid import DEFAULT_GRID, QUICK_GRID, load_grid
    from igpo.owned import claim_tree

    spec = load_grid(QUICK_GRID if quick else grid or DEFAULT_GRID)
    folder = results if results is not None else spec.results_dir
    names = [f"{spec.name}.*", f"{spec.name}_*", "claims.json", "claims.md"]
    claim_tree(folder, names, flag="--results", overwrite=overwrite)


CandidateArg = Annotated[
    str,
    typer.Argument(
        help="A run folder (results.json), or a model folder / Hub id / adapter folder to evaluate with the baseline's settings."
    ),
]
BaselineOpt = Annotated[Path, typer.Option("--baseline", "-b", help="Baseline run folder (or its results.json).")]
CheckTasksOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--tasks", "-t", help="Compare only these tasks (comma-separated keys or names: gsm8k, igpo_gsm8k@256)."
    ),
]
CheckMaxDropOpt = Annotated[
    float,
    typer.Option(help="Pass only if a drop larger than this many points is ruled out (else exit 1: cannot-rule-out)."),
]
AlphaOpt = Annotated[float, typer.Option(help="Significance level of the paired test (interval: 1 - alpha).")]
AllowMismatchOpt = Annotated[
    bool, typer.Option("--allow-mismatch", help="Compare even if protocol, decoding, version, data or items differ.")
]
ExactOpt = Annotated[
    bool, typer.Option("--exact", help="Fail on any changed item, either direction (CI of decoding/scoring code).")
]
UpdateBaselineOpt = Annotated[
    bool, typer.Option("--update-baseline", help="Write the candidate run as the new baseline (deliberately; exit 0).")
]
SummaryOpt = Annotated[
    Path | None, typer.Option(help="Also write the markdown report here (CI job summary, PR comment).")
]
JsonOutOpt = Annotated[Path | None, typer.Option("--json", help="Write the machine-readable report here.")]
CandidateOutOpt = Annotated[
    Path | None, typer.Option(help="Run folder for an evaluated candidate (default runs/check/<name>).")
]
BaseModelOpt = Annotated[
    str | None,
    typer.Option(help="Base model under an adapter candidate (default: the checkpoint's, else the baseline's)."),
]
CheckProtocolOpt = Annotated[
    str | None, typer.Option(help="The baseline's protocol YAML when it is not built in (its hash must match).")
]
CheckDataDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Offline data folder for an evaluated candidate (default: the baseline's, $IGPO_DATA_DIR, else the Hub)."
    ),
]
CheckHtmlOpt = Annotated[
    Path | None, typer.Option(help="Also write the HTML report: the comparison and its flipped items.")
]
CheckOverwriteOpt = Annotated[
    bool,
    typer.Option("--overwrite", help=OVERWRITE_HELP + " Files only (--summary, --json, --html): never a run folder."),
]


@app.command("check")
@friendly
def check_cmd(
    candidate: CandidateArg,
    baseline: BaselineOpt,
    tasks: CheckTasksOpt = None,
    max_drop: CheckMaxDropOpt = MAX_DROP_POINTS,
    alpha: AlphaOpt = 0.05,
    allow_mismatch: AllowMismatchOpt = False,
    exact: ExactOpt = False,
    update_baseline: UpdateBaselineOpt = False,
    summary: SummaryOpt = None,
    json_out: JsonOutOpt = None,
    out: CandidateOutOpt = None,
    base_model: BaseModelOpt = None,
    protocol: CheckProtocolOpt = None,
    data_dir: CheckDataDirOpt = None,
    batch_size: BatchSizeOpt = 8,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    trust_remote_code: TrustRemoteCodeOpt = False,
    html: CheckHtmlOpt = None,
    overwrite: CheckOverwriteOpt = False,
) -> None:
    """Paired regression test of a candidate against a baseline run.

    Exit 0 pass: no significant drop, and every task's interval rules out a drop beyond --max-drop.
    Exit 1 regression (a significant drop) or cannot-rule-out (no significant drop, but one beyond
    --max-drop not ruled out; the report says how many items would). Exit 2 error. --exact: exit 1
    if any item changed, else 0.
    """
    from harness.check import POINTS, CandidateModel, CheckRequest, CheckSettings, run_check

    _check_outputs(
        ("--summary", summary, False),
        ("--json", json_out, False),
        ("--out", out, True),
        ("--html", html, False),
        inputs=[candidate, baseline, protocol, data_dir, model_input(base_model)],
        overwrite=overwrite,
    )
    settings = CheckSettings(
        alpha=alpha, max_drop=max_drop / POINTS, allow_mismatch=allow_mismatch, exact=exact, tasks=_task_names(tasks)
    )
    model = CandidateModel(
        out=out,
        base_model=base_model,
        protocol=protocol,
        data_dir=data_dir,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    code = run_check(
        CheckRequest(
            candidate=candidate,
            baseline=baseline,
            settings=settings,
            model=model,
            update_baseline=update_baseline,
            summary=summary,
            json_out=json_out,
            on_compared=lambda run: _report_hint([run], html, baseline=baseline, err=True, settings=settings),
        )
    )
    if code:
        raise typer.Exit(code)


InputArg = Annotated[
    Path, typer.Argument(help="JSONL of questions, reference traces and gold answers (or a Hub dataset id).")
]
RewriteOutOpt = Annotated[Path, typer.Option(help="Kept rewrites (JSONL; rejects, failures and summary go beside it).")]
BaseUrlOpt = Annotated[str, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")]
ApiKeyOpt = Annotated[str | None, typer.Option(help="API key (default $OPENAI_API_KEY; never written to any file).")]
PromptOpt = Annotated[
    Path | None,
    typer.Option(help="Rewriting prompt with {question}, {trace}, {answer} (default: the shipped one)."),
]
TokenizerOpt = Annotated[
    str | None, typer.Option(help="Tokenizer that measures length (default: the embedded testbed's).")
]
RewriteOverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace OUT or a file beside it that igpo did not write (one holding rewrite-traces rows is "
        "its own: a rerun appends to it); a symbolic link is replaced, never written through.",
    ),
]


@app.command("rewrite-traces")
@friendly
def rewrite_traces_cmd(
    input: InputArg,
    out: RewriteOutOpt,
    base_url: BaseUrlOpt,
    model: Annotated[str, typer.Option(help="Model name the server serves.")],
    api_key: ApiKeyOpt = None,
    preset: Annotated[str | None, typer.Option(help="Field preset: openr1, metamathqa, gsm8k, math.")] = None,
    question_field: Annotated[str | None, typer.Option(help="Field of the question (overrides the preset).")] = None,
    trace_field: Annotated[str | None, typer.Option(help="Field of the reference trace.")] = None,
    answer_field: Annotated[str | None, typer.Option(help="Field of the gold answer.")] = None,
    prompt: PromptOpt = None,
    tokenizer: TokenizerOpt = None,
    max_tokens: Annotated[int | None, typer.Option(help="Reject rewrites longer than this many tokens.")] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 8,
    rpm: Annotated[float | None, typer.Option(help="At most this many requests started per minute.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per attempt.")] = 120.0,
    max_attempts: Annotated[int, typer.Option(help="Attempts per request before it is recorded as failed.")] = 6,
    temperature: Annotated[float, typer.Option(help="Sampling temperature of the rewriter.")] = 0.0,
    limit: Annotated[int | None, typer.Option(help="Only the first N input rows.")] = None,
    price_in: Annotated[float, typer.Option(help="Price per million prompt tokens (cost estimate).")] = 0.0,
    price_out: Annotated[float, typer.Option(help="Price per million completion tokens.")] = 0.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the first requests; send nothing.")] = False,
    split: Annotated[str, typer.Option(help="Split of a Hub dataset given as INPUT.")] = "train",
    overwrite: RewriteOverwriteOpt = False,
) -> None:
    """Rewrite reasoning traces into concise d1/IGPO-format SFT data through any OpenAI-compatible API.

    Kept rows go to OUT, rejects (with reason) to OUT.rejects.jsonl, failed requests to
    OUT.failures.jsonl, the counts to OUT.summary.json; a rerun skips finished rows."""
    import json
    import os

    from harness.rewrite.client import ClientSettings
    from harness.rewrite.rows import resolve_fields
    from harness.rewrite.run import RewriteJob, run
    from harness.rewrite.run import dry_run as render_dry_run

    _check_outputs(("--out", out, False), inputs=[input, prompt, model_input(tokenizer)], claim=False)  # run's own
    client = ClientSettings(
        base_url=base_url,
        model=model,
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
        concurrency=concurrency,
        requests_per_minute=rpm,
        timeout_s=timeout,
        max_attempts=max_attempts,
        temperature=temperature,
    )
    job = RewriteJob(
        input=input,
        out=out,
        fields=resolve_fields(preset, question_field, trace_field, answer_field),
        client=client,
        prompt=prompt,
        tokenizer=tokenizer,
        max_tokens=max_tokens,
        limit=limit,
        price_in=price_in,
        price_out=price_out,
        split=split,
        overwrite=overwrite,
    )
    if dry_run:
        typer.echo(render_dry_run(job))
        return
    summary = run(job)
    typer.echo(json.dumps(summary, indent=2))
    if summary["this_run"] and summary["failed"] and not summary["kept"] and not any(summary["rejected"].values()):
        typer.echo(f"error: every request failed (reasons in {out.with_suffix('')}.failures.jsonl)", err=True)
        raise typer.Exit(1)


from harness import train_cli  # noqa: E402  (light: heavy imports happen inside the commands)

app.command("sft")(train_cli.sft)
app.command("train")(train_cli.train)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
