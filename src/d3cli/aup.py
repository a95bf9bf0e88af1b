"""AUP (Accuracy Under Parallelism): the metric, result loading, the report and the plot.

The metric is `algorithms.md` §4.1. Inputs are result JSON lines written by `d3 decode`
(one record per sample) and summary tables of published points (YAML or CSV rows
`task, method, tpf, accuracy`). A curve is one method on one task in one input file, with one
setting of every option except the swept ones (`SWEPT_OPTIONS`, the threshold); each of its
points is one (TPF, accuracy) pair: a summary row, or one (task, method, config) group of
result records. A method run with two settings of another option (say `cache`) gives two
curves, named `method [option=value]`.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import yaml

ALPHA = 3.0
DROP_LIMIT = 5.0  # accuracy points a curve may fall below its first point (§4.1 steps 2-3)
SKIP_FIRST = 10  # warm-up samples skipped per result group, as the reference harnesses do (§4.2)
SCALES = ("percent", "fraction")
# How a one-token-per-forward point's TPF is counted: `measured` (answer tokens before the
# first EOS ÷ forwards, below 1 when EOS padding costs forwards) or `nominal` (1, as the
# paper's leaderboards put it). Other points are always measured.
TPF_CONVENTIONS = ("measured", "nominal")
FORMATS = ("table", "json", "csv")
RESULT_FIELDS = ("task", "model", "method", "config", "gen_tokens", "forwards", "correct")
SUMMARY_FIELDS = ("task", "method", "tpf", "accuracy")
SWEPT_OPTIONS = ("threshold",)  # config keys that move a point along its method's curve
PANEL_SIZE_PX = (400, 350)  # one plot panel, width x height
PANELS_PER_ROW = 3
PLOT_DPI = 100


class AupInputError(ValueError):
    """An input the command cannot use; the message names the file and line."""


class AccuracyDropError(ValueError):
    """The point at the highest TPF is more than `DROP_LIMIT` below the first point."""

    def __init__(self, first: Point, last: Point) -> None:
        super().__init__(
            f"accuracy {last.accuracy:g} at TPF {last.tpf:g} is more than {DROP_LIMIT:g} "
            f"below the first point's {first.accuracy:g} at TPF {first.tpf:g}"
        )
        self.first = first
        self.last = last


@dataclass(frozen=True)
class Point:
    """One (TPF, accuracy in percent) pair; `config` and `samples` come from result files."""

    tpf: float
    accuracy: float
    config: str | None = None  # canonical JSON of the decode config
    samples: int | None = None  # records scored, after --skip-first
    line: int = field(default=0, compare=False)  # where the point starts in its file


@dataclass(frozen=True)
class Curve:
    """The points of one method on one task, read from one file."""

    source: str
    task: str
    method: str
    points: tuple[Point, ...]
    model: str | None = None  # result files: the model that decoded every point


# --- the metric (§4.1) ---------------------------------------------------------------------


def weight(accuracy: float, y_max: float, alpha: float = ALPHA) -> float:
    """W(y) = min(exp(-α·(1 - y/y_max)), 1): 1 at the best accuracy, decaying below it."""
    return min(math.exp(-alpha * (1.0 - accuracy / y_max)), 1.0)


def sort_points(points: Iterable[Point]) -> list[Point]:
    """Points by ascending TPF; ties keep their input order, as in the reference."""
    return sorted(points, key=lambda point: point.tpf)


def is_kept(point: Point, first: Point) -> bool:
    """A point counts unless it is more than `DROP_LIMIT` below the lowest-TPF point."""
    return point.accuracy >= first.accuracy - DROP_LIMIT


def aup_score(points: Sequence[Point], y_max: float, alpha: float = ALPHA) -> float:
    """AUP = ρ₁·y₁ + Σ ½(ρᵢ - ρᵢ₋₁)(yᵢ·W(yᵢ) + yᵢ₋₁·W(yᵢ₋₁)) over the kept, sorted points.

    The first rectangle is not weighted. Raises `AccuracyDropError` when the point at the
    highest TPF is more than `DROP_LIMIT` below the first, where the reference asserts.
    """
    if not points:
        raise ValueError("AUP of an empty curve")
    ordered = sort_points(points)
    first, last = ordered[0], ordered[-1]
    if not is_kept(last, first):
        raise AccuracyDropError(first, last)
    kept = [point for point in ordered if is_kept(point, first)]
    total = first.tpf * first.accuracy
    for left, right in pairwise(kept):
        left_height = left.accuracy * weight(left.accuracy, y_max, alpha)
        right_height = right.accuracy * weight(right.accuracy, y_max, alpha)
        total += 0.5 * (right.tpf - left.tpf) * (left_height + right_height)
    return total


# --- loading --------------------------------------------------------------------------------


def load(
    paths: Sequence[Path], *, skip_first: int = SKIP_FIRST, scale: str = "percent",
    one_token_tpf: str = "measured",
) -> list[Curve]:
    """Curves from every file, in file order; the format follows the extension.

    `skip_first` and `one_token_tpf` (`TPF_CONVENTIONS`) apply to result JSONL files;
    `scale` ("percent" or "fraction") to the accuracy column of summary tables.
    """
    curves: list[Curve] = []
    for path in paths:
        curves.extend(load_file(path, skip_first=skip_first, scale=scale,
                                one_token_tpf=one_token_tpf))
    return curves


def load_file(path: Path, *, skip_first: int = SKIP_FIRST, scale: str = "percent",
              one_token_tpf: str = "measured") -> list[Curve]:
    """Curves of one file: result JSONL, or a YAML/CSV summary table."""
    suffix = path.suffix.lower()
    if path.is_dir():
        raise AupInputError(f"{path}: is a folder; give result files (.jsonl) or summary "
                            "tables (.yaml, .yml, .csv)")
    if suffix not in (".jsonl", ".yaml", ".yml", ".csv"):
        raise AupInputError(
            f"{path}: unknown format {suffix or '(no extension)'!r}; "
            "expected .jsonl (d3 decode results), .yaml, .yml or .csv (summary table)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AupInputError(f"{path}: cannot read: {exc}") from None
    if not text.strip():
        raise AupInputError(f"{path}:1: empty file")
    if suffix == ".jsonl":
        return result_curves(path, text, skip_first, one_token_tpf)
    rows = _csv_rows(path, text) if suffix == ".csv" else _yaml_rows(path, text)
    return _summary_curves(path, rows, scale)


@dataclass
class _Group:
    """Running sums of one (task, method, config) group of result records."""

    line: int
    seen: int = 0
    samples: int = 0
    gen_tokens: float = 0.0
    forwards: float = 0.0
    correct: float = 0.0


def json_object(path: Path, line: int, raw: str) -> dict:
    """One object of a JSON-lines file, or a one-line `AupInputError` naming file and line."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise AupInputError(f"{path}:{line}: malformed JSON at column {exc.colno}: "
                            f"{exc.msg}") from None
    if not isinstance(value, dict):
        raise AupInputError(f"{path}:{line}: expected a JSON object, got {raw.strip()[:40]}")
    return value


