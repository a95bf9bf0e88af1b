"""What `d3 aup` reports: every curve scored against its task's y_max, per-file averages,
and the report as JSON, CSV or text tables (rendered by the CLI).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .metric import ALPHA, AccuracyDropError, Point, aup_score, is_kept, sort_points, weight
from .records import AupInputError, Curve, config_labels_of

FORMATS = ("table", "markdown", "json", "csv")


@dataclass(frozen=True)
class ScoredPoint:
    """A point with its weight W(y) and whether it entered the area."""

    point: Point
    weight: float
    kept: bool


@dataclass(frozen=True)
class CurveScore:
    """AUP of one curve, or the reason it has none."""

    source: str
    task: str
    method: str
    y_max: float
    points: tuple[ScoredPoint, ...]  # sorted by TPF
    aup: float | None
    error: str | None  # file:line: curve: reason; no AUP
    model: str | None = None
    reason: str | None = None  # the error's reason alone (the plot's legend)


@dataclass(frozen=True)
class MethodAverage:
    """A method's AUP per task of one input file, and their mean (None if any is missing)."""

    source: str
    method: str
    aup_by_task: dict[str, float | None]
    average: float | None
    model: str | None = None


@dataclass(frozen=True)
class Report:
    """Everything `d3 aup` prints: per-task curve scores and per-file method averages."""

    alpha: float
    y_max: dict[str, float]
    curves: tuple[CurveScore, ...]
    averages: tuple[MethodAverage, ...]

    @property
    def errors(self) -> list[str]:
        return [curve.error for curve in self.curves if curve.error]

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(curve.source for curve in self.curves))

    def to_json(self) -> dict:
        """Every number of the report, for scripts."""
        return {
            "alpha": self.alpha,
            "y_max": self.y_max,
            "curves": [
                {
                    "source": curve.source,
                    "task": curve.task,
                    "model": curve.model,
                    "method": curve.method,
                    "y_max": curve.y_max,
                    "aup": curve.aup,
                    "error": curve.error,
                    "points": [
                        {
                            "tpf": scored.point.tpf,
                            "accuracy": scored.point.accuracy,
                            "weight": scored.weight,
                            "kept": scored.kept,
                            "config": _config_object(scored.point.config),
                            "samples": scored.point.samples,
                        }
                        for scored in curve.points
                    ],
                }
                for curve in self.curves
            ],
            "averages": [
                {
                    "source": average.source,
                    "model": average.model,
                    "method": average.method,
                    "aup_by_task": average.aup_by_task,
                    "average": average.average,
                }
                for average in self.averages
            ],
        }

    def to_csv(self) -> str:
        """One row per point (with its curve's AUP), then one row per method average."""
        columns = ["kind", "source", "task", "model", "method", "config", "samples", "tpf",
                   "accuracy"]
        columns += ["y_max", "weight", "kept", "aup", "error"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for curve in self.curves:
            for scored in curve.points:
                writer.writerow(
                    {
                        "kind": "point",
                        "source": curve.source,
                        "task": curve.task,
                        "model": curve.model or "",
                        "method": curve.method,
                        "config": scored.point.config or "",
                        "samples": "" if scored.point.samples is None else scored.point.samples,
                        "tpf": repr(scored.point.tpf),
                        "accuracy": repr(scored.point.accuracy),
                        "y_max": repr(curve.y_max),
                        "weight": repr(scored.weight),
                        "kept": scored.kept,
                        "aup": "" if curve.aup is None else repr(curve.aup),
                        "error": curve.error or "",
                    }
                )
        for average in self.averages:
            value = "" if average.average is None else repr(average.average)
            writer.writerow(
                {
                    "kind": "average",
                    "source": average.source,
                    "model": average.model or "",
                    "method": average.method,
                    "aup": value,
                }
            )
        return buffer.getvalue()


def _config_object(config: str | None) -> dict | None:
    return None if config is None else json.loads(config)


def parse_task_values(specs: Iterable[str], option: str) -> dict[str, float]:
    """`TASK=VALUE` settings of `option` (`--y-max`, `--floor`), VALUE > 0."""
    values = {}
    for spec in specs:
        task, _, value = spec.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not task or not math.isfinite(number) or number <= 0:
            raise AupInputError(f"{option} {spec!r}: expected TASK=VALUE with VALUE > 0")
        values[task] = number
    return values


def _check_tasks(settings: Mapping[str, float] | None, option: str, tasks: list[str]) -> None:
    unknown = [task for task in (settings or {}) if task not in tasks]
    if unknown:
        raise AupInputError(
            f"{option} names task(s) {', '.join(unknown)} not in the inputs ({', '.join(tasks)})"
        )


def build_report(
    curves: Sequence[Curve], *, alpha: float = ALPHA, y_max: Mapping[str, float] | None = None,
    floor: Mapping[str, float] | None = None,
) -> Report:
    """Score every curve against its task's y_max and average each file's methods over tasks.

    y_max defaults to the best accuracy over all points of all curves on the task (§4.1 step
    4). Averages are per input file over that file's tasks, not the reference's fixed ÷5.
    `floor` (not in the reference) drops the points below a task's accuracy floor before
    scoring, e.g. to score only what loses at most 2 points against a baseline.
    """
    tasks = list(dict.fromkeys(curve.task for curve in curves))
    _check_tasks(y_max, "--y-max", tasks)
    _check_tasks(floor, "--floor", tasks)
    best = {
        task: max(
            point.accuracy for curve in curves if curve.task == task for point in curve.points
        )
        for task in tasks
    }
    best.update(y_max or {})
    floors = floor or {}
    scores = tuple(_score_curve(curve, best[curve.task], alpha, floors.get(curve.task))
                   for curve in curves)
    return Report(alpha, best, scores, tuple(_averages(scores)))


def _score_curve(curve: Curve, y_max: float, alpha: float, floor: float | None) -> CurveScore:
    ordered = sort_points(curve.points)
    above = [point for point in ordered if floor is None or point.accuracy >= floor]
    if y_max <= 0:  # W(y) = exp(-α(1 - y/y_max)) has no value
        points = tuple(ScoredPoint(point, 0.0, False) for point in ordered)
        return _no_aup(curve, y_max, points, ordered[0].line,
                       f"every point on {curve.task} is at 0 % accuracy")
    points = tuple(
        ScoredPoint(point, weight(point.accuracy, y_max, alpha),
                    point in above and is_kept(point, above[0]))
        for point in ordered
    )
    if not above:
        return _no_aup(curve, y_max, points, ordered[0].line,
                       f"every point is below the floor {floor:g}")
    try:
        value = aup_score(above, y_max, alpha)
    except AccuracyDropError as exc:
        return _no_aup(curve, y_max, points, exc.last.line, str(exc))
    return CurveScore(curve.source, curve.task, curve.method, y_max, points, value, None,
                      curve.model)


def _no_aup(curve: Curve, y_max: float, points: tuple[ScoredPoint, ...], line: int,
            reason: str) -> CurveScore:
    error = f"{curve.source}:{line}: {curve.method} on {curve.task}: {reason}; no AUP"
    return CurveScore(curve.source, curve.task, curve.method, y_max, points, None, error,
                      curve.model, reason)


def _averages(scores: Sequence[CurveScore]) -> list[MethodAverage]:
    """Per file and method: AUP on each of the file's tasks and their mean."""
    averages = []
    for source in dict.fromkeys(score.source for score in scores):
        in_file = [score for score in scores if score.source == source]
        tasks = list(dict.fromkeys(score.task for score in in_file))
        for model, method in dict.fromkeys((score.model, score.method) for score in in_file):
            by_task = {score.task: score.aup for score in in_file
                       if (score.model, score.method) == (model, method)}
            values = [by_task.get(task) for task in tasks]
            complete = all(value is not None for value in values)
            mean = sum(values) / len(values) if complete else None
            averages.append(MethodAverage(source, method, by_task, mean, model))
    return averages


# --- text tables (rendered by the CLI) -----------------------------------------------------


@dataclass(frozen=True)
class TextTable:
    """A table as text cells: names and numbers up to `first_number_column`, then numbers;
    `section_ends` marks the rows that close a curve."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    section_ends: tuple[bool, ...]
    first_number_column: int


def text_tables(report: Report) -> list[TextTable]:
    """One table per task (a row per point, AUP on a curve's first row), then one average
    table per input file."""
    several_files = len(report.sources) > 1
    tables = []
    for task in dict.fromkeys(curve.task for curve in report.curves):
        curves = [curve for curve in report.curves if curve.task == task]
        with_config = any(s.point.config is not None for c in curves for s in c.points)
        with_model = any(curve.model for curve in curves)
        columns = ("file",) * several_files + ("model",) * with_model + ("method",)
        columns += ("config", "n") * with_config
        columns += ("TPF", "accuracy", "W", "AUP")
        rows, ends = [], []
        for curve in curves:
            labels = _config_labels([scored.point for scored in curve.points])
            for index, scored in enumerate(curve.points):
                first = index == 0
                row = (Path(curve.source).name if first else "",) * several_files
                row += ((curve.model or "") if first else "",) * with_model
                row += (curve.method if first else "",)
                if with_config:
                    samples = scored.point.samples
                    row += (labels[index], "" if samples is None else str(samples))
                row += (f"{scored.point.tpf:.2f}", f"{scored.point.accuracy:.2f}")
                row += (f"{scored.weight:.6f}" if scored.kept else "dropped",)
                row += (_aup_text(curve) if first else "",)
                rows.append(row)
                ends.append(index == len(curve.points) - 1)
        title = f"{task}: y_max {report.y_max[task]:g}, alpha {report.alpha:g}"
        first_number = columns.index("n" if with_config else "TPF")
        tables.append(TextTable(title, columns, tuple(rows), tuple(ends), first_number))
    for source in report.sources:
        averages = [average for average in report.averages if average.source == source]
        tasks = list(dict.fromkeys(c.task for c in report.curves if c.source == source))
        with_model = any(average.model for average in averages)
        rows = []
        for average in averages:
            cells = [_number_text(average.aup_by_task, task) for task in tasks]
            mean = "—" if average.average is None else f"{average.average:.2f}"
            rows.append((average.model or "",) * with_model + (average.method, *cells, mean))
        title = f"average AUP over {len(tasks)} task(s): {source}"
        columns = ("model",) * with_model + ("method", *tasks, "average")
        tables.append(TextTable(title, columns, tuple(rows), (False,) * len(rows),
                                1 + with_model))
    return tables


def _aup_text(curve: CurveScore) -> str:
    return "error" if curve.aup is None else f"{curve.aup:.6f}"


def _number_text(values: Mapping[str, float | None], task: str) -> str:
    if task not in values:
        return "—"
    value = values[task]
    return "error" if value is None else f"{value:.2f}"


def _config_labels(points: Sequence[Point]) -> list[str]:
    """`key=value` for the config keys that differ between a curve's points."""
    return config_labels_of([json.loads(point.config) if point.config else {} for point in points])


def markdown(table: TextTable) -> str:
    """The table as Markdown: its title in bold, then a pipe table."""
    align = ["---:" if index >= table.first_number_column else "---"
             for index in range(len(table.columns))]
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |",
             "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in table.rows]
    return "\n".join(lines)
