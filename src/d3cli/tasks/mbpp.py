"""MBPP: 3-shot prompts in lm-eval's ``mbpp`` format, scored by running the test asserts.

Prompt (algorithms.md §3.3, 3 shots): "You are an expert Python programmer, and here is your
task: {text} Your code should pass these tests:\\n\\n{tests}\\n[BEGIN]\\n", each shot followed
by its code and "[DONE]". The answer is cut at "[DONE]", its fenced block (if any) taken
and trimmed of prose, then run with the row's setup code and asserts in a limited subprocess.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Example
from .data import TaskDataError, load_rows
from .execution import (
    DEFAULT_MEMORY_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
    ExecutionResult,
    fenced_code,
    run_program,
    trim_to_code,
)

HUB_ID, HUB_CONFIG = "google-research-datasets/mbpp", "full"
FIELDS = ("text", "code", "test_list")

# The dataset's "prompt" split, task ids 2-4: the shots lm-eval's mbpp takes (first_n).
PROMPT_SPLIT_SHOTS = (
    {
        "text": "Write a function to find the similar elements from the given two tuple lists.",
        "code": "def similar_elements(test_tup1, test_tup2):\n"
        "  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res) ",
        "test_list": [
            "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
            "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
            "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
        ],
    },
    {
        "text": "Write a python function to identify non-prime numbers.",
        "code": "import math\ndef is_not_prime(n):\n    result = False\n"
        "    for i in range(2,int(math.sqrt(n)) + 1):\n        if n % i == 0:\n"
        "            result = True\n    return result",
        "test_list": [
            "assert is_not_prime(2) == False",
            "assert is_not_prime(10) == True",
            "assert is_not_prime(35) == True",
        ],
    },
    {
        "text": "Write a function to find the largest integers from a given list of numbers "
        "using heap queue algorithm.",
        "code": "import heapq as hq\ndef heap_queue_largest(nums,n):\n"
        "  largest_nums = hq.nlargest(n, nums)\n  return largest_nums",
        "test_list": [
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)"
            "==[85, 75, 65, 58, 35]",
        ],
    },
)


def describe(problem: dict[str, Any]) -> str:
    tests = "\n".join(problem["test_list"])
    return (
        f"You are an expert Python programmer, and here is your task: {problem['text']} "
        f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n"
    )


def mbpp_prompt(problem: dict[str, Any], shots: int) -> str:
    context = "".join(
        describe(shot) + shot["code"].replace("\r\n", "\n") + "\n[DONE]\n\n"
        for shot in PROMPT_SPLIT_SHOTS[:shots]
    )
    return context + describe(problem)


def entry_point(problem: dict[str, Any]) -> str | None:
    """The reference function the first test calls (used to pick among code blocks)."""
    defined = re.findall(r"^def\s+(\w+)\s*\(", problem["code"], re.MULTILINE)
    called = re.findall(r"(\w+)\s*\(", problem["test_list"][0]) if problem["test_list"] else []
    return next((name for name in called if name in defined), defined[0] if defined else None)


class MbppTask:
    """Mostly Basic Python Problems, test split (500), pass@1 by execution."""

    name = "mbpp"
    gen_length = 256

    def __init__(
        self,
        data_file: str | None = None,
        shots: int = 3,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        if not 0 <= shots <= len(PROMPT_SPLIT_SHOTS):
            raise TaskDataError(f"{self.name}: shots must be 0..{len(PROMPT_SPLIT_SHOTS)}")
        rows = load_rows(self.name, HUB_ID, "test", data_file, FIELDS, configs=(HUB_CONFIG,))
        self.timeout_seconds, self.memory_bytes = timeout_seconds, memory_bytes
        self._examples = []
        for index, row in enumerate(rows):
            if not row["test_list"]:
                raise TaskDataError(f"{self.name}: row {index} has an empty test_list")
            metadata = {
                "test_list": list(row["test_list"]),
                "test_setup_code": row.get("test_setup_code") or "",
                "entry_point": entry_point(row),
            }
            self._examples.append(
                Example(
                    f"{self.name}-{row.get('task_id', index)}",
                    mbpp_prompt(row, shots),
                    row["code"],
                    metadata,
                )
            )

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        return self._examples[:limit]

    def program(self, example: Example, output: str) -> str:
        answer = output.split("[DONE]")[0].replace("[BEGIN]", "")
        block = fenced_code(answer, example.metadata["entry_point"])
        code = trim_to_code(answer if block is None else block)
        tests = "\n".join(example.metadata["test_list"])
        return f"{example.metadata['test_setup_code']}\n{code}\n\n{tests}\n"

    def run(self, example: Example, output: str) -> ExecutionResult:
        return run_program(self.program(example, output), self.timeout_seconds, self.memory_bytes)

    def score(self, example: Example, output: str) -> bool:
        return self.run(example, output).passed