def is_one_token_per_forward(method: str, config: Mapping) -> bool:
    """A vanilla run with as many steps as answer positions: one token per forward (on
    average under Dream's schedule, which commits none first and two last)."""
    return method == "vanilla" and config.get("steps") is not None and (
        config.get("steps") == config.get("gen_length"))


def result_curves(path: Path, text: str, skip_first: int,
                  one_token_tpf: str = "measured") -> list[Curve]:
    """Group records by (task, model, method, config): accuracy = mean(correct)·100,
    TPF = Σtok/Σfwd, or 1 for a one-token-per-forward group under the `nominal`
    convention. Records of different models never share a curve."""
    groups: dict[tuple[str, str, str, str], _Group] = {}
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        record = json_object(path, line, raw)
        _require_fields(path, line, record, RESULT_FIELDS)
        task = _name(path, line, record, "task")
        model = _name(path, line, record, "model")
        method = _name(path, line, record, "method")
        if not isinstance(record["config"], dict):
            raise AupInputError(f"{path}:{line}: field 'config' must be a JSON object")
        config = json.dumps(record["config"], sort_keys=True, separators=(",", ":"))
        gen_tokens = _number(path, line, record["gen_tokens"], "gen_tokens")
        forwards = _number(path, line, record["forwards"], "forwards")
        correct = record["correct"]
        if gen_tokens < 0:
            raise AupInputError(f"{path}:{line}: gen_tokens {gen_tokens:g} is negative")
        if forwards <= 0:
            raise AupInputError(f"{path}:{line}: forwards {forwards:g} must be > 0")
        if correct in (0, 1) and not isinstance(correct, float | str):
            correct = float(correct)  # true/false or 0/1
        else:
            raise AupInputError(f"{path}:{line}: field 'correct' must be true/false (or 0/1), "
                                f"got {json.dumps(correct)}")
        group = groups.setdefault((task, model, method, config), _Group(line=line))
        group.seen += 1
        if group.seen <= skip_first:
            continue
        group.samples += 1
        group.gen_tokens += gen_tokens
        group.forwards += forwards
        group.correct += correct
    if not groups:
        raise AupInputError(f"{path}:1: empty file")
    curves: dict[tuple[str, str, str, str], list[Point]] = {}
    for (task, model, method, config), group in groups.items():
        where = f"{path}:{group.line}: {model} {method} on {task} with config {config}"
        if group.samples == 0:
            raise AupInputError(
                f"{where}: all {group.seen} samples skipped by --skip-first {skip_first}"
            )
        tpf = group.gen_tokens / group.forwards
        if one_token_tpf == "nominal" and is_one_token_per_forward(method, json.loads(config)):
            tpf = 1.0
        if tpf <= 0:
            raise AupInputError(f"{where}: TPF is {tpf:g} (no generated tokens); must be > 0")
        accuracy = 100.0 * group.correct / group.samples
        point = Point(tpf, accuracy, config=config, samples=group.samples, line=group.line)
        curves.setdefault((task, model, method, _fixed_options(config)), []).append(point)
    settings: dict[tuple[str, str, str], list[str]] = {}
    for task, model, method, fixed in curves:
        settings.setdefault((task, model, method), []).append(fixed)
    return [
        Curve(str(path), task, _curve_name(method, fixed, settings[task, model, method]),
              tuple(points), model)
        for (task, model, method, fixed), points in curves.items()
    ]


