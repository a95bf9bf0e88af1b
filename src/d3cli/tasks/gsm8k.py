"""GSM8K (zero-shot chain of thought) and Long-GSM8K (5-shot, ≈1000-token prompts).

Prompts follow the lm-eval tasks the reference runs (algorithms.md §3.3):
``gsm8k_cot_zeroshot`` ("Q: …\\nA: Let's think step by step.") and ``gsm8k`` with five shots
from the train split ("Question: …\\nAnswer: …", seeded draw per test question). The answer
is cut at the task's stop strings, then the final number after the last ``####`` or in the
last ``\\boxed{}`` (whichever comes later) is compared with the reference after
normalisation (``1,000.0`` equals ``1000``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from .answers import canonical_number, gsm8k_answer
from .base import Example
from .data import TaskDataError, load_rows

HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"
FIELDS = ("question", "answer")
SHOT_SEED = 1234  # lm-eval's few-shot seed


def cut_at(output: str, stops: Sequence[str]) -> str:
    """The output before the first stop string (what lm-eval's `until` does)."""
    for stop in stops:
        position = output.find(stop)
        if position >= 0:
            output = output[:position]
    return output


def reference_number(task: str, index: int, answer: str) -> str:
    """The number after ``####`` in a GSM8K answer field."""
    head, mark, tail = answer.rpartition("####")
    number = canonical_number(tail) if mark else None
    if number is None:
        raise TaskDataError(f"{task}: row {index} has no '#### <number>' in its answer field")
    return number


class Gsm8kTask:
    """Grade-school math word problems, zero-shot chain of thought."""

    name = "gsm8k"
    gen_length = 256
    stops: tuple[str, ...] = ("Q:",)

    def __init__(self, data_file: str | None = None) -> None:
        rows = load_rows(self.name, HUB_ID, "test", data_file, FIELDS, configs=(HUB_CONFIG,))
        self._examples = [
            Example(
                f"{self.name}-{index}",
                self.prompt(rows, index),
                reference_number(self.name, index, row["answer"]),
                {"question": row["question"]},
            )
            for index, row in enumerate(rows)
        ]

    def prompt(self, rows: list[dict[str, Any]], index: int) -> str:
        return f"Q: {rows[index]['question']}\nA: Let's think step by step."

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        return self._examples[:limit]

    def extract(self, output: str) -> str | None:
        """The normalised final number of an answer, or None."""
        return gsm8k_answer(cut_at(output, self.stops))

    def score(self, example: Example, output: str) -> bool:
        return self.extract(output) == example.answer


class LongGsm8kTask(Gsm8kTask):
    """GSM8K behind five worked train-split examples (the reference's Long-GSM8K)."""

    name = "long-gsm8k"
    stops = ("Question:",)

    def __init__(
        self, data_file: str | None = None, shots_file: str | None = None, shots: int = 5
    ) -> None:
        """Shots come from the hub's train split or `shots_file`; given only a local
        `data_file`, from that file's other rows."""
        self.shots = shots
        self._pool = None
        if shots_file or not data_file:
            self._pool = load_rows(
                self.name, HUB_ID, "train", shots_file, FIELDS, configs=(HUB_CONFIG,)
            )
        self._rng = random.Random(SHOT_SEED)  # drawn in order, so a limit keeps the prompts
        super().__init__(data_file)

    def prompt(self, rows: list[dict[str, Any]], index: int) -> str:
        pool = self._pool if self._pool is not None else rows[:index] + rows[index + 1 :]
        shots = self._rng.sample(pool, min(self.shots, len(pool)))
        context = "".join(
            f"Question: {shot['question']}\nAnswer: {shot['answer']}\n\n" for shot in shots
        )
        return f"{context}Question: {rows[index]['question']}\nAnswer:"
