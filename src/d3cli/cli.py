"""The `d3` command line: parses options, calls one module function per command, renders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(stderr=True)

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


@app.callback()
def main() -> None:
    """d3: make diffusion LLMs decode many tokens per forward without losing accuracy."""


def fail(message: str) -> typer.Exit:
    """Print a one-line error (never wrapped) and return the exit to raise (status 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def progress_bar(*fields: str) -> Progress:
    """A rich progress bar with extra text columns read from the task's fields."""
    columns = [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)


@app.command()
def pretrain(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, log, exported model/.")],
    task: Annotated[str, typer.Option(help="Synthetic task to train on.")] = "arith",
    steps: Annotated[int, typer.Option(help="Total optimizer steps.")] = 40000,
    batch_size: Annotated[int, typer.Option()] = 32,
    learning_rate: Annotated[float, typer.Option()] = 2e-3,
    warmup_steps: Annotated[int, typer.Option()] = 200,
    ema_decay: Annotated[float, typer.Option()] = 0.999,
    hidden_size: Annotated[int, typer.Option()] = 192,
    intermediate_size: Annotated[int, typer.Option()] = 512,
    layers: Annotated[int, typer.Option()] = 4,
    heads: Annotated[int, typer.Option()] = 6,
    block_size: Annotated[int, typer.Option(help="Default decoding block of the model.")] = 16,
    seed: Annotated[int, typer.Option()] = 0,
    save_every: Annotated[int, typer.Option(help="Checkpoint interval (steps).")] = 500,
    eval_every: Annotated[int, typer.Option(help="Eval + export interval (steps).")] = 2000,
    eval_prompts: Annotated[int, typer.Option(help="Held-out prompts per eval.")] = 200,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
) -> None:
    """Train a small dLLM from scratch (LLaDA objective); rerun the same command to resume."""
    from .checkpoints import pick_device
    from .pretrain import ConfigMismatchError, PretrainConfig, Pretrainer, RunSchedule

    config = PretrainConfig(
        task=task, batch_size=batch_size, learning_rate=learning_rate,
        warmup_steps=warmup_steps, ema_decay=ema_decay, hidden_size=hidden_size,
        intermediate_size=intermediate_size, num_layers=layers, num_heads=heads,
        block_size=block_size, seed=seed)
    schedule = RunSchedule(steps=steps, save_every=save_every, eval_every=eval_every,
                           eval_prompts=eval_prompts, device=pick_device(device))
    try:
        trainer = Pretrainer(config, out, schedule)
    except (ConfigMismatchError, ValueError) as error:
        raise fail(str(error)) from None
    if trainer.step:
        console.print(f"resuming {out} at step {trainer.step}")
    accuracy = "-"
    try:
        with progress_bar("loss", "accuracy") as bar:
            job = bar.add_task("pretrain", total=steps, completed=trainer.step, loss="",
                               accuracy="")
            for record in trainer.run():
                accuracy = f"{record['accuracy']:.1f}%" if "accuracy" in record else accuracy
                bar.update(job, completed=record["step"], loss=f"loss {record['loss']:.4f}",
                           accuracy=f"eval {accuracy}")
    except KeyboardInterrupt:
        trainer.save_checkpoint()
        console.print(f"interrupted: saved step {trainer.step} to {out}; rerun to resume")
        raise typer.Exit(130) from None
    console.print(f"done: {steps} steps, eval accuracy {accuracy}; model in {trainer.export()}")


@app.command()
def decode(
    model: Annotated[str, typer.Option(help="Embedded name, local folder or hub id.")] = "",
    task: Annotated[str, typer.Option(help="Task whose eval prompts are decoded.")] = "arith",
    method: Annotated[
        list[str], typer.Option(help="Decoding strategy; repeat to compare.")
    ] = ["vanilla"],  # noqa: B006 (typer needs a literal default; never mutated)
    limit: Annotated[int | None, typer.Option(help="Decode only the first N prompts.")] = None,
    steps: Annotated[int | None, typer.Option(help="vanilla: forwards (default gen length).")
                     ] = None,
    threshold: Annotated[float, typer.Option(help="threshold: confidence τ.")] = 0.9,
    block_size: Annotated[int | None, typer.Option(help="Default: the model's.")] = None,
    gen_length: Annotated[int | None, typer.Option(help="Default: the task's.")] = None,
    temperature: Annotated[float, typer.Option()] = 0.0,
    batch_size: Annotated[int, typer.Option()] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, or auto.")] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="Result JSON lines (appended).")] = Path(
        "results.jsonl"),
) -> None:
    """Decode a task's held-out prompts and write one JSON line per sample."""
    from .checkpoints import DEFAULT_MODEL, ModelLoadError, load_model
    from .decode import STRATEGIES, DecodeOptions, decode_examples, write_results
    from .tasks import get_task

    unknown = [name for name in method if name not in STRATEGIES]
    if unknown:
        raise fail(f"unknown method {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    try:
        chosen_task = get_task(task)
        loaded = load_model(model or DEFAULT_MODEL, device, dtype)
    except (ModelLoadError, ValueError) as error:
        raise fail(str(error)) from None
    options = DecodeOptions(gen_length=gen_length or chosen_task.gen_length,
                            block_size=block_size or loaded.spec.block_size, steps=steps,
                            threshold=threshold, temperature=temperature, seed=seed)
    examples = chosen_task.eval_examples(limit)
    summary = Table("method", "accuracy %", "TPF", "tokens/s", "forwards", "seconds",
                    title=f"{loaded.name} on {chosen_task.name} ({len(examples)} prompts)")
    with progress_bar("accuracy") as bar:
        for name in method:
            job = bar.add_task(name, total=len(examples), accuracy="")
            results = []
            try:
                stream = decode_examples(loaded, chosen_task, examples, name, options, batch_size)
                for result in write_results(stream, out):
                    results.append(result)
                    correct = sum(r.correct for r in results)
                    bar.update(job, advance=1, accuracy=f"acc {100 * correct / len(results):.1f}%")
            except ValueError as error:
                raise fail(str(error)) from None
            tokens = sum(r.gen_tokens for r in results)
            forwards = sum(r.forwards for r in results)
            seconds = sum(r.seconds for r in results)
            summary.add_row(name, f"{100 * sum(r.correct for r in results) / len(results):.1f}",
                            f"{tokens / forwards:.2f}", f"{tokens / seconds:.0f}",
                            f"{forwards / len(results):.1f}", f"{seconds:.1f}")
    Console().print(summary)
    console.print(f"wrote {out}")


@app.command()
def aup(
    files: Annotated[
        list[Path],
        typer.Argument(help="d3 decode results (.jsonl) and/or summary tables (.yaml/.yml/.csv)."),
    ],
    alpha: Annotated[float, typer.Option(min=0.0, help="Penalty α of W(y).")] = 3.0,
    y_max: Annotated[
        list[str],
        typer.Option("--y-max", metavar="TASK=VALUE", help="Override a task's y_max (repeatable)."),
    ] = [],  # noqa: B006 (typer needs a literal default; never mutated)
    skip_first: Annotated[
        int, typer.Option(min=0, help="Warm-up samples skipped per result group (.jsonl only).")
    ] = 10,
    scale: Annotated[
        str,
        typer.Option(metavar="percent|fraction", help="Accuracy scale of summary tables."),
    ] = "percent",
    output_format: Annotated[
        str,
        typer.Option("--format", metavar="table|json|csv", help="json and csv carry every number."),
    ] = "table",
    plot: Annotated[Path | None, typer.Option(help="Write accuracy-vs-TPF panels (PNG).")] = None,
) -> None:
    """Accuracy Under Parallelism per task and method, with a per-file average (§4.1)."""
    import json

    from . import aup as metric

    if scale not in metric.SCALES:
        raise typer.BadParameter(
            f"{scale!r} is not one of {', '.join(metric.SCALES)}", param_hint="--scale"
        )
    if output_format not in metric.FORMATS:
        raise typer.BadParameter(
            f"{output_format!r} is not one of {', '.join(metric.FORMATS)}", param_hint="--format"
        )
    try:
        overrides = metric.parse_y_max(y_max)
        curves = metric.load(files, skip_first=skip_first, scale=scale)
        report = metric.build_report(curves, alpha=alpha, y_max=overrides)
    except metric.AupInputError as error:
        raise fail(str(error)) from None
    if plot is not None:
        try:
            metric.plot(report, plot)
        except OSError as error:
            raise fail(f"cannot write plot {plot}: {error.strerror or error}") from None
    if output_format == "json":
        typer.echo(json.dumps(report.to_json(), indent=2))
    elif output_format == "csv":
        typer.echo(report.to_csv(), nl=False)
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=200)
        for text_table in metric.text_tables(report):
            table = Table(title=text_table.title)
            for index, name in enumerate(text_table.columns):
                right = index >= text_table.first_number_column
                table.add_column(name, justify="right" if right else "left")
            for row, end in zip(text_table.rows, text_table.section_ends, strict=True):
                table.add_row(*row, end_section=end)
            out.print(table)
    for message in report.errors:
        typer.echo(f"error: {message}", err=True)
    if report.errors:
        raise typer.Exit(1)
