"""The AUP formula (Accuracy Under Parallelism), docs/algorithms.md "AUP": the weight W(y)
and the area under one curve of (TPF, accuracy) points. Nothing else lives here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

ALPHA = 3.0
DROP_LIMIT = 5.0  # accuracy points a curve may fall below its first point (§4.1 steps 2-3)


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

