"""`d3 aup`: Accuracy Under Parallelism of decode results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .shared import fail, one_of


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
    floor: Annotated[
        list[str],
        typer.Option("--floor", metavar="TASK=VALUE",
                     help="Score only the points at or above this accuracy (%) on TASK, "
                          "e.g. arith=92.2: at most 2 points below a 94.2 % baseline "
                          "(repeatable; not in the paper's metric)."),
    ] = [],  # noqa: B006
    skip_first: Annotated[
        int, typer.Option(min=0, help="Warm-up samples skipped per result group (.jsonl only).")
    ] = 10,
    scale: Annotated[
        str,
        typer.Option(metavar="percent|fraction", callback=one_of("percent", "fraction"),
                     help="Accuracy scale of summary tables."),
    ] = "percent",
    output_format: Annotated[
        str,
        typer.Option("--format", metavar="table|markdown|json|csv",
                     callback=one_of("table", "markdown", "json", "csv"),
                     help="json and csv carry every number; markdown prints the tables as "
                          "Markdown."),
    ] = "table",
    bootstrap: Annotated[int | None, typer.Option(
        min=1, metavar="N",
        help="Per run (a curve in every file of one folder, one file per training seed): "
             "median AUP over seeds with a 95 % interval from N resamples of seeds and "
             "prompts, and ratios to the one-token curve.")] = None,
    bootstrap_seed: Annotated[int, typer.Option(
        help="Seed of the --bootstrap resampling.")] = 0,
    plot: Annotated[Path | None, typer.Option(help="Write accuracy-vs-TPF panels (PNG).")] = None,
    lm_eval_samples: Annotated[list[Path], typer.Option(
        help="lm-eval --log_samples output (files or folders): FILES are then the records "
             "of `--model d3` (records=...), scored by these samples.")] = [],  # noqa: B006
    lm_eval_metric: Annotated[str, typer.Option(
        help="The samples' per-sample metric (0 or 1).")] = "exact_match",
    lm_eval_filter: Annotated[str | None, typer.Option(
        help="The samples' filter (default: each file's first).")] = None,
    one_token_tpf: Annotated[str, typer.Option(
        metavar="measured|nominal", callback=one_of("measured", "nominal"),
        help="TPF of one-token-per-forward runs (vanilla, steps = length): measured "
             "(EOS padding costs forwards, so below 1) or nominal (1, the paper's "
             "leaderboards).")] = "measured",
) -> None:
    """Accuracy Under Parallelism per task and method, with a per-file average (the
    metric: docs/algorithms.md)."""
    import json

    from rich.markup import escape

    from .. import aup as metric
    from ..harness_results import HarnessResultsError, joined_records

    try:
        overrides = metric.parse_task_values(y_max, "--y-max")
        floors = metric.parse_task_values(floor, "--floor")
        if lm_eval_samples:
            curves = [curve for path in files for curve in metric.result_curves(
                path, joined_records(path, lm_eval_samples, lm_eval_metric, lm_eval_filter),
                skip_first, one_token_tpf)]
        else:
            curves = metric.load(files, skip_first=skip_first, scale=scale,
                                 one_token_tpf=one_token_tpf)
        report = metric.build_report(curves, alpha=alpha, y_max=overrides, floor=floors)
    except (metric.AupInputError, HarnessResultsError, OSError) as error:
        raise fail(str(error)) from None
    if plot is not None:
        try:
            metric.plot(report, plot)
        except OSError as error:
            raise fail(f"cannot write plot {plot}: {error.strerror or error}") from None
    tables, numbers = metric.text_tables(report), report.to_json()
    if bootstrap:
        if output_format == "csv":
            raise fail("--bootstrap prints a table, markdown or json, not csv")
        try:
            runs = metric.bootstrap(curves, report.y_max, floors, bootstrap, bootstrap_seed)
        except metric.AupInputError as error:
            raise fail(str(error)) from None
        tables, numbers = [metric.interval_table(runs, bootstrap)], metric.intervals_json(
            runs, bootstrap)
    if output_format == "json":
        typer.echo(json.dumps(numbers, indent=2))
    elif output_format == "csv":
        typer.echo(report.to_csv(), nl=False)
    elif output_format == "markdown":
        typer.echo("\n\n".join(metric.markdown(text_table) for text_table in tables))
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=200)
        for text_table in tables:
            table = Table(title=text_table.title)
            for index, name in enumerate(text_table.columns):
                right = index >= text_table.first_number_column
                table.add_column(name, justify="right" if right else "left")
            for row, end in zip(text_table.rows, text_table.section_ends, strict=True):
                table.add_row(*map(escape, row), end_section=end)  # "[cache=…]" is no markup
            out.print(table)
    errors = [] if bootstrap else report.errors  # --bootstrap scores a curve's kept points
    for message in errors:
        typer.echo(f"error: {message}", err=True)
    if errors:
        raise typer.Exit(1)
