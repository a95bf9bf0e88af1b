"""Task registry: `get_task(name)` returns the task that builds prompts and scores answers."""

from __future__ import annotations

from .arith import ArithTask
from .base import Example, Task

TASKS: dict[str, type] = {"arith": ArithTask}


def get_task(name: str) -> Task:
    """The task registered under `name`; a clear error lists the known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]()


__all__ = ["Example", "Task", "get_task", "TASKS"]