def _fixed_options(config: str) -> str:
    """The config without its swept options: what stays the same along one curve."""
    options = {key: value for key, value in json.loads(config).items() if key not in SWEPT_OPTIONS}
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def _curve_name(method: str, fixed: str, all_fixed: list[str]) -> str:
    """`method`, or `method [key=value ...]` with the options that tell its curves apart."""
    if len(all_fixed) == 1:
        return method
    labels = _config_labels_of([json.loads(setting) for setting in all_fixed])
    return f"{method} [{labels[all_fixed.index(fixed)]}]"


def _yaml_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line, mapping) for each item of a YAML list of rows."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AupInputError(f"{path}:{line}: malformed YAML: {problem}") from None
    if data is None:
        raise AupInputError(f"{path}:1: empty file")
    if not isinstance(data, list):
        raise AupInputError(
            f"{path}:{node.start_mark.line + 1}: expected a list of rows with "
            + ", ".join(SUMMARY_FIELDS)
        )
    rows = []
    for item_node, item in zip(node.value, data, strict=True):
        line = item_node.start_mark.line + 1
        if not isinstance(item, dict):
            raise AupInputError(
                f"{path}:{line}: expected a mapping with {', '.join(SUMMARY_FIELDS)}"
            )
        rows.append((line, item))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line, mapping) for each data row of a CSV file with a header row."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in SUMMARY_FIELDS if name not in (reader.fieldnames or [])]
    if missing:
        raise AupInputError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
    rows = []
    for row in reader:
        if any(value is None for value in row.values()):
            raise AupInputError(f"{path}:{reader.line_num}: row has fewer columns than the header")
        rows.append((reader.line_num, row))
    return rows


def _summary_curves(path: Path, rows: list[tuple[int, dict]], scale: str) -> list[Curve]:
    """Curves from summary rows; accuracy is checked against the declared scale."""
    if not rows:
        raise AupInputError(f"{path}:1: empty file")
    parsed: list[tuple[int, str, str, float, float]] = []
    for line, row in rows:
        _require_fields(path, line, row, SUMMARY_FIELDS)
        task = _name(path, line, row, "task")
        method = _name(path, line, row, "method")
        tpf = _number(path, line, row["tpf"], "tpf")
        accuracy = _number(path, line, row["accuracy"], "accuracy")
        if tpf <= 0:
            raise AupInputError(f"{path}:{line}: TPF {tpf:g} must be > 0")
        if accuracy < 0:
            raise AupInputError(f"{path}:{line}: accuracy {accuracy:g} is negative")
        parsed.append((line, task, method, tpf, accuracy))
    if scale == "fraction":
        factor, limit = 100.0, 1.0
    else:
        factor, limit = 1.0, 100.0
        if all(row[4] <= 1.0 for row in parsed):
            raise AupInputError(
                f"{path}:{parsed[0][0]}: every accuracy is <= 1, which looks like a 0-1 scale; "
                "give percent, or pass --scale fraction"
            )
    curves: dict[tuple[str, str], list[Point]] = {}
    for line, task, method, tpf, accuracy in parsed:
        if accuracy > limit:
            raise AupInputError(
                f"{path}:{line}: accuracy {accuracy:g} is above {limit:g} ({scale})"
            )
        curves.setdefault((task, method), []).append(Point(tpf, accuracy * factor, line=line))
    return [Curve(str(path), task, method, tuple(pts)) for (task, method), pts in curves.items()]


