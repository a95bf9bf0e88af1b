"""One-token-per-step decoding with a fixed number of steps per block: LLaDA's
low-confidence remasking (§3.4), or Dream's lowest-entropy order (§1.3)."""

from __future__ import annotations

import math

from torch import Tensor

from ..checkpoints import ModelSpec
from .options import DecodeOptions
from .rows import Rows
from .scoring import Scores, top_k_per_row
from .semi_ar import SemiAutoregressive


def vanilla(rows: Rows, spec: ModelSpec, options: DecodeOptions) -> SemiAutoregressive:
    """Each step commits ceil(masks left in block / steps left in block) tokens, which is
    exactly LLaDA's quota (the first n mod s steps take one extra); steps = gen_length is one
    token per forward. The family decides the order: highest confidence (LLaDA) or lowest
    entropy (Dream, `ModelSpec.vanilla_by_entropy`)."""
    steps = options.steps or options.gen_length
    steps_per_block = steps // (options.gen_length // options.block_size)

    def choose(scores: Scores, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        steps_left = ((block + 1) * steps_per_block - forwards + 1).clamp_min(1)
        quota = (candidates.sum(1) + steps_left - 1) // steps_left
        rank = -scores.entropy if spec.vanilla_by_entropy else scores.confidence
        return top_k_per_row(rank.masked_fill(~candidates, -math.inf), quota)

    return SemiAutoregressive(rows, spec, options, choose)
