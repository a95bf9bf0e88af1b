"""AUP: the §5.5 test vectors of algorithms.md, its edge cases, result files, plot, bad input."""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from d3cli import aup
from d3cli.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# algorithms.md §5.5, copied verbatim: file | task | method | pairs (ρ, y) | y_max | W | AUP
SPEC_TABLE = """
| llada | GSM8K-CoT | Qwen-2.5-7B-it | (1.0, 74.1) | 74.98 | 0.965403 | 74.100000 |
| llada | GSM8K-CoT | LLaDA | (1.0, 72.55) | 74.98 | 0.907351 | 72.550000 |
| llada | GSM8K-CoT | Fast-dLLM-LLaDA | (1.0, 74.79); (2.77, 74.68) | 74.98 | 0.992427; 0.988069 | 205.781115 |
| llada | GSM8K-CoT | D2F | (1.0, 74.98); (2.88, 74.39) | 74.98 | 1.000000; 0.976670 | 213.756423 |
| llada | GSM8K-CoT | dParallel-LLaDA | (1.0, 74.0); (5.14, 72.63) | 74.98 | 0.961548; 0.910260 | 358.142184 |
| llada | GSM8K-CoT | d3LLM-LLaDA | (1.0, 74.02); (9.11, 73.09) | 74.98 | 0.962318; 0.927168 | 637.654926 |
| llada | MATH | Qwen-2.5-7B-it | (1.0, 41.15) | 41.15 | 1.000000 | 41.150000 |
| llada | MATH | LLaDA | (1.0, 32.2) | 41.15 | 0.520747 | 32.200000 |
| llada | MATH | Fast-dLLM-LLaDA | (1.0, 32.1); (1.97, 30.82) | 41.15 | 0.516964; 0.470905 | 47.187310 |
| llada | MATH | D2F | (1.0, 29.1); (2.66, 28.94) | 41.15 | 0.415408; 0.410591 | 48.995833 |
| llada | MATH | dParallel-LLaDA | (1.0, 32.0); (3.17, 30.18) | 41.15 | 0.513209; 0.449438 | 64.535612 |
| llada | MATH | d3LLM-LLaDA | (1.0, 32.76); (5.74, 30.36) | 41.15 | 0.542447; 0.455375 | 107.641927 |
| llada | MBPP | Qwen-2.5-7B-it | (1.0, 63.6) | 63.6 | 1.000000 | 63.600000 |
| llada | MBPP | LLaDA | (1.0, 41.72) | 63.6 | 0.356267 | 41.720000 |
| llada | MBPP | Fast-dLLM-LLaDA | (1.0, 41.58); (2.13, 38.6) | 63.6 | 0.353922; 0.307511 | 56.601081 |
| llada | MBPP | D2F | (1.0, 39.1); (2.13, 39.0) | 63.6 | 0.314850; 0.313368 | 52.960561 |
| llada | MBPP | dParallel-LLaDA | (1.0, 41.62); (2.35, 40.0) | 63.6 | 0.354590; 0.328504 | 60.451277 |
| llada | MBPP | d3LLM-LLaDA | (1.0, 42.0); (4.21, 40.6) | 63.6 | 0.361003; 0.337934 | 88.356010 |
| llada | HumanEval | Qwen-2.5-7B-it | (1.0, 67.73) | 67.73 | 1.000000 | 67.730000 |
| llada | HumanEval | LLaDA | (1.0, 38.28) | 67.73 | 0.271323 | 38.280000 |
| llada | HumanEval | Fast-dLLM-LLaDA | (1.0, 38.16); (2.56, 37.8) | 67.73 | 0.269885; 0.265616 | 54.024484 |
| llada | HumanEval | D2F | (1.0, 41.02); (2.69, 40.64) | 67.73 | 0.306334; 0.301221 | 61.982279 |
| llada | HumanEval | dParallel-LLaDA | (1.0, 39.68); (4.93, 39.02) | 67.73 | 0.288681; 0.280364 | 83.685505 |
| llada | HumanEval | d3LLM-LLaDA | (1.0, 39.8); (5.95, 39.63) | 67.73 | 0.290219; 0.288042 | 96.640480 |
| llada | Long-GSM8K | Qwen-2.5-7B-it | (1.0, 82.56) | 82.56 | 1.000000 | 82.560000 |
| llada | Long-GSM8K | LLaDA | (1.0, 78.58) | 82.56 | 0.865349 | 78.580000 |
| llada | Long-GSM8K | Fast-dLLM-LLaDA | (1.0, 78.45); (2.45, 78.01) | 82.56 | 0.861271; 0.847610 | 175.374379 |
| llada | Long-GSM8K | D2F | (1.0, 76.0); (2.7, 75.66) | 82.56 | 0.787909; 0.778235 | 176.948022 |
| llada | Long-GSM8K | dParallel-LLaDA | (1.0, 79.15); (4.49, 76.65) | 82.56 | 0.883459; 0.806741 | 309.075553 |
| llada | Long-GSM8K | d3LLM-LLaDA | (1.0, 78.32); (6.95, 74.22) | 82.56 | 0.857212; 0.738560 | 441.129631 |
| dream | GSM8K-CoT | Qwen-2.5-7B-it | (1.0, 74.1) | 83.94 | 0.703505 | 74.100000 |
| dream | GSM8K-CoT | EAGLE-3 | (1.0, 76.57); (5.12, 76.57) | 83.94 | 0.768433; 0.768433 | 318.986201 |
| dream | GSM8K-CoT | Dream | (1.0, 83.94) | 83.94 | 1.000000 | 83.940000 |
| dream | GSM8K-CoT | Fast-dLLM-Dream | (1.0, 83.68); (1.44, 79.0) | 83.94 | 0.990751; 0.838153 | 116.486422 |
| dream | GSM8K-CoT | Fast-dLLM-v2-7B | (1.0, 82.82); (2.21, 81.48) | 83.94 | 0.960762; 0.915834 | 176.106448 |
| dream | GSM8K-CoT | dParallel-Dream | (1.0, 83.8); (3.02, 82.12) | 83.94 | 0.995009; 0.937024 | 245.733454 |
| dream | GSM8K-CoT | d3LLM-Dream | (1.0, 83.47); (4.94, 81.36) | 83.94 | 0.983343; 0.911915 | 391.327796 |
| dream | MATH | Qwen-2.5-7B-it | (1.0, 41.15) | 49.92 | 0.590348 | 41.150000 |
| dream | MATH | EAGLE-3 | (1.0, 39.8); (5.72, 39.8) | 49.92 | 0.544344; 0.544344 | 142.058368 |
| dream | MATH | Dream | (1.0, 39.63) | 49.92 | 0.538812 | 39.630000 |
| dream | MATH | Fast-dLLM-Dream | (1.0, 39.53); (1.78, 38.3) | 49.92 | 0.535583; 0.497422 | 55.216912 |
| dream | MATH | Fast-dLLM-v2-7B | (1.0, 49.92); (2.61, 48.74) | 49.92 | 1.000000; 0.931543 | 126.655322 |
| dream | MATH | dParallel-Dream | (1.0, 39.06); (2.94, 38.72) | 49.92 | 0.520667; 0.510137 | 77.947054 |
| dream | MATH | d3LLM-Dream | (1.0, 39.38); (3.92, 38.21) | 49.92 | 0.530777; 0.494738 | 97.496691 |
| dream | MBPP-Instruct | Qwen-2.5-7B-it | (1.0, 63.8) | 63.8 | 1.000000 | 63.800000 |
| dream | MBPP-Instruct | EAGLE-3 | (1.0, 60.2); (5.69, 60.2) | 63.8 | 0.844273; 0.844273 | 298.570441 |
| dream | MBPP-Instruct | Dream | (1.0, 57.2) | 63.8 | 0.733194 | 57.200000 |
| dream | MBPP-Instruct | Fast-dLLM-Dream | (1.0, 56.38); (1.2, 53.2) | 63.8 | 0.705462; 0.607482 | 63.589198 |
| dream | MBPP-Instruct | Fast-dLLM-v2-7B | (1.0, 61.23); (2.04, 59.12) | 63.8 | 0.886170; 0.802468 | 114.115108 |
| dream | MBPP-Instruct | dParallel-Dream | (1.0, 57.8); (2.24, 55.4) | 63.8 | 0.754174; 0.673691 | 107.966518 |
| dream | MBPP-Instruct | d3LLM-Dream | (1.0, 58.8); (2.96, 55.6) | 63.8 | 0.790484; 0.680056 | 141.405755 |
| dream | HumanEval-Instruct | Qwen-2.5-7B-it | (1.0, 72.25) | 72.25 | 1.000000 | 72.250000 |
| dream | HumanEval-Instruct | EAGLE-3 | (1.0, 67.58); (5.98, 67.58) | 72.25 | 0.823732; 0.823732 | 344.805689 |
| dream | HumanEval-Instruct | Dream | (1.0, 55.2) | 72.25 | 0.492649 | 55.200000 |
| dream | HumanEval-Instruct | Fast-dLLM-Dream | (1.0, 54.86); (1.33, 54.27) | 72.25 | 0.485743; 0.473987 | 63.501239 |
| dream | HumanEval-Instruct | Fast-dLLM-v2-7B | (1.0, 63.2); (2.58, 61.7) | 72.25 | 0.686754; 0.645286 | 128.941429 |
| dream | HumanEval-Instruct | dParallel-Dream | (1.0, 56.08); (2.57, 54.27) | 72.25 | 0.510983; 0.473987 | 98.767699 |
| dream | HumanEval-Instruct | d3LLM-Dream | (1.0, 58.86); (3.2, 57.1) | 72.25 | 0.573506; 0.533090 | 129.475605 |
| dream | Long-GSM8K | Qwen-2.5-7B-it | (1.0, 82.56) | 82.56 | 1.000000 | 82.560000 |
| dream | Long-GSM8K | EAGLE-3 | (1.0, 80.52); (5.57, 80.52) | 82.56 | 0.928553; 0.928553 | 422.205560 |
| dream | Long-GSM8K | Dream | (1.0, 78.95) | 82.56 | 0.877062 | 78.950000 |
| dream | Long-GSM8K | Fast-dLLM-Dream | (1.0, 78.83); (1.79, 76.57) | 82.56 | 0.873246; 0.804399 | 130.350176 |
| dream | Long-GSM8K | Fast-dLLM-v2-7B | (1.0, 82.34); (2.58, 80.97) | 82.56 | 0.992038; 0.943861 | 207.245971 |
| dream | Long-GSM8K | dParallel-Dream | (1.0, 81.27); (3.49, 78.56) | 82.56 | 0.954207; 0.864721 | 262.393628 |
| dream | Long-GSM8K | d3LLM-Dream | (1.0, 81.2); (4.8, 77.18) | 82.56 | 0.951783; 0.822428 | 348.643529 |
| coder | HumanEval | Qwen2.5-Coder-7B | (1.0, 86.6) | 86.6 | 1.000000 | 86.600000 |
| coder | HumanEval | Dream-Coder-7B | (1.0, 82.9) | 86.6 | 0.879699 | 82.900000 |
| coder | HumanEval | d3LLM-Coder-7B | (1.0, 82.4); (2.88, 79.7) | 86.6 | 0.864593; 0.787391 | 208.357684 |
| coder | HumanEval+ | Qwen2.5-Coder-7B | (1.0, 82.3) | 82.3 | 1.000000 | 82.300000 |
| coder | HumanEval+ | Dream-Coder-7B | (1.0, 76.8) | 82.3 | 0.818333 | 76.800000 |
| coder | HumanEval+ | d3LLM-Coder-7B | (1.0, 74.4); (2.88, 71.3) | 82.3 | 0.749783; 0.669669 | 171.719397 |
| coder | MBPP | Qwen2.5-Coder-7B | (1.0, 83.5) | 83.5 | 1.000000 | 83.500000 |
| coder | MBPP | Dream-Coder-7B | (1.0, 79.9) | 83.5 | 0.878674 | 79.900000 |
| coder | MBPP | d3LLM-Coder-7B | (1.0, 80.1); (2.5, 80.0) | 83.5 | 0.885011; 0.881837 | 186.177206 |
| coder | MBPP+ | Qwen2.5-Coder-7B | (1.0, 70.1) | 70.1 | 1.000000 | 70.100000 |
| coder | MBPP+ | Dream-Coder-7B | (1.0, 68.8) | 70.1 | 0.945885 | 68.800000 |
| coder | MBPP+ | d3LLM-Coder-7B | (1.0, 69.6); (2.5, 69.3) | 70.1 | 0.978829; 0.966343 | 170.920549 |
"""  # noqa: E501 (the spec table is kept verbatim)

