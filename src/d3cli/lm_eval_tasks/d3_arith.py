"""The `d3_arith` task's documents: d3's held-out arith prompts and answers."""

from __future__ import annotations

from typing import Any

import datasets

from d3cli.tasks import get_task


def held_out(**metadata: Any) -> datasets.DatasetDict:
    """The test split's 2,000 prompts in d3's order (doc id i is d3's `arith-i`)."""
    examples = get_task("arith").eval_examples()
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(
        [{"prompt": example.prompt, "answer": example.answer} for example in examples])})
