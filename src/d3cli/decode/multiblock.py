"""d3LLM entropy-based multi-block decoding (§3.1) with `--cache none|delayed` (§3.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checkpoints import ModelSpec
from .options import DecodeOptions, resolved_threshold
from .rows import Rows
from .scoring import Certainty, Scores, entropy_selection, one_hot_best
from .strategy import Plan


def first_true(mask: Tensor) -> Tensor:
    """Per row [rows, 1], the first column where `mask` [rows, n] is True, else n."""
    return F.pad(mask, (0, 1), value=True).int().argmax(1, keepdim=True)


@dataclass
class BlockTable:
    """Per-row multi-block state. Column 0 is the prompt, 1.. the answer blocks."""

    created: Tensor  # [slots, 1 + blocks] bool
    full: Tensor  # [slots, 1 + blocks] bool: fully activated
    completed_at: Tensor  # [slots, 1 + blocks] forward first seen finished (-1: not yet)
    cache_len: Tensor  # [slots] leading positions whose K/V the cache holds (§3.2, A5)


@dataclass
class MultiblockPlan(Plan):
    table: BlockTable | None = None  # the table after this iteration's activation and cache plan
    masks_left: Tensor | None = None  # [slots, 1 + blocks]
    candidates: Tensor | None = None  # [slots, k] at `read`

    def from_column(self, start: int) -> MultiblockPlan:
        return replace(self, read=self.read[:, start:], candidates=self.candidates[:, start:])


class Multiblock:
    """Blocks open once their predecessor is `block_add_threshold` decoded (at most `blocks`
    with masks at once) and become fully active at `decoded_token_threshold`; every masked
    position of an open block is a candidate; selection by entropy, plus the lowest-entropy
    position of the first full block if it got nothing. Early stop fills everything after
    the first stop token with it; the masks a fill takes stay candidates in the row's next
    forward, and whatever is chosen there is dropped (the reference selects from the mask
    it read before filling, A8). The delayed cache holds exactly the K/V of positions
    [0, cache_len) (A5): finished blocks join it `cache_delay` forwards after they finish;
    a periodic or stabilizing refresh is one full forward."""

    certainty: Certainty = "entropy"  # of the raw logits (§3.1 step 8)

    def __init__(self, rows: Rows, spec: ModelSpec, options: DecodeOptions) -> None:
        self.rows, self.spec, self.options = rows, spec, options
        self.gamma = resolved_threshold("multiblock", options)
        self.uses_cache = options.cache == "delayed"
        self.block_size = options.block_size
        self.num_blocks = num_blocks = options.gen_length // options.block_size
        self.open_limit = min(options.blocks or num_blocks, num_blocks)
        slots, device = rows.slots, rows.canvas.device
        self.block_index = torch.arange(1 + num_blocks, device=device)
        self.positions = torch.arange(options.gen_length, device=device)
        self.block_of_position = self.positions // self.block_size + 1
        self.block_sizes = torch.full((1 + num_blocks,), float(self.block_size), device=device)
        self.block_sizes[0] = 1.0
        self.ends = rows.prompt_length + self.block_size * self.block_index
        self.starts = torch.cat([torch.zeros_like(self.ends[:1]), self.ends[:-1]])
        self.offsets = torch.arange(self.block_size, device=device)
        # Built once, not per iteration: row views, each column's answer block (-1: the
        # prompt), the delayed cache's window end, -1 as a tensor.
        self.block_row, self.ends_row = self.block_index[None, :], self.ends[None, :]
        self.position_row, self.answer_block = self.positions[None, :], self.block_row - 1
        self.canvas_end = torch.full((slots,), rows.length, device=device)
        self.minus_one = torch.tensor(-1, device=device)
        # Early stop fires on end of sequence, not on an end-of-turn token (the reference).
        self.stop_ids = torch.tensor(spec.eos_token_ids or spec.stop_token_ids, device=device)
        self.mask_ids = torch.tensor([spec.mask_token_id], device=device)
        self.table = BlockTable(
            created=torch.zeros(slots, 1 + num_blocks, dtype=torch.bool, device=device),
            full=torch.zeros(slots, 1 + num_blocks, dtype=torch.bool, device=device),
            completed_at=torch.full((slots, 1 + num_blocks), -1, device=device),
            cache_len=torch.zeros(slots, dtype=torch.long, device=device))
        # Per answer position: the row's last early-stop fill took it from the mask.
        self.just_filled = torch.zeros(slots, options.gen_length, dtype=torch.bool,
                                       device=device)

    def reset(self, slots: Tensor) -> None:
        """The prompt and the first answer block exist (and are fully active)."""
        first_two = self.block_index < 2
        start = slots[:, None] & first_two
        table = self.table
        table.created.copy_(torch.where(slots[:, None], first_two, table.created))
        table.full.copy_(torch.where(slots[:, None], first_two, table.full))
        table.completed_at.copy_(torch.where(slots[:, None], torch.where(
            start & (self.block_index == 0), 0, -1), table.completed_at))
        table.cache_len.masked_fill_(slots, 0)
        self.just_filled.masked_fill_(slots[:, None], False)

    def plan(self) -> MultiblockPlan:
        rows, options, table = self.rows, self.options, self.table
        masked = rows.masked()
        masks_left = F.pad(masked.view(rows.slots, self.num_blocks, self.block_size).sum(-1),
                           (1, 0))
        has_masks = masks_left > 0
        progress = 1 - masks_left / self.block_sizes
        created, full = table.created, table.full
        # §3.1 step 4: activation; step 5: open at most one block. Per-row values are [slots, 1].
        previous = F.pad(progress[:, :-1], (1, 0), value=1.0)
        full = full | created & (previous >= options.decoded_token_threshold)
        last = (created.sum(1, keepdim=True) - 1).clamp_min(0)  # empty slots have no block
        last_progress = progress.gather(1, last)
        open_blocks = (created & has_masks)[:, 1:].sum(1, keepdim=True)
        can_open = (last < self.num_blocks) & (
            (last_progress >= options.block_add_threshold) | (masks_left.gather(1, last) == 0))
        can_open &= open_blocks < self.open_limit
        opened = can_open & (self.block_row == last + 1)
        created = created | opened
        full = torch.where(opened, last_progress >= options.decoded_token_threshold, full)
        # The answer positions read: every block, or the first `blocks` open ones.
        open_with_masks = (created & has_masks)[:, 1:]
        read_need = None
        if self.open_limit == self.num_blocks:
            read = self.positions.expand(rows.slots, -1)
            read_need = first_true(open_with_masks).squeeze(1) * self.block_size
        else:
            order = torch.where(open_with_masks, 0, self.num_blocks) + self.block_index[:-1]
            blocks = order.topk(self.open_limit, largest=False).values % self.num_blocks
            read = (blocks[:, :, None] * self.block_size + self.offsets).flatten(1)
        in_created = created.index_select(1, self.block_of_position)
        candidates = ((masked | self.just_filled) & in_created).gather(1, read)
        new_table = BlockTable(created, full, table.completed_at, table.cache_len)
        plan = MultiblockPlan(rows.active(masked), read, read_need=read_need, table=new_table,
                              masks_left=masks_left, candidates=candidates)
        if self.uses_cache:
            self.plan_delayed_cache(plan)
        return plan

    def plan_delayed_cache(self, plan: MultiblockPlan) -> None:
        """§3.2 cache bookkeeping; sets where each row's forward recomputes.

        Scan from the first block not in the cache: finished blocks get `completed_at`; those
        finished for `cache_delay` forwards are appended; the scan stops at a block with
        masks or one still inside its delay (LLaDA's rule, A6). Then per row: a periodic
        refresh (every `refresh_interval` forwards) or a refresh for a stabilizing block is a
        full forward (recompute from 0) after which the cache keeps [0, new length); an
        append or a plain cached step recomputes from the old `cache_len`; no cache yet: a
        full forward.
        """
        options, table = self.options, plan.table
        now = self.rows.forwards[:, None] + 1
        cache_len, created, completed_at = table.cache_len, table.created, table.completed_at
        index = self.block_row
        unscanned = self.ends_row > cache_len[:, None]
        finished = created & (plan.masks_left == 0)
        stamped = torch.where(finished & unscanned & (completed_at < 0), now, completed_at)
        stops = unscanned & (~finished | (now - stamped < options.cache_delay))
        first_stop = first_true(stops)
        completed_at = torch.where(unscanned & (index <= first_stop), stamped, completed_at)
        appended = unscanned & (index < first_stop)
        last_appended = torch.where(appended, index, self.minus_one).max(1).values
        new_len = torch.where(last_appended >= 0, self.ends[last_appended.clamp_min(0)],
                              cache_len)
        stabilizing = unscanned & finished & (completed_at >= 0) & ~appended
        latest_stabilizing = torch.where(stabilizing, index, self.minus_one).max(1).values
        has_cache = cache_len > 0
        stabilizing_refresh = has_cache & (new_len == cache_len) & stabilizing.any(1)
        refresh = stabilizing_refresh
        if options.refresh_interval:
            periodic = has_cache & (now[:, 0] % options.refresh_interval == 0)
            stabilizing_refresh = stabilizing_refresh & ~periodic
            refresh = periodic | stabilizing_refresh
        plan.fresh_from = cache_len.masked_fill(refresh | ~has_cache, 0)
        plan.fresh_to = self.canvas_end
        plan.need_start = plan.fresh_from
        if self.spec.logit_shift:
            plan.need_start = (plan.fresh_from - 1).clamp_min(0)
        refreshed_len = torch.where(stabilizing_refresh,
                                    self.starts[latest_stabilizing.clamp_min(0)], new_len)
        table.completed_at = completed_at
        table.cache_len = torch.where(refresh, refreshed_len, new_len)

    def commit(self, plan: MultiblockPlan, scores: Scores, logits: Tensor,
               served: Tensor) -> None:
        table, candidates = plan.table, plan.candidates
        commit = entropy_selection(scores.entropy, candidates, self.gamma, self.spec)
        # §3.1 step 10: the first full block with masks gets its lowest-entropy position.
        full_with_masks = table.full & (plan.masks_left > 0)
        first_full = full_with_masks.int().argmax(1, keepdim=True)
        read_blocks = plan.read // self.block_size + 1
        in_first_full = (read_blocks == first_full) & candidates
        needs = full_with_masks.any(1, keepdim=True) & ~(commit & in_first_full).any(
            1, keepdim=True)
        forced = one_hot_best(scores.entropy.masked_fill(~in_first_full, math.inf), lowest=True)
        forced &= needs
        tokens = scores.tokens
        if self.spec.commit_lowest_entropy and self.options.temperature > 0:
            greedy = logits.index_fill(-1, self.mask_ids, -math.inf).argmax(-1)
            tokens = torch.where(forced, greedy, tokens)  # LLaDA re-proposes the argmax
        filled = self.just_filled.gather(1, plan.read)
        self.rows.commit(served, plan.read, tokens, (commit | forced) & ~filled)
        keep, kept = served[:, None], self.table
        torch.where(keep, table.created, kept.created, out=kept.created)
        torch.where(keep, table.full, kept.full, out=kept.full)
        torch.where(keep, table.completed_at, kept.completed_at, out=kept.completed_at)
        torch.where(served, table.cache_len, kept.cache_len, out=kept.cache_len)
        if self.options.early_stop:
            self.fill_after_first_stop(served)

    def fill_after_first_stop(self, served: Tensor) -> None:
        """§3.1 step 3 (early stop): after a row's first decoded end-of-sequence token,
        every position becomes that token and the later blocks are created as finished
        (A8). Idempotent. A served row's `just_filled` becomes the masks this fill took."""
        rows, table = self.rows, self.table
        generation = rows.generation
        masked = generation == rows.mask_id
        first = first_true(torch.isin(generation, self.stop_ids))  # the length if none
        stop_token = generation.gather(1, first.clamp_max(generation.shape[1] - 1))
        after = self.position_row > first
        generation.copy_(torch.where(after, stop_token, generation))
        torch.where(served[:, None], after & masked, self.just_filled, out=self.just_filled)
        finished = self.answer_block > first // self.block_size  # none without a stop
        table.created |= finished
        table.full |= finished
