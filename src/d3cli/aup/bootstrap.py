"""AUP over training seeds with a 95 % interval (`d3 aup --bootstrap N`).

A *run* is one curve (one method with one setting of its fixed options) in every file of
one folder, each file holding one training seed: `results/d3/seed0.jsonl.gz`,
`results/d3/seed1.jsonl.gz`, ... A run's AUP is the median over its seeds. Its interval is
a two-level bootstrap: each of N draws resamples the prompts of every task (one draw per
task, shared by all runs, so runs stay paired on the same prompts) and, per run, its seeds;
the draw's value is the median AUP of the drawn seeds; the interval runs from the 2.5th to
the 97.5th percentile of the N values. y_max and `--floor` stay those of the full data.
Ratios divide by the task's one-token-per-forward curve (vanilla, steps = answer length)
under the same draw, with its TPF as measured and at the nominal 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .metric import Point, aup_score, is_kept, sort_points
from .records import AupInputError, Curve, SampleRows, is_one_token_per_forward
from .report import TextTable

CONVENTIONS = ("measured", "nominal")
PERCENTILES = (2.5, 97.5)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def text(self, digits: int) -> str:
        return f"{self.value:.{digits}f} ({self.low:.{digits}f}–{self.high:.{digits}f})"


@dataclass(frozen=True)
class RunInterval:
    """One run: its median AUP over seeds, the interval, ratios to the one-token AUP (per
    TPF convention; empty without a one-token curve), and each point's accuracy % and TPF
    averaged over seeds, by rising TPF."""

    task: str
    run: str
    method: str
    seeds: int
    aup: Interval
    ratio: dict[str, Interval]
    points: tuple[tuple[float, float], ...]


def run_name(curve: Curve) -> str:
    """The folder of a curve's file: all files of one folder are seeds of one run."""
    return Path(curve.source).parent.name or "."


def floored_aup(points: Sequence[Point], y_max: float, floor: float | None) -> float:
    """AUP over the points at or above `floor` that are within the drop limit of the first
    of them; 0 when none is (nothing within the budget) or every accuracy is 0."""
    above = [point for point in sort_points(points) if floor is None or point.accuracy >= floor]
    if not above or y_max <= 0:
        return 0.0
    return aup_score([p for p in above if is_kept(p, above[0])], y_max)


