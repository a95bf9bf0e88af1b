"""The AUP plot: accuracy against TPF, one panel per task, one line per curve."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from .report import Report

PANEL_SIZE_PX = (400, 350)  # one plot panel, width x height
PANELS_PER_ROW = 3
PLOT_DPI = 100


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
            score = f"no AUP: {curve.reason}" if curve.aup is None else f"AUP {curve.aup:.1f}"
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
