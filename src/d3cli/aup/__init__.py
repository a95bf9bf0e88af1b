"""AUP (Accuracy Under Parallelism): `metric` (the formula), `records` (files → curves),
`report` (scores, averages, tables, JSON, CSV) and `plot`."""

from .bootstrap import bootstrap, interval_table, intervals_json
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
from .report import (
    FORMATS,
    CurveScore,
    Report,
    build_report,
    markdown,
    parse_task_values,
    text_tables,
)

__all__ = ["ALPHA", "DROP_LIMIT", "FORMATS", "SCALES", "SKIP_FIRST", "TPF_CONVENTIONS",
           "AccuracyDropError", "AupInputError", "Curve", "CurveScore", "Point", "Report",
           "aup_score", "bootstrap", "build_report", "interval_table", "intervals_json",
           "json_object", "load", "markdown", "parse_task_values", "plot", "result_curves",
           "text_tables", "weight"]
