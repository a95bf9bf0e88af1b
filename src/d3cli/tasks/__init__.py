"""Task registry: `get_task(name)` returns the task that builds prompts and scores answers.

`arith` is d3's embedded task; every other name is an lm-evaluation-harness task or group
(`harness_task.HarnessTask`), so d3 and the harness prompt and score alike.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from .arith import ArithTask
from .base import Example, Task
from .data import TaskDataError

EMBEDDED: dict[str, type] = {"arith": ArithTask}
# The lm-eval tasks of the d3LLM paper's tables (any generate-until task works).
REFERENCE_TASKS = ("gsm8k_cot_zeroshot", "minerva_math", "humaneval", "humaneval_instruct",
                   "mbpp", "mbpp_instruct", "gsm8k")


def runs_generated_code(name: str) -> bool:
    """Whether task `name` scores an answer by running it (lm-eval's `unsafe_code` tasks:
    HumanEval, MBPP), read from its YAML without loading the task."""
    if name in EMBEDDED:
        return False
    from .harness_task import is_code_task

    return is_code_task(name)


def get_task(name: str, **options: Any) -> Task:
    """The task registered under `name`, built with `options` (e.g. `data_file`, `split`;
    options left at None are not passed). Unknown names and options raise a one-line
    ValueError; tasks that read data raise `TaskDataError` (a ValueError) when it cannot be
    loaded."""
    given = {key: value for key, value in options.items() if value is not None}
    if name in EMBEDDED:
        task_class = EMBEDDED[name]
    else:
        from .harness_task import HarnessTask, known_tasks

        names = known_tasks()
        if name not in names:
            close = difflib.get_close_matches(name, [*EMBEDDED, *names], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown task {name!r}{hint}; `d3 tasks` lists them")
        task_class, given = HarnessTask, {key: str(value) for key, value in given.items()}
    accepted = [key for key in inspect.signature(task_class).parameters if key != "name"]
    unknown = [key for key in given if key not in accepted]
    if unknown:
        raise ValueError(f"task {name!r} takes no option {unknown[0]!r} "
                         f"(it takes: {', '.join(accepted) or 'none'})")
    return task_class(**given) if name in EMBEDDED else task_class(name, **given)


__all__ = ["EMBEDDED", "REFERENCE_TASKS", "Example", "Task", "TaskDataError", "get_task",
           "runs_generated_code"]
