"""MATH (Hendrycks et al.) with the Minerva prompt: 4 worked shots by default (§3.3).

The prompt is lm-eval's ``minerva_math`` ("Problem:\\n…\\n\\nSolution:"); its four exemplar
solutions end in ``\\boxed{}``, so the model's answer is the content of the last
``\\boxed{}`` (brace-matched) before the next "Problem:", compared with the reference by
`answers.math_equal` (plain normaliser, then math-verify when installed).
"""

from __future__ import annotations

from .answers import last_boxed, math_equal
from .base import Example
from .data import TaskDataError, load_rows
from .gsm8k import cut_at

HUB_ID = "EleutherAI/hendrycks_math"
SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

# The four Minerva exemplars (Lewkowycz et al. 2022, as lm-eval's minerva_math ships them).
MINERVA_SHOTS = (
    (
        "Find the domain of the expression  $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
        "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, "
        "so $x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to "
        "zero, so $5-x>0$, which gives $x<5$. Therefore, the domain of the expression is "
        "$\\boxed{[2,5)}$.\nFinal Answer: The final answer is $[2,5)$. I hope it is correct.",
    ),
    (
        "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find "
        "$\\det (\\mathbf{A} \\mathbf{B}).$",
        "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) "
        "= (2)(12) = \\boxed{24}.$\nFinal Answer: The final answer is $24$. I hope it is correct.",
    ),
    (
        "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights "
        "instead, how many times must Terrell lift them in order to lift the same total weight?",
        "If Terrell lifts two 20-pound weights 12 times, he lifts a total of "
        "$2\\cdot 12\\cdot20=480$ pounds of weight.  If he lifts two 15-pound weights instead for "
        "$n$ times, he will lift a total of $2\\cdot15\\cdot n=30n$ pounds of weight.  Equating "
        "this to 480 pounds, we can solve for $n$:\n\\begin{align*}\n30n&=480\\\\\n"
        "\\Rightarrow\\qquad n&=480/30=\\boxed{16}\n\\end{align*}\nFinal Answer: The final answer "
        "is $16$. I hope it is correct.",
    ),
    (
        "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}"
        "has a solution $(x, y)$ where $x$ and $y$ are both nonzero,\nfind $\\frac{a}{b},$ "
        "assuming $b$ is nonzero.",
        "If we multiply the first equation by $-\\frac{3}{2}$, we obtain\n\n"
        "$$6y-9x=-\\frac{3}{2}a.$$Since we also know that $6y-9x=b$, we have\n\n"
        "$$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$\nFinal Answer: The "
        "final answer is $-\\frac{2}{3}$. I hope it is correct.",
    ),
)


def minerva_prompt(problem: str, shots: int) -> str:
    context = "".join(
        f"Problem:\n{question}\n\nSolution: {solution}\n\n"
        for question, solution in MINERVA_SHOTS[:shots]
    )
    return f"{context}Problem:\n{problem}\n\nSolution:"


class MathTask:
    """Competition mathematics; the answer is the last ``\\boxed{}``."""

    name = "math"
    gen_length = 256
    stops = ("Problem:",)

    def __init__(
        self, data_file: str | None = None, shots: int = 4, use_math_verify: bool = True
    ) -> None:
        """`data_file`: rows with `problem` and `solution` (its last box is the answer) or an
        `answer` column; the default is the hub's seven subjects, test split (5000 rows)."""
        if not 0 <= shots <= len(MINERVA_SHOTS):
            raise TaskDataError(f"{self.name}: shots must be 0..{len(MINERVA_SHOTS)}")
        self.use_math_verify = use_math_verify
        configs = (None,) if data_file else SUBJECTS
        rows = load_rows(self.name, HUB_ID, "test", data_file, ("problem",), configs=configs)
        self._examples = []
        for index, row in enumerate(rows):
            answer = row.get("answer")
            if answer is None and row.get("solution") is not None:
                answer = last_boxed(row["solution"])
            if answer is None:
                raise TaskDataError(
                    f"{self.name}: row {index} has neither an answer field nor "
                    "a \\boxed{} answer in its solution"
                )
            metadata = {key: row[key] for key in ("type", "level", "subject") if key in row}
            self._examples.append(
                Example(
                    f"{self.name}-{index}",
                    minerva_prompt(row["problem"], shots),
                    str(answer),
                    metadata,
                )
            )

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        return self._examples[:limit]

    def extract(self, output: str) -> str | None:
        return last_boxed(cut_at(output, self.stops))

    def score(self, example: Example, output: str) -> bool:
        predicted = self.extract(output)
        return predicted is not None and math_equal(example.answer, predicted, self.use_math_verify)
