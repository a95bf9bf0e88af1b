"""AUP (Accuracy Under Parallelism): `metric` (the formula), `records` (files → curves),
`report` (scores, averages, tables, JSON, CSV) and `plot`."""

from .metric import ALPHA, DROP_LIMIT, AccuracyDropError, Point, aup_score, weight
from .plot import plot
from .records import (
    SCALES,
    SKIP_FIRST,
    TPF_CONVENTIONS,
    AupInputError,
    Curve,
    json_object,
    load,
    result_curves,
)
from .report import FORMATS, CurveScore, Report, build_report, parse_task_values, text_tables

__all__ = ["ALPHA", "DROP_LIMIT", "FORMATS", "SCALES", "SKIP_FIRST", "TPF_CONVENTIONS",
           "AccuracyDropError", "AupInputError", "Curve", "CurveScore", "Point", "Report",
           "aup_score", "build_report", "json_object", "load", "parse_task_values", "plot",
           "result_curves", "text_tables", "weight"]
