"""d3's per-sample records of an lm-eval run (`records=` of `--model d3`) joined to the
harness's per-sample scores (`--log_samples`), so `d3 aup` reads accuracy and TPF of the
same samples from one run with no hand editing."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from .aup import json_object

SAMPLES_FILE = re.compile(r"samples_(?P<task>.+)_\d{4}-\d{2}-\d{2}T[\d\-.]+\.jsonl$")


class HarnessResultsError(ValueError):
    """Samples or records that cannot be joined; the message names file and line."""


def sample_files(paths: Sequence[Path]) -> dict[str, Path]:
    """The harness's samples file of each task, from files or folders (searched deeply);
    the newest run's when a task has several."""
    found: dict[str, Path] = {}
    for path in paths:
        candidates = sorted(path.rglob("samples_*.jsonl")) if path.is_dir() else [path]
        for candidate in candidates:
            match = SAMPLES_FILE.search(candidate.name)
            if not match:
                raise HarnessResultsError(f"{candidate}: not an lm-eval samples file "
                                          "(samples_TASK_DATE.jsonl)")
            found[match["task"]] = candidate  # names sort by date: the last is the newest
    if not found:
        raise HarnessResultsError(f"no lm-eval samples_*.jsonl under {', '.join(map(str, paths))}"
                                  " (run lm-eval with --log_samples)")
    return found


def scores(path: Path, metric: str, filter_name: str | None) -> dict[str, bool]:
    """doc id → correct, from one samples file: `metric` (0 or 1) under `filter_name` (default:
    the file's first filter)."""
    result: dict[str, bool] = {}
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        sample = json_object(path, line, text)
        filter_name = filter_name or sample.get("filter")
        if sample.get("filter") != filter_name:
            continue
        if metric not in sample:
            raise HarnessResultsError(f"{path}:{line}: no metric {metric!r} (it has: "
                                      f"{', '.join(sample.get('metrics', []))})")
        if sample[metric] not in (0, 1):
            raise HarnessResultsError(f"{path}:{line}: {metric} is {sample[metric]!r}; AUP "
                                      "needs a per-sample right/wrong (0 or 1)")
        result[str(sample["doc_id"])] = bool(sample[metric])
    return result


def joined_records(records: Path, samples: Sequence[Path], metric: str = "exact_match",
                   filter_name: str | None = None) -> str:
    """`records` (JSON lines) with `correct` taken from the harness's samples."""
    files = sample_files(samples)
    by_task = {task: scores(path, metric, filter_name) for task, path in files.items()}
    lines = []
    for line, text in enumerate(records.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        record = json_object(records, line, text)
        task, doc = record.get("task"), str(record.get("id"))
        if task not in by_task:
            raise HarnessResultsError(f"{records}:{line}: task {task!r} has no samples file "
                                      f"(found: {', '.join(sorted(by_task))})")
        if doc not in by_task[task]:
            raise HarnessResultsError(f"{records}:{line}: doc {doc} of {task} is not in "
                                      f"{files[task]}")
        lines.append(json.dumps({**record, "correct": by_task[task][doc]}))
    return "\n".join(lines) + "\n"
