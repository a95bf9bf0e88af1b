"""Fast-dLLM confidence threshold (§3.5), with `--cache none|prefix|dual`."""

from __future__ import annotations

import math

from torch import Tensor

from ..checkpoints import ModelSpec
from .options import DecodeOptions, resolved_threshold
from .rows import Rows
from .scoring import Scores, one_hot_best
from .semi_ar import SemiAutoregressive


def threshold(rows: Rows, spec: ModelSpec, options: DecodeOptions) -> SemiAutoregressive:
    """Commit every candidate of the current block with confidence ≥ τ, and always the most
    confident one."""
    tau = resolved_threshold("threshold", options)

    def choose(scores: Scores, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        confidence = scores.confidence.masked_fill(~candidates, -math.inf)
        return (confidence >= tau) | one_hot_best(confidence)

    return SemiAutoregressive(rows, spec, options, choose, "confidence")
