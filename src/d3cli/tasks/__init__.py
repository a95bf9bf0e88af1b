"""Task registry: `get_task(name)` returns the task that builds prompts and scores answers."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from .arith import ArithTask
from .base import Example, Task
from .data import TaskDataError
from .gsm8k import Gsm8kTask, LongGsm8kTask
from .humaneval import HumanEvalTask
from .mbpp import MbppTask
from .minerva_math import MathTask

TASKS: dict[str, type] = {
    "arith": ArithTask,
    "gsm8k": Gsm8kTask,
    "long-gsm8k": LongGsm8kTask,
    "math": MathTask,
    "humaneval": HumanEvalTask,
    "mbpp": MbppTask,
}


def get_task(name: str, **options: Any) -> Task:
    """The task registered under `name`, built with `options` (e.g. `data_file`; options
    left at None are not passed). Unknown names and options raise a one-line ValueError;
    tasks that read data raise `TaskDataError` (a ValueError) when it cannot be loaded."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown task {name!r}{hint}; known tasks: {', '.join(sorted(TASKS))}")
    given = {key: value for key, value in options.items() if value is not None}
    accepted = inspect.signature(TASKS[name]).parameters
    unknown = [key for key in given if key not in accepted]
    if unknown:
        raise ValueError(
            f"task {name!r} takes no option {unknown[0]!r} "
            f"(it takes: {', '.join(accepted) or 'none'})"
        )
    return TASKS[name](**given)


__all__ = ["Example", "Task", "TaskDataError", "get_task", "TASKS"]
