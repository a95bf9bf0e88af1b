"""Prompts from any dataset with a question and an answer field (hub id or local file).

This is how `d3 trajectories` reads a distillation set such as GSM8K's train split. An
answer is right when its final answer equals the reference's after normalisation, as the
d3LLM trajectory script judges it (algorithms.md §1.2): the content of the last
``\\boxed{}`` (or, failing that, what follows the last ``####``), stripped, lower-cased, with
commas and whitespace removed. An empty reference counts every answer as right (code
prompts have none).
"""

from __future__ import annotations

import re
from pathlib import Path

from .base import Example
from .data import load_rows

BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``); None if the
    last one is missing or unclosed (a cut-off answer)."""
    start = max(text.rfind(command) for command in BOX_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in BOX_COMMANDS if text.startswith(c, start))
    rest = text[start + len(command) :]
    if rest.startswith(" "):  # \boxed 5: up to the next space or dollar sign
        match = re.match(r" +([^\s$]+)", rest)
        return match.group(1) if match else None
    if not rest.startswith("{"):
        return None
    depth = 0
    for index, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:index]
    return None


def final_answer(text: str) -> str | None:
    """The last ``\\boxed{}`` content, else the text after the last ``####``, else None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    head, mark, tail = text.rpartition("####")
    return tail if mark else None


def normalise(answer: str) -> str:
    return re.sub(r"[\s,]", "", answer.strip().lower())


class DatasetTask:
    """Rows of a dataset: `question_field` is the prompt, `answer_field` the reference."""

    gen_length = 256

    def __init__(self, source: str, split: str = "train", question_field: str = "question",
                 answer_field: str = "answer") -> None:
        local = Path(source).expanduser().is_file()
        self.name = source
        rows = load_rows(source, source, split, source if local else None,
                         (question_field, answer_field))
        self._examples = []
        for index, row in enumerate(rows):
            reference = str(row[answer_field] or "")
            final = final_answer(reference)
            self._examples.append(Example(
                f"{Path(source).name}-{index}", str(row[question_field]),
                normalise(reference if final is None else final)))

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        return self._examples[:limit]

    def train_examples(self, limit: int | None = None) -> list[Example]:
        return self._examples[:limit]

    def score(self, example: Example, output: str) -> bool:
        if not example.answer:
            return True
        predicted = final_answer(output)
        return predicted is not None and normalise(predicted) == example.answer