def point_draws(rows: SampleRows, columns: Mapping[str, int],
                weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TPF and accuracy % of one point under each draw's prompt weights [draws, prompts]."""
    taken = weights[:, [columns[key] for key in rows.ids]].astype(float)
    count = taken.sum(1)
    tpf = (taken @ np.array(rows.gen_tokens)) / (taken @ np.array(rows.forwards))
    accuracy = 100.0 * (taken @ np.array(rows.correct)) / np.where(count > 0, count, np.nan)
    return tpf, accuracy


def curve_draws(curve: Curve, columns: Mapping[str, int], weights: np.ndarray, y_max: float,
                floor: float | None) -> np.ndarray:
    """The curve's AUP under each draw."""
    per_point = [point_draws(rows, columns, weights) for rows in curve.samples]
    return np.array([
        floored_aup([Point(tpf[draw], accuracy[draw]) for tpf, accuracy in per_point], y_max,
                    floor) for draw in range(weights.shape[0])])


def one_token_draws(curve: Curve, columns: Mapping[str, int],
                    weights: np.ndarray) -> dict[str, np.ndarray]:
    """A one-token curve's AUP (its single point's TPF × accuracy) under each draw, with
    TPF measured and at the nominal 1."""
    tpf, accuracy = point_draws(curve.samples[0], columns, weights)
    return {"measured": tpf * accuracy, "nominal": accuracy}


def is_one_token_curve(curve: Curve) -> bool:
    method = curve.method.split(" ")[0]
    return len(curve.points) == 1 and curve.points[0].config is not None and (
        is_one_token_per_forward(method, json.loads(curve.points[0].config)))


def interval(value: float, draws: np.ndarray) -> Interval:
    low, high = np.percentile(draws, PERCENTILES)
    return Interval(float(value), float(low), float(high))


def bootstrap(curves: Sequence[Curve], y_max: Mapping[str, float],
              floor: Mapping[str, float], draws: int, seed: int = 0) -> list[RunInterval]:
    """Every run's median AUP over its seeds with its interval over `draws` resamples."""
    if any(not curve.samples for curve in curves):
        raise AupInputError("--bootstrap needs result files (.jsonl), not summary tables")
    rng = np.random.default_rng(seed)
    runs: dict[tuple[str, str, str], list[Curve]] = {}
    for curve in curves:
        runs.setdefault((curve.task, run_name(curve), curve.method), []).append(curve)
    results = []
    for task in dict.fromkeys(curve.task for curve in curves):
        ids = sorted({key for c in curves if c.task == task for rows in c.samples
                      for key in rows.ids})
        columns = {key: index for index, key in enumerate(ids)}
        full = np.ones((1, len(ids)), dtype=np.int64)
        weights = rng.multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=draws)
        one_token = [c for c in curves if c.task == task and is_one_token_curve(c)]
        baseline = ({name: (one_token_draws(one_token[0], columns, full)[name][0], values)
                     for name, values in one_token_draws(one_token[0], columns,
                                                         weights).items()}
                    if len(one_token) == 1 else {})
        for (run_task, run, method), seeds in runs.items():
            if run_task != task:
                continue
            value = float(np.median([curve_draws(c, columns, full, y_max[task],
                                                 floor.get(task))[0] for c in seeds]))
            per_seed = np.stack([curve_draws(c, columns, weights, y_max[task], floor.get(task))
                                 for c in seeds], 1)
            chosen = rng.integers(0, len(seeds), size=(draws, len(seeds)))
            medians = np.median(np.take_along_axis(per_seed, chosen, 1), 1)
            ratios = {name: interval(value / full_value, medians / values)
                      for name, (full_value, values) in baseline.items()}
            results.append(RunInterval(task, run, method, len(seeds),
                                       interval(value, medians), ratios, mean_points(seeds)))
    return results


def mean_points(seeds: Sequence[Curve]) -> tuple[tuple[float, float], ...]:
    """(accuracy %, TPF) of each setting, averaged over the seeds, by rising TPF."""
    settings: dict[str | None, list[Point]] = {}
    for curve in seeds:
        for point in curve.points:
            settings.setdefault(point.config, []).append(point)
    means = [(float(np.mean([p.accuracy for p in points])), float(np.mean([p.tpf for p in points])))
             for points in settings.values()]
    return tuple(sorted(means, key=lambda mean: mean[1]))


def interval_table(results: Sequence[RunInterval], draws: int) -> TextTable:
    """One row per run: seeds, AUP with its interval, ratios, and its points."""
    ratio_names = [name for name in CONVENTIONS if any(name in r.ratio for r in results)]
    columns = ("task", "run", "method", "seeds", "AUP (95 % CI)",
               *(f"× one-token, {name}" for name in ratio_names), "accuracy % @ TPF")
    rows = tuple(
        (r.task, r.run, r.method, str(r.seeds), r.aup.text(1),
         *(r.ratio[name].text(2) if name in r.ratio else "—" for name in ratio_names),
         ", ".join(f"{accuracy:.1f} @ {tpf:.2f}" for accuracy, tpf in r.points))
        for r in results)
    title = f"AUP: median over seeds, 95 % interval over {draws} resamples of seeds and prompts"
    return TextTable(title, columns, rows, (False,) * len(rows), 3)


def intervals_json(results: Sequence[RunInterval], draws: int) -> dict:
    def as_dict(value: Interval) -> dict:
        return {"value": value.value, "low": value.low, "high": value.high}

    return {"draws": draws, "percentiles": list(PERCENTILES), "runs": [
        {"task": r.task, "run": r.run, "method": r.method, "seeds": r.seeds,
         "aup": as_dict(r.aup), "ratio": {name: as_dict(v) for name, v in r.ratio.items()},
         "points": [{"accuracy": accuracy, "tpf": tpf} for accuracy, tpf in r.points]}
        for r in results]}