# algorithms.md §5.5 per-file averages (sum of the five task AUPs / 5, rounded to 2 places)
SPEC_AVERAGES = {
    "llada": {
        "Qwen-2.5-7B-it": 65.83,
        "LLaDA": 52.67,
        "Fast-dLLM-LLaDA": 107.79,
        "D2F": 110.93,
        "dParallel-LLaDA": 175.18,
        "d3LLM-LLaDA": 274.28,
    },
    "dream": {
        "Qwen-2.5-7B-it": 66.77,
        "EAGLE-3": 305.33,
        "Dream": 62.98,
        "Fast-dLLM-Dream": 85.83,
        "Fast-dLLM-v2-7B": 150.61,
        "dParallel-Dream": 158.56,
        "d3LLM-Dream": 221.67,
    },
}


def parse_spec_rows() -> list[dict]:
    rows = []
    for line in SPEC_TABLE.strip().splitlines():
        file, task, method, pairs, y_max, weights, value = (
            cell.strip() for cell in line.strip("|").split("|")
        )
        points = [
            tuple(float(number) for number in pair.strip(" ()").split(","))
            for pair in pairs.split(";")
        ]
        rows.append(
            {
                "file": file,
                "task": task,
                "method": method,
                "points": points,
                "y_max": float(y_max),
                "weights": [float(w) for w in weights.split(";")],
                "aup": float(value),
            }
        )
    return rows


