"""`d3 aup`: Accuracy Under Parallelism of decode results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .shared import checked, one_of

if TYPE_CHECKING:
    from ..jobs.aup import AupSummary

FilesArg = Annotated[list[Path], typer.Argument(
    help="d3 decode results (.jsonl) and/or summary tables (.yaml/.yml/.csv).")]
AlphaOpt = Annotated[float, typer.Option(min=0.0, help="Penalty α of W(y).")]
YMaxOpt = Annotated[list[str], typer.Option(
    "--y-max", metavar="TASK=VALUE", help="Override a task's y_max (repeatable).")]
FloorOpt = Annotated[list[str], typer.Option(
    "--floor", metavar="TASK=VALUE",
    help="Score only the points at or above this accuracy (%) on TASK, "
         "e.g. arith=92.2: at most 2 points below a 94.2 % baseline "
         "(repeatable; not in the paper's metric).")]
SkipFirstOpt = Annotated[int, typer.Option(
    min=0, help="Warm-up samples skipped per result group (.jsonl only).")]
ScaleOpt = Annotated[str, typer.Option(
    metavar="percent|fraction", callback=one_of("percent", "fraction"),
    help="Accuracy scale of summary tables.")]
OutputFormatOpt = Annotated[str, typer.Option(
    "--format", metavar="table|markdown|json|csv",
    callback=one_of("table", "markdown", "json", "csv"),
    help="json and csv carry every number; markdown prints the tables as Markdown.")]
BootstrapOpt = Annotated[int | None, typer.Option(
    min=1, metavar="N",
    help="Per run (a curve in every file of one folder, one file per training seed): "
         "median AUP over seeds with a 95 % interval from N resamples of seeds and "
         "prompts, and ratios to the one-token curve.")]
BootstrapSeedOpt = Annotated[int, typer.Option(help="Seed of the --bootstrap resampling.")]
PlotOpt = Annotated[Path | None, typer.Option(help="Write accuracy-vs-TPF panels (PNG).")]
LmEvalSamplesOpt = Annotated[list[Path], typer.Option(
    help="lm-eval --log_samples output (files or folders): FILES are then the records "
         "of `--model d3` (records=...), scored by these samples.")]
LmEvalMetricOpt = Annotated[str, typer.Option(
    help="The samples' per-sample metric (0 or 1).")]
LmEvalFilterOpt = Annotated[str | None, typer.Option(
    help="The samples' filter (default: each file's first).")]
OneTokenTpfOpt = Annotated[str, typer.Option(
    metavar="measured|nominal", callback=one_of("measured", "nominal"),
    help="TPF of one-token-per-forward runs (vanilla, steps = length): measured "
         "(EOS padding costs forwards, so below 1) or nominal (1, the paper's "
         "leaderboards).")]


def aup(
    files: FilesArg,
    alpha: AlphaOpt = 3.0,
    y_max: YMaxOpt = [],  # noqa: B006 (typer needs a literal; never mutated)
    floor: FloorOpt = [],  # noqa: B006 (typer needs a literal; never mutated)
    skip_first: SkipFirstOpt = 10,
    scale: ScaleOpt = "percent",
    output_format: OutputFormatOpt = "table",
    bootstrap: BootstrapOpt = None,
    bootstrap_seed: BootstrapSeedOpt = 0,
    plot: PlotOpt = None,
    lm_eval_samples: LmEvalSamplesOpt = [],  # noqa: B006 (typer needs a literal; never mutated)
    lm_eval_metric: LmEvalMetricOpt = "exact_match",
    lm_eval_filter: LmEvalFilterOpt = None,
    one_token_tpf: OneTokenTpfOpt = "measured",
) -> None:
    """Accuracy Under Parallelism per task and method, with a per-file average (the
    metric: docs/algorithms.md)."""
    options = dict(locals())  # the parameters: nothing else is named yet
    from ..jobs.aup import AupRequest, summarise

    summary = checked(summarise, AupRequest(**options))
    for note in summary.notes:
        typer.echo(f"note: {note}", err=True)
    show(summary, output_format)
    for message in summary.errors:
        typer.echo(f"error: {message}", err=True)
    if summary.errors:
        raise typer.Exit(1)


def show(summary: AupSummary, output_format: str) -> None:
    """Print the summary as rich tables, Markdown, JSON or CSV on stdout."""
    from ..aup import markdown

    if output_format == "json":
        typer.echo(json.dumps(summary.numbers, indent=2))
    elif output_format == "csv":
        typer.echo(summary.report.to_csv(), nl=False)
    elif output_format == "markdown":
        typer.echo("\n\n".join(markdown(text_table) for text_table in summary.tables))
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=80)  # piped: cells wrap to 80 columns
        for text_table in summary.tables:
            table = Table(title=text_table.title)
            for index, name in enumerate(text_table.columns):
                right = index >= text_table.first_number_column
                table.add_column(name, justify="right" if right else "left")
            for row, end in zip(text_table.rows, text_table.section_ends, strict=True):
                table.add_row(*map(escape, row), end_section=end)  # "[cache=…]" is no markup
            out.print(table)
