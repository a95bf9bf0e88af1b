"""`d3 aup --bootstrap`: the median over seeds, its interval over seeds and prompts, ratios to
the one-token curve, and the Markdown rendering, on hand-made result files."""

from __future__ import annotations

import gzip
import json
import random
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from d3cli import aup
from d3cli.cli import app

PROMPTS = 40
ONE_TOKEN = {"steps": 64, "gen_length": 64, "block_size": 16, "temperature": 0.0}


def write(path: Path, rows: list[dict], compress: bool = False) -> Path:
    text = "".join(json.dumps({"task": "arith", "model": "m", "seconds": 0.1, "output": "",
                               "tpf": row["gen_tokens"] / row["forwards"], **row}) + "\n"
                   for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def student_rows(seed: int) -> list[dict]:
    """Two sweep points of a multiblock run; accuracy and speed depend on the seed."""
    rng, rows = random.Random(seed), []
    for gamma, forwards in ((0.1, 16), (0.3, 8)):
        for prompt in range(PROMPTS):
            rows.append({"method": "multiblock", "id": f"arith-{prompt}",
                         "config": {"threshold": gamma, "blocks": 4},
                         "gen_tokens": 48, "forwards": forwards + rng.randint(0, 4),
                         "correct": rng.random() < 0.9 - gamma / 3})
    return rows


@pytest.fixture
def runs(tmp_path):
    rng = random.Random(7)
    teacher = [{"method": "vanilla", "id": f"arith-{p}", "config": ONE_TOKEN,
                "gen_tokens": 48, "forwards": 64, "correct": rng.random() < 0.92}
               for p in range(PROMPTS)]
    files = [write(tmp_path / "teacher" / "results.jsonl", teacher)]
    files += [write(tmp_path / "d3" / f"seed{seed}.jsonl.gz", student_rows(seed), True)
              for seed in range(3)]
    return files


def test_the_value_is_the_median_over_seeds_and_the_interval_holds_it(runs):
    curves = aup.load(runs, skip_first=0)
    report = aup.build_report(curves)
    results = aup.bootstrap(curves, report.y_max, {}, draws=300, seed=0)
    student = next(r for r in results if r.run == "d3")
    per_seed = [c.aup for c in report.curves if c.method == "multiblock"]
    assert student.seeds == 3 and student.aup.value == pytest.approx(statistics.median(per_seed))
    assert student.aup.low < student.aup.value < student.aup.high
    teacher = next(r for r in results if r.run == "teacher")
    teacher_aup = next(c.aup for c in report.curves if c.method == "vanilla")
    assert teacher.ratio["measured"].value == pytest.approx(1.0)
    assert student.ratio["measured"].value == pytest.approx(student.aup.value / teacher_aup)
    accuracy = next(c for c in report.curves if c.method == "vanilla").points[0].point.accuracy
    assert student.ratio["nominal"].value == pytest.approx(student.aup.value / accuracy)
    # each point: accuracy and TPF averaged over the seeds
    means = [statistics.mean(c.points[i].point.accuracy for c in report.curves
                             if c.method == "multiblock") for i in range(2)]
    assert [accuracy for accuracy, _ in student.points] == pytest.approx(means)
    again = aup.bootstrap(curves, report.y_max, {}, draws=300, seed=0)
    assert again == results  # a seeded resampling


def test_identical_seeds_and_prompts_give_a_zero_width_interval(tmp_path):
    rows = [{"method": "entropy", "id": f"arith-{p}", "config": {"threshold": t},
             "gen_tokens": 40, "forwards": 10, "correct": True}
            for t in (0.1, 0.2) for p in range(10)]
    files = [write(tmp_path / "same" / f"seed{s}.jsonl", rows) for s in range(2)]
    curves = aup.load(files, skip_first=0)
    (result,) = aup.bootstrap(curves, {"arith": 100.0}, {}, draws=50)
    assert result.aup.low == result.aup.value == result.aup.high == pytest.approx(400.0)
    assert result.ratio == {}  # no one-token curve to divide by


def test_the_floor_scores_nothing_below_it(runs):
    curves = aup.load(runs, skip_first=0)
    results = aup.bootstrap(curves, {"arith": 100.0}, {"arith": 101.0}, draws=20)
    assert all(r.aup.value == r.aup.high == 0 for r in results)


def test_the_cli_prints_the_interval_table_as_markdown(runs):
    result = CliRunner().invoke(app, ["aup", *map(str, runs), "--skip-first", "0",
                                      "--bootstrap", "200", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("**AUP: median over seeds, 95 % interval over 200 resamples")
    assert lines[2].startswith("| task | run | method | seeds | AUP (95 % CI) |")
    assert lines[4].startswith("| arith | teacher | vanilla | 1 |")
    assert lines[5].startswith("| arith | d3 | multiblock | 3 |")
    table = CliRunner().invoke(app, ["aup", *map(str, runs), "--skip-first", "0",
                                     "--bootstrap", "200", "--format", "csv"])
    assert table.exit_code == 2 and "not csv" in table.output


def test_summary_tables_cannot_be_bootstrapped():
    table = Path(__file__).resolve().parents[1] / "examples" / "llada_leaderboard.yaml"
    result = CliRunner().invoke(app, ["aup", str(table), "--bootstrap", "10"])
    assert result.exit_code == 2 and "needs result files" in result.output
