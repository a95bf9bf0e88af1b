"""Reading inputs into curves: `d3 decode` result JSON lines (one record per sample) and
summary tables of published points (YAML or CSV rows `task, method, tpf, accuracy`).

A curve is one method on one task in one input file, with one setting of every option
except the swept ones (`SWEPT_OPTIONS`, the threshold); each of its points is one
(TPF, accuracy) pair: a summary row, or one (task, method, config) group of result records.
A method run with two settings of another option (say `cache`) gives two curves, named
`method [option=value]`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .metric import Point

SKIP_FIRST = 10  # warm-up samples skipped per result group, as the reference harnesses do (§4.2)
SCALES = ("percent", "fraction")
# How a one-token-per-forward point's TPF is counted: `measured` (answer tokens before the
# first EOS ÷ forwards, below 1 when EOS padding costs forwards) or `nominal` (1, as the
# paper's leaderboards put it). Other points are always measured.
TPF_CONVENTIONS = ("measured", "nominal")
RESULT_FIELDS = ("task", "model", "method", "config", "gen_tokens", "forwards", "correct")
SUMMARY_FIELDS = ("task", "method", "tpf", "accuracy")
SWEPT_OPTIONS = ("threshold",)  # config keys that move a point along its method's curve


class AupInputError(ValueError):
    """An input the command cannot use; the message names the file and line."""



@dataclass(frozen=True)
class SampleRows:
    """The scored records behind one point of a result file, in file order (what
    `d3 aup --bootstrap` resamples)."""

    ids: tuple[str, ...]
    gen_tokens: tuple[float, ...]
    forwards: tuple[float, ...]
    correct: tuple[float, ...]


@dataclass(frozen=True)
class Curve:
    """The points of one method on one task, read from one file."""

    source: str
    task: str
    method: str
    points: tuple[Point, ...]
    model: str | None = None  # result files: the model that decoded every point
    samples: tuple[SampleRows, ...] = ()  # result files: each point's records
    unscored: int = 0  # result records without a score (`correct: null`), left out



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
    """Curves of one file: result JSONL (or .jsonl.gz), or a YAML/CSV summary table."""
    compressed = path.suffix.lower() == ".gz"
    suffix = Path(path.stem).suffix.lower() if compressed else path.suffix.lower()
    if path.is_dir():
        raise AupInputError(f"{path}: is a folder; give result files (.jsonl) or summary "
                            "tables (.yaml, .yml, .csv)")
    if suffix not in (".jsonl", ".yaml", ".yml", ".csv"):
        raise AupInputError(
            f"{path}: unknown format {suffix or '(no extension)'!r}; "
            "expected .jsonl or .jsonl.gz (d3 decode results), .yaml, .yml or .csv "
            "(summary table)"
        )
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if compressed else data).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise AupInputError(f"{path}: cannot read: {exc}") from None
    if not text.strip():
        raise AupInputError(f"{path}:1: empty file")
    if suffix == ".jsonl":
        return result_curves(path, text, skip_first, one_token_tpf)
    rows = _csv_rows(path, text) if suffix == ".csv" else _yaml_rows(path, text)
    return _summary_curves(path, rows, scale)


@dataclass
class _Group:
    """The scored records of one (task, model, method, config) group."""

    line: int
    seen: int = 0
    unscored: int = 0
    ids: list[str] = field(default_factory=list)
    gen_tokens: list[float] = field(default_factory=list)
    forwards: list[float] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)

    def rows(self) -> SampleRows:
        return SampleRows(tuple(self.ids), tuple(self.gen_tokens), tuple(self.forwards),
                          tuple(self.correct))


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
        correct = record["correct"]  # None: a prompt without a reference answer
        if gen_tokens < 0:
            raise AupInputError(f"{path}:{line}: gen_tokens {gen_tokens:g} is negative")
        if forwards <= 0:
            raise AupInputError(f"{path}:{line}: forwards {forwards:g} must be > 0")
        if correct in (0, 1) and not isinstance(correct, float | str):
            correct = float(correct)  # true/false or 0/1
        elif correct is not None:
            raise AupInputError(f"{path}:{line}: field 'correct' must be true/false (or 0/1) "
                                f"or null, got {json.dumps(correct)}")
        group = groups.setdefault((task, model, method, config), _Group(line=line))
        group.seen += 1
        if group.seen <= skip_first:
            continue
        if correct is None:
            group.unscored += 1
            continue
        group.ids.append(str(record.get("id", f"line {line}")))
        group.gen_tokens.append(gen_tokens)
        group.forwards.append(forwards)
        group.correct.append(correct)
    if not groups:
        raise AupInputError(f"{path}:1: empty file")
    curves: dict[tuple[str, str, str, str], list[tuple[Point, _Group]]] = {}
    for (task, model, method, config), group in groups.items():
        where = f"{path}:{group.line}: {model} {method} on {task} with config {config}"
        if not group.ids and group.unscored:
            raise AupInputError(f"{where}: no scored sample ({group.unscored} have "
                                "'correct': null, no reference answer)")
        if not group.ids:
            raise AupInputError(
                f"{where}: all {group.seen} samples skipped by --skip-first {skip_first}"
            )
        tpf = sum(group.gen_tokens) / sum(group.forwards)
        if one_token_tpf == "nominal" and is_one_token_per_forward(method, json.loads(config)):
            tpf = 1.0
        if tpf <= 0:
            raise AupInputError(f"{where}: TPF is {tpf:g} (no generated tokens); must be > 0")
        accuracy = 100.0 * sum(group.correct) / len(group.ids)
        point = Point(tpf, accuracy, config=config, samples=len(group.ids), line=group.line)
        key = (task, model, method, _fixed_options(config))
        curves.setdefault(key, []).append((point, group))
    settings: dict[tuple[str, str, str], list[str]] = {}
    for task, model, method, fixed in curves:
        settings.setdefault((task, model, method), []).append(fixed)
    return [
        Curve(str(path), task, _curve_name(method, fixed, settings[task, model, method]),
              tuple(point for point, _ in scored), model,
              tuple(group.rows() for _, group in scored),
              sum(group.unscored for _, group in scored))
        for (task, model, method, fixed), scored in curves.items()
    ]


def _fixed_options(config: str) -> str:
    """The config without its swept options: what stays the same along one curve."""
    options = {key: value for key, value in json.loads(config).items() if key not in SWEPT_OPTIONS}
    return json.dumps(options, sort_keys=True, separators=(",", ":"))


def _curve_name(method: str, fixed: str, all_fixed: list[str]) -> str:
    """`method`, or `method [key=value ...]` with the options that tell its curves apart."""
    if len(all_fixed) == 1:
        return method
    labels = config_labels_of([json.loads(setting) for setting in all_fixed])
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


def config_labels_of(configs: Sequence[dict]) -> list[str]:
    """`key=value` for the keys whose values differ between `configs`."""
    keys = sorted({key for config in configs for key in config})
    varying = [key for key in keys if len({json.dumps(c.get(key)) for c in configs}) > 1]
    return [
        " ".join(f"{key}={json.dumps(config.get(key))}" for key in varying) for config in configs
    ]
