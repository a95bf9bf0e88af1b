"""Semi-autoregressive single-block decoding, shared by vanilla, threshold and entropy:
each row decodes inside its first block that has masks (§3.4, §3.5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..checkpoints import ModelSpec
from .options import DecodeOptions
from .rows import Rows
from .scoring import Certainty, Scores
from .strategy import Plan

# choose(scores, candidates, forwards, block) -> commit mask over the block [slots, block]
Chooser = Callable[[Scores, Tensor, Tensor, Tensor], Tensor]


@dataclass
class BlockPlan(Plan):
    masked: Tensor | None = None  # [slots, gen_length]
    block: Tensor | None = None  # [slots] the block each row decodes
    new_block: Tensor | None = None  # [slots] the cache must be rebuilt (cached modes)


class SemiAutoregressive:
    """Reads one block per row. Caches (§3.5): a row's first forward in a block is over the
    whole canvas; then `prefix` recomputes from the block start on against the cached prefix,
    and `dual` only the block against the whole canvas's cache."""

    def __init__(self, rows: Rows, spec: ModelSpec, options: DecodeOptions, choose: Chooser,
                 certainty: Certainty) -> None:
        self.rows, self.choose, self.cache_mode = rows, choose, options.cache
        self.certainty = certainty
        self.uses_cache = options.cache != "none"
        self.block_size = block_size = options.block_size
        self.shift = int(spec.logit_shift)
        self.offsets = torch.arange(block_size, device=rows.canvas.device)
        self.canvas_end = torch.full_like(rows.forwards, rows.length)
        self.cached_block = torch.full_like(rows.forwards, -1)  # block the cache was built for

    def reset(self, slots: Tensor) -> None:
        self.cached_block.masked_fill_(slots, -1)

    def plan(self) -> BlockPlan:
        rows = self.rows
        masked = rows.masked()
        block = masked.int().argmax(1) // self.block_size
        start = block * self.block_size
        read = start[:, None] + self.offsets
        plan = BlockPlan(rows.active(masked), read, masked=masked, block=block)
        if self.uses_cache:
            block_start = start + rows.prompt_length
            new_block = self.cached_block != block
            plan.fresh_from = block_start.masked_fill(new_block, 0)
            plan.need_start = plan.fresh_from
            if self.shift:
                plan.need_start = (block_start - self.shift).masked_fill(new_block, 0)
            if self.cache_mode == "prefix":
                plan.fresh_to = self.canvas_end
            else:  # dual: the block alone serves a row whose cache holds its block
                plan.fresh_to = (block_start + self.block_size).masked_fill(new_block,
                                                                            rows.length)
                plan.block_only = ~new_block
            plan.new_block = new_block
        return plan

    def commit(self, plan: BlockPlan, scores: Scores, logits: Tensor, served: Tensor) -> None:
        candidates = plan.masked.gather(1, plan.read)
        chosen = self.choose(scores, candidates, self.rows.forwards, plan.block)
        self.rows.commit(served, plan.read, scores.tokens, chosen & candidates)
        if self.uses_cache:
            torch.where(served & plan.new_block, plan.block, self.cached_block,
                        out=self.cached_block)
