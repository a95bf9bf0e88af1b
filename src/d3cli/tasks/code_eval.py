"""lm-eval's code metrics, run in d3's sandbox.

lm-eval's HumanEval and MBPP tasks score through the `evaluate` package's ``code_eval``
metric, which is fetched from the hub when the task is loaded and runs programs without a
memory limit. `use_sandbox_for_code_eval` makes ``evaluate.load("code_eval")`` return
`SandboxedCodeEval` instead: the same `compute` interface, each program run by
`execution.run_program` (isolated by the operating system where the kernel allows, with
time, memory and output limits; building the metric prints which isolation is in force).
It must run before a code task's module is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .execution import (
    DEFAULT_MEMORY_BYTES,
    DEFAULT_TIMEOUT_SECONDS,
    announce_isolation,
    run_program,
)


def pass_at_k(samples: int, passed: int, k: int) -> float:
    """The unbiased pass@k estimate from `samples` programs of which `passed` pass."""
    if samples - passed < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / count for count in range(samples - passed + 1,
                                                                 samples + 1))


class SandboxedCodeEval:
    """`evaluate`'s code_eval metric with d3's sandbox as the runner."""

    def __init__(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.timeout_seconds, self.memory_bytes = timeout_seconds, memory_bytes
        announce_isolation()  # once per process, when a code task loads its metric

    def compute(self, references: Sequence[str], predictions: Sequence[Sequence[str]],
                k: Sequence[int] = (1, 10, 100), **_: Any,
                ) -> tuple[dict[str, float], dict[int, list[tuple[int, dict[str, Any]]]]]:
        """pass@k over the problems (each candidate followed by its problem's tests), and
        each candidate's outcome, as code_eval returns them."""
        outcomes: dict[int, list[tuple[int, dict[str, Any]]]] = {}
        for problem, (tests, candidates) in enumerate(zip(references, predictions,
                                                          strict=True)):
            outcomes[problem] = []
            for index, candidate in enumerate(candidates):
                result = run_program(f"{candidate}\n{tests}\n", self.timeout_seconds,
                                     self.memory_bytes)
                outcomes[problem].append((index, {"task_id": problem, "passed": result.passed,
                                                  "result": result.reason,
                                                  "completion_id": index}))
        counts = [(len(runs), sum(run["passed"] for _, run in runs))
                  for runs in outcomes.values()]
        scores = {f"pass@{size}": sum(pass_at_k(n, c, size) for n, c in counts) / len(counts)
                  for size in k if counts and all(n >= size for n, _ in counts)}
        return scores, outcomes


def use_sandbox_for_code_eval() -> None:
    """Route ``evaluate.load("code_eval")`` to `SandboxedCodeEval` in this process (other
    metrics load as before)."""
    import evaluate

    if getattr(evaluate.load, "d3_sandbox", False):
        return
    original = evaluate.load

    def load(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == "code_eval":
            return SandboxedCodeEval()
        return original(path, *args, **kwargs)

    load.d3_sandbox = True  # type: ignore[attr-defined]
    evaluate.load = load
