"""Decoding with a fixed number of steps per block: LLaDA's low-confidence remasking (§3.4),
or Dream's own decoding (§6.2): the lowest entropy of the proposal distribution (temperature,
top-p) first, tokens per step from Dream's timestep schedule, the whole answer as one block."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from ..checkpoints import ModelSpec
from .options import DecodeOptions
from .rows import Rows
from .scoring import Scores, top_k_per_row
from .semi_ar import SemiAutoregressive

DREAM_EPS = 1e-3  # the last timestep of Dream's schedule (its `eps` default)


def dream_fractions(steps: int, device: torch.device) -> Tensor:
    """Per step i, the fraction of the masks Dream commits: 1 − t[i+1] / t[i] on
    t = linspace(1, ε, steps + 1), in float32 as Dream's own code computes it."""
    timesteps = torch.linspace(1, DREAM_EPS, steps + 1, device=device, dtype=torch.float32)
    return 1 - timesteps[1:] / timesteps[:-1]


def vanilla(rows: Rows, spec: ModelSpec, options: DecodeOptions) -> SemiAutoregressive:
    """Each block gets steps / blocks forwards. LLaDA (and `one_token_per_forward`) commits
    ceil(masks left in the block / steps left) per step, exactly LLaDA's quota (the first
    n mod s steps take one extra), so steps = gen_length is one token per forward. Dream
    (`ModelSpec.vanilla_by_entropy`) commits int(masks × fraction of the step) (truncated;
    0 at the first step when steps = gen_length) and every mask left at the block's last
    step, as Dream's `diffusion_generate` does for one row. The family decides the order:
    highest confidence (LLaDA) or lowest entropy of the proposal (Dream). `one_block`
    decodes the whole answer as one block."""
    if options.one_block:
        options = replace(options, block_size=options.gen_length)
    steps = options.steps or options.gen_length
    steps_per_block = steps // (options.gen_length // options.block_size)
    fractions = None
    if spec.vanilla_by_entropy and not options.one_token_per_forward:
        fractions = dream_fractions(steps_per_block, rows.canvas.device)

    def quota(masks: Tensor, step: Tensor) -> Tensor:
        """Tokens to commit at `step` of the block, with `masks` still masked in it."""
        if fractions is None:
            steps_left = steps_per_block - step
            return (masks + steps_left - 1) // steps_left
        return torch.where(step == steps_per_block - 1, masks,
                           (masks.float() * fractions[step]).long())

    def choose(scores: Scores, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        step = (forwards - 1 - block * steps_per_block).clamp(0, steps_per_block - 1)
        rank = -scores.entropy if spec.vanilla_by_entropy else scores.confidence
        return top_k_per_row(rank.masked_fill(~candidates, -math.inf),
                             quota(candidates.sum(1), step))

    return SemiAutoregressive(rows, spec, options, choose,
                              "proposal_entropy" if spec.vanilla_by_entropy else "confidence")
