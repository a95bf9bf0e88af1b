"""The embedded synthetic chain-of-thought task: a chain of additions and subtractions mod 10.

A prompt is an expression such as ``3 + 4 - 7 + 2 + 9 ?``, evaluated left to right on a
10-hour clock, filled with ``.`` to a fixed length so that term k always sits at the same
offset from step k of the answer (a position-addressed copy a tiny model can learn).
The answer writes every step (``3 + 4 = 7 ;``) and ends with ``#### 8``.
Two things make parallel commitment costly for a good model, as feasibility §7 measured:
each step needs the previous step's result (4-8 dependent steps), and every step has several
equally valid written forms (``a + b = c``, ``b + a = c``, ``c = a + b``), drawn at random in
the training data, so per-position marginals mix forms. Only the final answer is scored.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from .base import Example

MODULUS = 10
MIN_STEPS, MAX_STEPS = 4, 8
OPERATORS = ("+", "-")
ANSWER_MARK = "####"
STEP_END = ";"
QUESTION_END = "?"
FILLER = "."
PROMPT_TOKENS = 2 * MAX_STEPS + 2
EVAL_SEED = 20261123
TRAIN_SEED = 1  # the fixed training prompts `d3 trajectories` runs the teacher on
# Held-out prompts, drawn in one stream from EVAL_SEED: the first TEST_SIZE are the test split
# (`d3 decode`'s default; its first 1,000 were the whole held-out set before validation was
# split off), the next VALIDATION_SIZE the validation split that every tuning choice uses.
TEST_SIZE, VALIDATION_SIZE = 2000, 1000
SPLITS = ("test", "validation")
WORDS = (*[str(digit) for digit in range(MODULUS)], *OPERATORS, "=", STEP_END, ANSWER_MARK,
         QUESTION_END, FILLER)


@dataclass(frozen=True)
class Problem:
    """A start value and the (operator, operand) steps applied to it left to right."""

    start: int
    steps: tuple[tuple[str, int], ...]

    def values(self) -> list[int]:
        """The running value after each step (the chain of intermediate results)."""
        value, values = self.start, []
        for operator, operand in self.steps:
            value = (value + operand if operator == "+" else value - operand) % MODULUS
            values.append(value)
        return values

    def prompt(self) -> str:
        terms = " ".join(f"{operator} {operand}" for operator, operand in self.steps)
        fill = " ".join([FILLER] * (PROMPT_TOKENS - 2 - 2 * len(self.steps)))
        return f"{self.start} {terms} {QUESTION_END} {fill}".strip()

    def solution(self, rng: random.Random | None = None) -> str:
        """The worked answer; with `rng`, each step takes one of its valid forms at random."""
        lines, previous = [], self.start
        for (operator, operand), result in zip(self.steps, self.values(), strict=True):
            forms = [f"{previous} {operator} {operand} = {result}",
                     f"{result} = {previous} {operator} {operand}"]
            if operator == "+":
                forms.append(f"{operand} + {previous} = {result}")
            lines.append((rng.choice(forms) if rng else forms[0]) + f" {STEP_END}")
            previous = result
        return " ".join([*lines, ANSWER_MARK, str(previous)])


def random_problem(rng: random.Random) -> Problem:
    """Draw a problem: start 0-9, 4-8 steps, operands 1-9."""
    steps = tuple((rng.choice(OPERATORS), rng.randint(1, MODULUS - 1))
                  for _ in range(rng.randint(MIN_STEPS, MAX_STEPS)))
    return Problem(rng.randrange(MODULUS), steps)


def extract_answer(output: str) -> str | None:
    """The text after the last answer mark, or None when there is no mark."""
    head, mark, tail = output.rpartition(ANSWER_MARK)
    return tail.strip() if mark else None


class ArithTask:
    """The embedded task: chains of additions and subtractions modulo 10, answered step by
    step and then `#### N` (several forms of each step are equally right)."""

    name = "arith"
    gen_length = 64
    words = WORDS

    def __init__(self, split: str = "test") -> None:
        if split not in SPLITS:
            raise ValueError(f"arith has no split {split!r} (it has: {', '.join(SPLITS)})")
        rng = random.Random(EVAL_SEED)
        problems: dict[str, Problem] = {}
        while len(problems) < TEST_SIZE + VALIDATION_SIZE:
            problem = random_problem(rng)
            problems.setdefault(problem.prompt(), problem)
        held_out = list(problems.values())
        self.split = split
        # Records name the split's task, so validation rows never mix with test rows.
        self.name, id_prefix, self._eval_problems = (
            ("arith", "arith", held_out[:TEST_SIZE]) if split == "test" else
            ("arith-validation", "arith-val", held_out[TEST_SIZE:]))
        self._id_prefix = id_prefix
        self._eval_prompts = frozenset(problems)  # training never draws a held-out prompt

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        """The split's prompts in a fixed order (ids `arith-N`, validation `arith-val-N`)."""
        problems = self._eval_problems[:limit]
        return [Example(f"{self._id_prefix}-{index}", problem.prompt(),
                        str(problem.values()[-1]))
                for index, problem in enumerate(problems)]

    def train_examples(self, limit: int) -> list[Example]:
        """`limit` distinct training prompts (never an eval prompt) in a fixed order, so a
        longer list starts with a shorter one."""
        rng, problems = random.Random(TRAIN_SEED), {}
        while len(problems) < limit:
            problem = random_problem(rng)
            if problem.prompt() not in self._eval_prompts:
                problems.setdefault(problem.prompt(), problem)
        return [Example(f"arith-train-{index}", problem.prompt(),
                        str(problem.values()[-1]))
                for index, problem in enumerate(problems.values())]

    def training_pairs(self, rng: random.Random) -> Iterator[tuple[str, str]]:
        """Endless (prompt, worked answer) pairs that never repeat an eval prompt."""
        while True:
            problem = random_problem(rng)
            if problem.prompt() not in self._eval_prompts:
                yield problem.prompt(), problem.solution(rng)

    def score(self, example: Example, output: str) -> bool:
        return extract_answer(output) == example.answer