SPEC_ROWS = parse_spec_rows()
runner = CliRunner()


def row_id(row: dict) -> str:
    return f"{row['file']}-{row['task']}-{row['method']}"


def to_points(pairs) -> list[aup.Point]:
    return [aup.Point(tpf, accuracy) for tpf, accuracy in pairs]


_reports: dict[str, aup.Report] = {}


def leaderboard_report(name: str) -> aup.Report:
    """The report of one shipped example file, built once per test session."""
    if name not in _reports:
        curves = aup.load([EXAMPLES / f"{name}_leaderboard.yaml"])
        _reports[name] = aup.build_report(curves)
    return _reports[name]


def find_curve(report: aup.Report, task: str, method: str) -> aup.CurveScore:
    (curve,) = [c for c in report.curves if c.task == task and c.method == method]
    return curve


def test_spec_table_has_77_rows_across_three_files():
    assert len(SPEC_ROWS) == 77
    assert {row["file"] for row in SPEC_ROWS} == {"llada", "dream", "coder"}


@pytest.mark.parametrize("row", SPEC_ROWS, ids=row_id)
def test_aup_score_reproduces_spec_row(row):
    points = to_points(row["points"])
    assert aup.aup_score(points, row["y_max"]) == pytest.approx(row["aup"], abs=1e-6)
    for point, expected in zip(points, row["weights"], strict=True):
        assert aup.weight(point.accuracy, row["y_max"]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("row", SPEC_ROWS, ids=row_id)
def test_example_leaderboard_reproduces_spec_row(row):
    """The shipped example file holds the spec's points and scores them with its y_max."""
    report = leaderboard_report(row["file"])
    curve = find_curve(report, row["task"], row["method"])
    assert [(s.point.tpf, s.point.accuracy) for s in curve.points] == row["points"]
    assert curve.y_max == row["y_max"]
    assert curve.aup == pytest.approx(row["aup"], abs=1e-6)
    assert [s.weight for s in curve.points] == pytest.approx(row["weights"], abs=1e-6)


@pytest.mark.parametrize("name", ["llada", "dream", "coder"])
def test_example_leaderboard_has_exactly_the_spec_curves(name):
    report = leaderboard_report(name)
    expected = {(row["task"], row["method"]) for row in SPEC_ROWS if row["file"] == name}
    assert {(curve.task, curve.method) for curve in report.curves} == expected
    assert not report.errors


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_per_file_average_matches_spec(name):
    averages = {a.method: a.average for a in leaderboard_report(name).averages}
    assert averages == pytest.approx(SPEC_AVERAGES[name], abs=0.005 + 1e-9)


def test_coder_average_is_over_its_four_tasks_not_five():
    """§5.5: the reference divides by a fixed 5; d3 averages over the file's tasks."""
    report = leaderboard_report("coder")
    for average in report.averages:
        spec = [
            r["aup"] for r in SPEC_ROWS if r["file"] == "coder" and r["method"] == average.method
        ]
        assert len(spec) == 4
        assert average.average == pytest.approx(sum(spec) / 4, abs=1e-6)


def test_method_in_two_files_is_averaged_per_file():
    """Qwen-2.5-7B-it is in the LLaDA and Dream files: two averages, not ten tasks ÷ 5."""
    overrides = {"GSM8K-CoT": 74.98, "MATH": 41.15, "Long-GSM8K": 82.56}
    files = [EXAMPLES / "llada_leaderboard.yaml", EXAMPLES / "dream_leaderboard.yaml"]
    report = aup.build_report(aup.load(files), y_max=overrides)
    qwen = [a for a in report.averages if a.method == "Qwen-2.5-7B-it"]
    assert [len(a.aup_by_task) for a in qwen] == [5, 5]
    # single TPF=1 points score their accuracy whatever y_max is
    assert qwen[0].average == pytest.approx(SPEC_AVERAGES["llada"]["Qwen-2.5-7B-it"], abs=0.005)
    assert qwen[1].average == pytest.approx(SPEC_AVERAGES["dream"]["Qwen-2.5-7B-it"], abs=0.005)


# --- synthetic edge cases listed under the §5.5 table -------------------------------------


def test_point_more_than_5_below_first_is_dropped():
    points = to_points([(1, 80), (2, 74), (3, 78)])
    assert aup.aup_score(points, 80) == pytest.approx(232.363992, abs=1e-6)


def test_unsorted_input_gives_the_sorted_result():
    points = to_points([(3, 78), (1, 80), (2, 74)])
    assert aup.aup_score(points, 80) == pytest.approx(232.363992, abs=1e-6)


@pytest.mark.parametrize(("y_max", "expected"), [(80, 302.945534), (90, 240.709080)])
def test_y_max_sets_the_weights(y_max, expected):
    points = to_points([(1, 80), (2, 79), (4, 77)])
    assert aup.aup_score(points, y_max) == pytest.approx(expected, abs=1e-6)


def test_single_point_scores_its_rectangle():
    assert aup.aup_score(to_points([(1.0, 50.0)]), 60) == pytest.approx(50.0, abs=1e-12)


def test_two_points_first_rectangle_unweighted():
    assert aup.aup_score(to_points([(2, 70), (5, 69)]), 70) == pytest.approx(344.157993, abs=1e-6)


def test_last_point_more_than_5_below_first_raises():
    with pytest.raises(aup.AccuracyDropError):
        aup.aup_score(to_points([(1, 80), (2, 70)]), 80)


def test_drop_error_is_reported_and_others_still_scored(tmp_path):
    table = tmp_path / "board.yaml"
    table.write_text(
        "- {task: T, method: steady, tpf: 1, accuracy: 80}\n"
        "- {task: T, method: steady, tpf: 2, accuracy: 79}\n"
        "- {task: T, method: falls, tpf: 1, accuracy: 80}\n"
        "- {task: T, method: falls, tpf: 2, accuracy: 70}\n"
    )
    result = runner.invoke(app, ["aup", str(table), "--format", "json"])
    assert result.exit_code == 1
    scores = {c["method"]: c["aup"] for c in json.loads(result.stdout)["curves"]}
    w79 = math.exp(-3 * (1 - 79 / 80))
    assert scores == {"steady": pytest.approx(80 + 0.5 * (80 + 79 * w79)), "falls": None}
    (line,) = result.stderr.strip().splitlines()
    assert "falls" in line and " T" in line and "80" in line and "70" in line
    assert "board.yaml:4:" in line


def test_y_max_option_overrides_the_best_accuracy(tmp_path):
    table = tmp_path / "board.csv"
    table.write_text("task,method,tpf,accuracy\nT,m,1,80\nT,m,2,79\nT,m,4,77\n")
    result = runner.invoke(app, ["aup", str(table), "--y-max", "T=90", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["y_max"] == {"T": 90.0}
    assert data["curves"][0]["aup"] == pytest.approx(240.709080, abs=1e-6)


def test_floor_scores_only_the_points_at_or_above_it(tmp_path):
    """--floor T=78: the (4, 77) point is dropped before scoring; y_max still sees every
    point, and a curve with no point at the floor has no AUP (exit 1)."""
    table = tmp_path / "board.csv"
    table.write_text("task,method,tpf,accuracy\nT,m,1,80\nT,m,2,79\nT,m,4,77\n"
                     "T,low,1,70\nT,low,2,60\n")
    result = runner.invoke(app, ["aup", str(table), "--floor", "T=78", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["y_max"] == {"T": 80.0}
    scores = {curve["method"]: curve for curve in data["curves"]}
    w79 = math.exp(-3 * (1 - 79 / 80))
    assert scores["m"]["aup"] == pytest.approx(80 + 0.5 * (80 + 79 * w79))
    assert [point["kept"] for point in scores["m"]["points"]] == [True, True, False]
    assert scores["low"]["aup"] is None
    assert "board.csv:5:" in result.stderr and "below the floor 78" in result.stderr
    unfloored = runner.invoke(app, ["aup", str(table), "--format", "json"])
    assert json.loads(unfloored.stdout)["curves"][0]["aup"] == pytest.approx(302.945534)


def test_floor_of_an_unknown_task_is_an_error(tmp_path):
    table = tmp_path / "board.csv"
    table.write_text("task,method,tpf,accuracy\nT,m,1,80\n")
    result = runner.invoke(app, ["aup", str(table), "--floor", "U=70"])
    assert result.exit_code != 0 and "--floor names task(s) U" in result.output


# --- result JSONL ---------------------------------------------------------------------------


def write_results(path: Path, records: list[dict]) -> None:
    """Result records in the architecture.md contract, one JSON line each."""
    lines = []
    for number, record in enumerate(records):
        full = {
            "task": "arith",
            "model": "tiny",
            "id": str(number),
            "tpf": record["gen_tokens"] / record["forwards"],
            "seconds": 0.5,
            "output": "42",
            **record,
        }
        lines.append(json.dumps(full))
    path.write_text("\n".join(lines) + "\n")


def record(method, config, gen_tokens, forwards, correct) -> dict:
    return {
        "method": method,
        "config": config,
        "gen_tokens": gen_tokens,
        "forwards": forwards,
        "correct": correct,
    }


def test_results_jsonl_round_trip(tmp_path):
    slow = {"threshold": 0.9, "blocks": 4}
    fast = {"threshold": 0.5, "blocks": 4}
    fast_reordered = {"blocks": 4, "threshold": 0.5}  # same config, keys in another order
    records = []
    # two warm-up records per group, interleaved, with values that would spoil every number
    for _ in range(2):
        records += [
            record("multiblock", slow, 900, 1, False),
            record("multiblock", fast, 900, 1, False),
            record("vanilla", {}, 900, 1, False),
        ]
    records += [
        record("multiblock", slow, 10, 10, True),
        record("multiblock", fast, 30, 10, True),
        record("vanilla", {}, 16, 16, True),
        record("multiblock", slow, 12, 12, True),
        record("multiblock", fast_reordered, 50, 5, False),
        record("vanilla", {}, 20, 20, False),
        record("multiblock", slow, 8, 8, False),
        record("multiblock", fast, 20, 5, True),
        record("multiblock", slow, 6, 6, True),
        record("multiblock", fast_reordered, 20, 10, True),
    ]
    results = tmp_path / "results.jsonl"
    write_results(results, records)
    outcome = runner.invoke(app, ["aup", str(results), "--skip-first", "2", "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    data = json.loads(outcome.stdout)

    # by hand: Σ gen_tokens / Σ forwards and mean(correct) over the records after warm-up
    slow_point = (36 / 36, 75.0)  # 4 records, 3 correct
    fast_point = (120 / 30, 75.0)  # 4 records, 3 correct; Σ/Σ = 4, mean of ratios is 5.5
    vanilla_point = (36 / 36, 50.0)
    y_max = 75.0
    w = math.exp(-3 * (1 - 75.0 / y_max))
    multiblock_aup = 1.0 * 75.0 + 0.5 * (4.0 - 1.0) * (75.0 * w + 75.0 * w)
    assert data["y_max"] == {"arith": y_max}
    curves = {c["method"]: c for c in data["curves"]}
    assert set(curves) == {"multiblock", "vanilla"}
    multiblock = curves["multiblock"]
    assert [(p["tpf"], p["accuracy"]) for p in multiblock["points"]] == [slow_point, fast_point]
    assert [p["samples"] for p in multiblock["points"]] == [4, 4]
    assert [p["config"] for p in multiblock["points"]] == [slow, fast]
    assert multiblock["aup"] == pytest.approx(multiblock_aup, abs=1e-9)
    assert [(p["tpf"], p["accuracy"]) for p in curves["vanilla"]["points"]] == [vanilla_point]
    assert curves["vanilla"]["aup"] == pytest.approx(50.0, abs=1e-9)
    assert {a["method"]: a["average"] for a in data["averages"]} == {
        "multiblock": pytest.approx(multiblock_aup),
        "vanilla": pytest.approx(50.0),
    }


def test_nominal_convention_counts_one_token_per_forward_runs_at_tpf_1(tmp_path):
    one_token = {"gen_length": 64, "steps": 64, "block_size": 16, "temperature": 0.0}
    fewer_steps = {**one_token, "steps": 32}  # two tokens per forward: not a one-token run
    records = [record("vanilla", one_token, 38, 64, True),
               record("vanilla", fewer_steps, 38, 32, True),
               record("multiblock", {"threshold": 0.2}, 38, 8, True)]
    results = tmp_path / "results.jsonl"
    write_results(results, records)

    def points(*options: str) -> dict[str, float]:
        outcome = runner.invoke(app, ["aup", str(results), "--skip-first", "0",
                                      "--format", "json", *options])
        assert outcome.exit_code == 0, outcome.output
        return {json.dumps(point["config"], sort_keys=True): point["tpf"]
                for curve in json.loads(outcome.stdout)["curves"] for point in curve["points"]}

    measured, nominal = points(), points("--one-token-tpf", "nominal")
    key = json.dumps(one_token, sort_keys=True)
    assert measured[key] == 38 / 64 and nominal[key] == 1.0
    for other in (fewer_steps, {"threshold": 0.2}):
        name = json.dumps(other, sort_keys=True)
        assert measured[name] == nominal[name]
    outcome = runner.invoke(app, ["aup", str(results), "--one-token-tpf", "paper"])
    assert outcome.exit_code == 2 and "'paper' is not one of measured, nominal" in outcome.output


def test_other_options_split_a_method_into_curves_along_the_threshold(tmp_path):
    records = [
        record("multiblock", {"cache": cache, "threshold": threshold}, tokens, 10, True)
        for cache, tokens in [("none", 20), ("delayed", 30)]
        for threshold in (0.3, 0.5)
    ]
    results = tmp_path / "results.jsonl"
    write_results(results, records)
    outcome = runner.invoke(app, ["aup", str(results), "--skip-first", "0", "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    curves = {c["method"]: c for c in json.loads(outcome.stdout)["curves"]}
    assert set(curves) == {'multiblock [cache="none"]', 'multiblock [cache="delayed"]'}
    assert [p["config"]["threshold"] for p in curves['multiblock [cache="none"]']["points"]] == [
        0.3,
        0.5,
    ]


def test_skip_first_defaults_to_ten(tmp_path):
    records = [record("vanilla", {}, 999, 1, False)] * 10
    records += [record("vanilla", {}, 3, 2, True), record("vanilla", {}, 5, 2, True)]
    results = tmp_path / "results.jsonl"
    write_results(results, records)
    outcome = runner.invoke(app, ["aup", str(results), "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    (point,) = json.loads(outcome.stdout)["curves"][0]["points"]
    assert (point["tpf"], point["accuracy"], point["samples"]) == (2.0, 100.0, 2)


def test_csv_output_carries_every_point_and_average():
    board = EXAMPLES / "llada_leaderboard.yaml"
    result = runner.invoke(app, ["aup", str(board), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    llada = [r for r in SPEC_ROWS if r["file"] == "llada"]
    assert len([r for r in rows if r["kind"] == "point"]) == sum(len(r["points"]) for r in llada)
    assert len([r for r in rows if r["kind"] == "average"]) == len(SPEC_AVERAGES["llada"])
    d3 = [r for r in rows if r["task"] == "GSM8K-CoT" and r["method"] == "d3LLM-LLaDA"]
    assert [float(r["aup"]) for r in d3] == pytest.approx([637.654926] * 2, abs=1e-6)


def test_table_output_shows_the_spec_values():
    result = runner.invoke(app, ["aup", str(EXAMPLES / "llada_leaderboard.yaml")])
    assert result.exit_code == 0, result.output
    for row in (r for r in SPEC_ROWS if r["file"] == "llada"):
        assert f"{row['aup']:.6f}" in result.stdout
    assert "274.28" in result.stdout


def test_table_names_curves_of_one_method_apart(tmp_path):
    """Curve names carry their options in brackets, which rich must print, not parse."""
    results = tmp_path / "results.jsonl"
    write_results(results, [record("multiblock", {"threshold": 0.5, "cache": cache}, 8, 2, True)
                            for cache in ("none", "delayed")])
    result = runner.invoke(app, ["aup", str(results), "--skip-first", "0"])
    assert result.exit_code == 0, result.output
    assert 'multiblock [cache="none"]' in result.stdout
    assert 'multiblock [cache="delayed"]' in result.stdout


# --- plot -----------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(
    ("name", "size"),
    [("llada", (3 * 400, 2 * 350)), ("coder", (3 * 400, 2 * 350))],
)
def test_plot_is_a_png_of_one_panel_per_task(tmp_path, name, size):
    path = tmp_path / "aup.png"
    board = EXAMPLES / f"{name}_leaderboard.yaml"
    result = runner.invoke(app, ["aup", str(board), "--plot", str(path)])
    assert result.exit_code == 0, result.output
    assert png_size(path) == size


def test_plot_of_one_task_is_one_panel(tmp_path):
    table = tmp_path / "one.csv"
    table.write_text("task,method,tpf,accuracy\nT,m,1,80\nT,m,2,79\n")
    path = tmp_path / "one.png"
    result = runner.invoke(app, ["aup", str(table), "--plot", str(path)])
    assert result.exit_code == 0, result.output
    assert png_size(path) == (400, 350)


# --- bad input ------------------------------------------------------------------------------

GOOD_RECORD = json.dumps(
    {
        "task": "arith",
        "method": "vanilla",
        "model": "tiny",
        "id": "0",
        "config": {},
        "gen_tokens": 4,
        "forwards": 4,
        "tpf": 1.0,
        "seconds": 0.1,
        "correct": True,
        "output": "4",
    }
)
NO_CORRECT = json.dumps({k: v for k, v in json.loads(GOOD_RECORD).items() if k != "correct"})
NO_TOKENS = GOOD_RECORD.replace('"gen_tokens": 4', '"gen_tokens": 0')

BAD_INPUTS = {
    "malformed_json": ("r.jsonl", f"{GOOD_RECORD}\n{{not json\n", 2, "malformed JSON"),
    "missing_field": ("r.jsonl", f"{GOOD_RECORD}\n{GOOD_RECORD}\n{NO_CORRECT}\n", 3, "correct"),
    "missing_yaml_field": ("s.yaml", "- {task: T, method: m, tpf: 1}\n", 1, "accuracy"),
    "missing_csv_column": ("s.csv", "task,method,tpf\nT,m,1\n", 1, "accuracy"),
    "fraction_accuracy": (
        "s.yaml",
        "# points\n- {task: T, method: m, tpf: 1, accuracy: 0.74}\n"
        "- {task: T, method: m, tpf: 2, accuracy: 0.72}\n",
        2,
        "0-1 scale",
    ),
    "zero_tpf": ("s.csv", "task,method,tpf,accuracy\nT,m,1,80\nT,m,0,79\n", 3, "TPF"),
    "negative_tpf": ("s.yaml", "- {task: T, method: m, tpf: -2, accuracy: 80}\n", 1, "TPF"),
    "no_generated_tokens": ("r.jsonl", f"{NO_TOKENS}\n", 1, "TPF"),
    "fractional_correct": ("r.jsonl", GOOD_RECORD.replace("true", "0.9") + "\n", 1,
                           "must be true/false"),
    "no_model": ("r.jsonl", GOOD_RECORD.replace('"model": "tiny", ', "") + "\n", 1, "model"),
    "empty_jsonl": ("r.jsonl", "", 1, "empty"),
    "empty_yaml": ("s.yaml", "# nothing here\n", 1, "empty"),
    "empty_csv": ("s.csv", "task,method,tpf,accuracy\n", 1, "empty"),
    "unknown_format": ("results.txt", f"{GOOD_RECORD}\n", None, "unknown format"),
}


@pytest.mark.parametrize("case", BAD_INPUTS.values(), ids=list(BAD_INPUTS))
def test_bad_input_is_a_one_line_error_naming_file_and_line(tmp_path, case):
    name, content, line, message = case
    path = tmp_path / name
    path.write_text(content)
    result = runner.invoke(app, ["aup", str(path), "--skip-first", "0"])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (error,) = result.stderr.strip().splitlines()
    where = f"{path}:{line}:" if line is not None else f"{path}:"
    assert where in error
    assert message in error
    assert "Traceback" not in result.output


def test_fraction_scale_is_accepted_when_declared(tmp_path):
    table = tmp_path / "s.yaml"
    table.write_text("- {task: T, method: m, tpf: 1, accuracy: 0.74}\n")
    result = runner.invoke(app, ["aup", str(table), "--scale", "fraction", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["curves"][0]["aup"] == pytest.approx(74.0)


def test_bad_input_in_the_second_file_names_that_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(f"{GOOD_RECORD}\n[1, 2]\n")
    board = EXAMPLES / "llada_leaderboard.yaml"
    result = runner.invoke(app, ["aup", str(board), str(bad), "--skip-first", "0"])
    assert result.exit_code == 2
    (error,) = result.stderr.strip().splitlines()
    assert f"{bad}:2:" in error


def test_two_models_in_one_file_give_two_curves_never_one(tmp_path):
    path = tmp_path / "results.jsonl"
    student = [record("multiblock", {"threshold": 0.5}, 6, 2, True) for _ in range(4)]
    teacher = [record("multiblock", {"threshold": 0.5}, 6, 6, False) for _ in range(4)]
    write_results(path, [{**one, "model": "arith-d3"} for one in student]
                  + [{**one, "model": "arith-teacher"} for one in teacher])
    report = aup.build_report(aup.load([path], skip_first=0))
    points = {curve.model: [(s.point.tpf, s.point.accuracy) for s in curve.points]
              for curve in report.curves}
    assert points == {"arith-d3": [(3.0, 100.0)], "arith-teacher": [(1.0, 0.0)]}
    result = runner.invoke(app, ["aup", str(path), "--skip-first", "0"])
    assert result.exit_code == 0, result.output
    assert "arith-d3" in result.stdout and "arith-teacher" in result.stdout


def test_a_task_at_zero_accuracy_has_no_aup_and_no_traceback(tmp_path):
    path = tmp_path / "zero.jsonl"
    write_results(path, [record("multiblock", {"threshold": t}, 40, 10, False)
                         for t in (0.1, 0.2) for _ in range(3)])
    result = CliRunner().invoke(app, ["aup", str(path), "--skip-first", "0"])
    assert result.exit_code == 1
    assert "every point on arith is at 0 % accuracy; no AUP" in result.output
    assert "Traceback" not in result.output
    report = aup.build_report(aup.load([path], skip_first=0))
    assert report.curves[0].reason == "every point on arith is at 0 % accuracy"
    aup.plot(report, tmp_path / "zero.png")  # the legend says why, instead of failing


def test_rows_without_a_score_are_left_out_and_counted(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [record("entropy", {"threshold": 0.5}, 40, 10, correct) for correct in
            (True, None, False, None, True)]
    write_results(path, rows)
    result = CliRunner().invoke(app, ["aup", str(path), "--skip-first", "0",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "left out 2 rows without a score" in result.output
    point = json.loads(result.stdout)["curves"][0]["points"][0]
    assert point["samples"] == 3 and point["accuracy"] == pytest.approx(200 / 3)
    write_results(path, [record("entropy", {"threshold": 0.5}, 40, 10, None)] * 2)
    result = CliRunner().invoke(app, ["aup", str(path), "--skip-first", "0"])
    assert result.exit_code == 2 and "no scored sample (2 have 'correct': null" in result.output


def test_piped_tables_fit_80_columns(tmp_path):
    path = tmp_path / "r.jsonl"
    write_results(path, [record("multiblock", {"threshold": t, "cache": "delayed",
                                               "cache_delay": d}, 40, 10, True)
                         for t in (0.1, 0.2) for d in (1, 2) for _ in range(2)])
    result = CliRunner().invoke(app, ["aup", str(path), "--skip-first", "0"])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
