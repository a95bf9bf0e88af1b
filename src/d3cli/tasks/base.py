"""What every task provides: prompts with reference answers, answer extraction and scoring."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Example:
    """One prompt with its reference final answer."""

    id: str
    prompt: str
    answer: str | None  # None: no reference answer (prompts files), so no score
    # What prompting and scoring need beyond the text, read-only by convention and left out
    # of the hash so examples stay usable as dict keys. Harness tasks record "task" (lm-eval
    # task), "doc_id", "doc", "kind" ("code" or "text") and "messages" (the chat turns).
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)


class Task(Protocol):
    """A task: a held-out eval set, a default generation canvas, and a scorer."""

    name: str
    gen_length: int

    def eval_examples(self, limit: int | None = None) -> list[Example]:
        """The held-out evaluation prompts, in a fixed order."""
        ...

    def score(self, example: Example, output: str) -> bool:
        """Whether the decoded `output` carries the right final answer."""
        ...
