"""The `igpo` command line. Heavy imports (torch, lm-eval) happen inside commands, never here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from harness.errors import friendly

app = typer.Typer(
    name="igpo",
    help="Train IGPO checkpoints of masked diffusion LMs and benchmark them in lm-evaluation-harness.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
bench_app = typer.Typer(help="Speed and memory benchmarks; each writes a table under results/bench/.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from importlib.metadata import version as pkg_version

        typer.echo(pkg_version("igpo"))
        raise typer.Exit()


@bench_app.command("decode")
@friendly
def bench_decode(
    model: Annotated[str | None, typer.Option(help="Model folder or Hub id; default: a random tiny model.")] = None,
    gen_length: Annotated[int, typer.Option(help="Completion length.")] = 256,
    block_length: Annotated[int, typer.Option(help="Block length.")] = 32,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 128,
    batch_size: Annotated[int, typer.Option(help="Prompts decoded together.")] = 8,
    repeats: Annotated[int, typer.Option(help="Timed repetitions (the median is reported).")] = 3,
    out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("results/bench/decode.md"),
) -> None:
    """Decoder throughput: tokens/s, NFE and peak memory."""
    from harness.bench.decode import DecodeBenchConfig, run

    run(DecodeBenchConfig(model=model, gen_length=gen_length, block_length=block_length, steps=steps,
                          batch_size=batch_size, repeats=repeats, out=out))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
