"""One-token-per-step decoding with a fixed number of steps per block: LLaDA's
low-confidence remasking (§3.4), or Dream's own decoding: the lowest entropy of the
proposal distribution (temperature, top-p) first, the whole answer as one block."""

from __future__ import annotations

import math
from dataclasses import replace

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
    entropy of the proposal (Dream, `ModelSpec.vanilla_by_entropy`). `one_block` decodes the
    whole answer as one block."""
    if options.one_block:
        options = replace(options, block_size=options.gen_length)
    steps = options.steps or options.gen_length
    steps_per_block = steps // (options.gen_length // options.block_size)

    def choose(scores: Scores, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        steps_left = ((block + 1) * steps_per_block - forwards + 1).clamp_min(1)
        quota = (candidates.sum(1) + steps_left - 1) // steps_left
        rank = -scores.entropy if spec.vanilla_by_entropy else scores.confidence
        return top_k_per_row(rank.masked_fill(~candidates, -math.inf), quota)

    strategy = SemiAutoregressive(rows, spec, options, choose)
    strategy.proposal_entropy = spec.vanilla_by_entropy
    return strategy