def _require_fields(path: Path, line: int, row: Mapping, names: Sequence[str]) -> None:
    missing = [name for name in names if name not in row]
    if missing:
        raise AupInputError(f"{path}:{line}: missing field(s) {', '.join(missing)}")


def _name(path: Path, line: int, row: Mapping, key: str) -> str:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or str(value) == "":
        raise AupInputError(f"{path}:{line}: field {key!r} must be a non-empty name")
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(path: Path, line: int, value: object, key: str) -> float:
    """A finite number; CSV cells arrive as text."""
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if not _is_number(number) or not math.isfinite(number):
        raise AupInputError(f"{path}:{line}: field {key!r} is {value!r}, not a finite number")
    return float(number)


# --- the report -----------------------------------------------------------------------------


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
    error: str | None
    model: str | None = None


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
    points = tuple(
        ScoredPoint(point, weight(point.accuracy, y_max, alpha),
                    point in above and is_kept(point, above[0]))
        for point in ordered
    )
    value, error = None, None
    if not above:
        error = (f"{curve.source}:{ordered[0].line}: {curve.method} on {curve.task}: every "
                 f"point is below the floor {floor:g}; no AUP")
    else:
        try:
            value = aup_score(above, y_max, alpha)
        except AccuracyDropError as exc:
            error = (f"{curve.source}:{exc.last.line}: {curve.method} on {curve.task}: {exc}; "
                     "no AUP")
    return CurveScore(curve.source, curve.task, curve.method, y_max, points, value, error,
                      curve.model)


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
    return _config_labels_of([json.loads(point.config) if point.config else {} for point in points])


def _config_labels_of(configs: Sequence[dict]) -> list[str]:
    """`key=value` for the keys whose values differ between `configs`."""
    keys = sorted({key for config in configs for key in config})
    varying = [key for key in keys if len({json.dumps(c.get(key)) for c in configs}) > 1]
    return [
        " ".join(f"{key}={json.dumps(config.get(key))}" for key in varying) for config in configs
    ]


# --- the plot -------------------------------------------------------------------------------


def plot(report: Report, path: Path) -> None:
    """Accuracy against TPF, one panel per task, one line per curve with its AUP in the legend.

    Panels are `PANEL_SIZE_PX` each, `PANELS_PER_ROW` to a row; the PNG is exactly that
    grid in pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(curve.task for curve in report.curves))
    columns = min(len(tasks), PANELS_PER_ROW)
    rows = math.ceil(len(tasks) / columns)
    width, height = PANEL_SIZE_PX
    figure = Figure(figsize=(columns * width / PLOT_DPI, rows * height / PLOT_DPI), dpi=PLOT_DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    several_files = len(report.sources) > 1
    styles = list(itertools.product(["-", "--", ":", "-."], ["o", "s", "^", "D", "v", "P"]))
    for axis, task in zip(axes, tasks, strict=False):
        for index, curve in enumerate(c for c in report.curves if c.task == task):
            line_style, marker = styles[index % len(styles)]
            kept = [s.point for s in curve.points if s.kept]
            dropped = [s.point for s in curve.points if not s.kept]
            name = f"{curve.model}: {curve.method}" if curve.model else curve.method
            name = f"{name} [{Path(curve.source).stem}]" if several_files else name
            score = "AUP error" if curve.aup is None else f"AUP {curve.aup:.1f}"
            (line,) = axis.plot(
                [p.tpf for p in kept],
                [p.accuracy for p in kept],
                marker=marker,
                linestyle=line_style,
                markersize=4,
                label=f"{name} ({score})",
            )
            if dropped:
                axis.plot(
                    [p.tpf for p in dropped],
                    [p.accuracy for p in dropped],
                    linestyle="none",
                    marker="x",
                    color=line.get_color(),
                )
        axis.set_title(f"{task} (y_max {report.y_max[task]:g})", fontsize=9)
        axis.set_xlabel("tokens per forward", fontsize=8)
        axis.set_ylabel("accuracy (%)", fontsize=8)
        axis.tick_params(labelsize=7)
        axis.grid(alpha=0.3)
        # Below the panel, inside the figure: it never hides a point or leaves the image.
        axis.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    for axis in axes[len(tasks) :]:
        axis.set_visible(False)
    figure.savefig(path, dpi=PLOT_DPI, format="png")
