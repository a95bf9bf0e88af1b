"""One `d3 aup` run: result records or summary tables (or lm-eval samples) in, the report
or, with `bootstrap`, the per-run intervals out; every input error is one `ValueError`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..aup import (
    AupInputError,
    Curve,
    Report,
    bootstrap,
    build_report,
    interval_table,
    intervals_json,
    load,
    parse_task_values,
    plot,
    result_curves,
    text_tables,
)
from ..aup.report import TextTable
from ..harness_results import joined_records


@dataclass
class AupRequest:
    """The options of `d3 aup`."""

    files: Sequence[Path]
    alpha: float
    y_max: Sequence[str]
    floor: Sequence[str]
    skip_first: int
    scale: str
    output_format: str
    bootstrap: int | None
    bootstrap_seed: int
    plot: Path | None
    lm_eval_samples: Sequence[Path]
    lm_eval_metric: str
    lm_eval_filter: str | None
    one_token_tpf: str


@dataclass
class AupSummary:
    """What `d3 aup` prints: its tables, the same numbers as JSON, the report (for CSV) and
    the curves that could not be scored."""

    tables: list[TextTable]
    numbers: dict[str, Any]
    report: Report
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # rows left out, per file


def request_curves(request: AupRequest) -> list[Curve]:
    """The curves of the request's files (scored by lm-eval samples when given)."""
    if not request.lm_eval_samples:
        return load(request.files, skip_first=request.skip_first, scale=request.scale,
                    one_token_tpf=request.one_token_tpf)
    return [curve for path in request.files for curve in result_curves(
        path, joined_records(path, request.lm_eval_samples, request.lm_eval_metric,
                             request.lm_eval_filter),
        request.skip_first, request.one_token_tpf)]


def summarise(request: AupRequest) -> AupSummary:
    """Score the request's curves, write the plot if asked, and (with `bootstrap`) resample
    each run; `--bootstrap` scores a curve's kept points, so it reports no curve errors."""
    try:
        overrides = parse_task_values(request.y_max, "--y-max")
        floors = parse_task_values(request.floor, "--floor")
        curves = request_curves(request)
        report = build_report(curves, alpha=request.alpha, y_max=overrides, floor=floors)
    except OSError as error:
        raise AupInputError(str(error)) from None
    if request.plot is not None:
        try:
            plot(report, request.plot)
        except OSError as error:
            raise AupInputError(f"cannot write plot {request.plot}: "
                                f"{error.strerror or error}") from None
    notes = unscored_notes(curves)
    if not request.bootstrap:
        return AupSummary(text_tables(report), report.to_json(), report, report.errors, notes)
    if request.output_format == "csv":
        raise AupInputError("--bootstrap prints a table, markdown or json, not csv")
    runs = bootstrap(curves, report.y_max, floors, request.bootstrap, request.bootstrap_seed)
    return AupSummary([interval_table(runs, request.bootstrap)],
                      intervals_json(runs, request.bootstrap), report, notes=notes)


def unscored_notes(curves: list[Curve]) -> list[str]:
    """Per file, how many rows without a score (`correct: null`) were left out."""
    notes = []
    for source in dict.fromkeys(curve.source for curve in curves):
        unscored = sum(curve.unscored for curve in curves if curve.source == source)
        if unscored:
            notes.append(f"{source}: left out {unscored} rows without a score "
                         "('correct': null)")
    return notes
