"""dParallel's entropy threshold inside the current block (§3.1 with one block)."""

from __future__ import annotations

import math

from torch import Tensor

from ..checkpoints import ModelSpec
from .options import DecodeOptions, resolved_threshold
from .rows import Rows
from .scoring import Scores, entropy_selection, one_hot_best
from .semi_ar import SemiAutoregressive


def entropy(rows: Rows, spec: ModelSpec, options: DecodeOptions) -> SemiAutoregressive:
    """Commit the current block's candidates whose entropy is under γ; if none qualifies, the
    lowest-entropy one (guaranteed progress)."""
    gamma = resolved_threshold("entropy", options)

    def choose(scores: Scores, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        selected = entropy_selection(scores.entropy, candidates, gamma, spec)
        lowest = one_hot_best(scores.entropy.masked_fill(~candidates, math.inf), lowest=True)
        return selected | (lowest & ~selected.any(1, keepdim=True))

    return SemiAutoregressive(rows, spec, options, choose, "entropy")
