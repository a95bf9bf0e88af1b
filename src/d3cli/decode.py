"""Decoding strategies: one function each, sharing `DecodeState` and the one model call.

Every strategy is written against ``model(ids, positions=, cache=, keep_cached=)`` and reads
token facts from `ModelSpec` (mask and stop ids, Dream's logit shift, the selection rule);
none names a model. Specs: ../shared/design/algorithms.md §3.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from .canvas import left_pad
from .checkpoints import ModelSpec
from .model import D3Model, KVCache

SAFETY_CAP_FORWARDS = 10_000  # §3.1 step 11


@dataclass(frozen=True)
class DecodeOptions:
    """Knobs of every strategy; `METHOD_OPTIONS` says which ones each strategy reads."""

    gen_length: int = 64
    block_size: int = 16
    steps: int | None = None  # vanilla: forwards over the canvas (None = gen_length)
    threshold: float | None = None  # τ (threshold) or γ (entropy, multiblock); None = default
    temperature: float = 0.0
    seed: int = 0
    cache: str = "none"  # threshold: none|prefix|dual; multiblock: none|delayed
    blocks: int | None = None  # multiblock: most blocks decoding at once (None = no limit)
    block_add_threshold: float = 0.1
    decoded_token_threshold: float = 0.95
    early_stop: bool = True
    cache_delay: int = 2
    refresh_interval: int | None = None  # None = no periodic refresh


DEFAULT_THRESHOLDS = {"threshold": 0.9, "entropy": 0.5, "multiblock": 0.5}
CACHE_MODES = {"threshold": ("none", "prefix", "dual"), "multiblock": ("none", "delayed")}


@dataclass
class DecodeState:
    """Per-row state shared by every strategy: the canvas, forwards used, and finish times."""

    canvas: Tensor  # [batch, prompt_length + gen_length]: left-padded prompt, then the answer
    visible: Tensor  # [batch, same] bool: False on prompt padding
    prompt_length: int
    forwards: Tensor = field(init=False)  # [batch] model calls that included the row
    commit_step: Tensor = field(init=False)  # [batch, gen_length] 0-based forward of each commit
    seconds: Tensor = field(init=False)  # [batch] wall time until the row had no mask left
    started: float = field(init=False, default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.forwards = torch.zeros(self.canvas.shape[0], dtype=torch.long)
        self.commit_step = torch.full_like(self.generation, -1)
        self.seconds = torch.full((self.canvas.shape[0],), math.nan, dtype=torch.float64)

    @classmethod
    def start(cls, prompts: Sequence[Sequence[int]], spec: ModelSpec, gen_length: int,
              device: torch.device) -> DecodeState:
        """Prompts left-padded with the pad id, followed by `gen_length` mask tokens."""
        if any(len(prompt) == 0 for prompt in prompts):
            raise ValueError("empty prompt")
        prompt_ids, visible = left_pad(prompts, spec.pad_token_id)
        batch = prompt_ids.shape[0]
        canvas = torch.cat([prompt_ids, torch.full((batch, gen_length), spec.mask_token_id)], 1)
        visible = torch.cat([visible, torch.ones(batch, gen_length, dtype=torch.bool)], 1)
        return cls(canvas.to(device), visible.to(device), prompt_ids.shape[1])

    @property
    def generation(self) -> Tensor:
        return self.canvas[:, self.prompt_length:]

    def masked(self, spec: ModelSpec) -> Tensor:
        return self.generation == spec.mask_token_id

    def active_rows(self, spec: ModelSpec) -> Tensor:
        """Rows with masks left; rows that just finished get their wall time stamped."""
        has_masks = self.masked(spec).any(1).cpu()
        newly_done = ~has_masks & self.seconds.isnan()
        self.seconds[newly_done] = time.perf_counter() - self.started
        if (self.forwards >= SAFETY_CAP_FORWARDS).any():
            raise RuntimeError(f"decoding did not finish within {SAFETY_CAP_FORWARDS} forwards")
        return has_masks.nonzero().squeeze(1).to(self.canvas.device)

    def count_forward(self, rows: Tensor) -> None:
        self.forwards[rows.cpu()] += 1

    def commit(self, rows: Tensor, positions: Tensor, tokens: Tensor, chosen: Tensor) -> None:
        """Write `tokens` where `chosen` at generation `positions` [rows, n] of `rows`, and
        stamp those positions with the forward that committed them (the row's last one)."""
        index = rows[:, None], self.prompt_length + positions
        self.canvas[index] = torch.where(chosen, tokens, self.canvas[index])
        step = (self.forwards[rows.cpu()] - 1).to(self.canvas.device)[:, None]
        gen_index = rows[:, None], positions
        self.commit_step[gen_index] = torch.where(chosen, step, self.commit_step[gen_index])


@dataclass
class Scores:
    """Per-position proposal and its certainty: token, confidence, entropy (nats)."""

    tokens: Tensor
    confidence: Tensor
    entropy: Tensor


def score(logits: Tensor, mask_id: int, temperature: float,
          generator: torch.Generator | None) -> Scores:
    """Proposed tokens with their confidence and entropy (§3.4, §3.6).

    T = 0 takes the argmax; T > 0 takes Gumbel-max over logits / T, which samples
    softmax(logits / T). Confidence (probability of the proposal) and entropy come from the
    float64 softmax of the raw logits. The mask token is never proposed, so every commit
    makes progress: its logit becomes the lowest finite number, so that its probability is
    exactly 0 and its p·log p term 0 (not 0·-inf).
    """
    logits = logits.double()
    logits[..., mask_id] = torch.finfo(logits.dtype).min
    if temperature > 0:
        uniform = torch.rand(logits.shape, dtype=torch.float64, device=logits.device,
                             generator=generator).clamp_min(1e-300)
        tokens = (logits / temperature - torch.log(-torch.log(uniform))).argmax(-1)
    else:
        tokens = logits.argmax(-1)
    log_probs = logits.log_softmax(-1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs).sum(-1)
    confidence = probs.gather(-1, tokens[..., None]).squeeze(-1)
    return Scores(tokens, confidence, entropy)


def one_hot_best(values: Tensor, lowest: bool = False) -> Tensor:
    """Boolean mask of each row's highest (or lowest) value."""
    index = (values.argmin if lowest else values.argmax)(1, keepdim=True)
    return torch.zeros_like(values, dtype=torch.bool).scatter_(1, index, True)


def top_k_per_row(values: Tensor, counts: Tensor) -> Tensor:
    """Boolean mask of the `counts[row]` highest values of each row."""
    ranks = values.argsort(dim=-1, descending=True).argsort(dim=-1)
    return ranks < counts[:, None]


# --- forwards ------------------------------------------------------------------------------


def suffix_forward(model: D3Model, spec: ModelSpec, state: DecodeState, rows: Tensor,
                   cache: KVCache | None, fresh_from: Tensor | None,
                   span: tuple[int, int]) -> Tensor:
    """One forward over a suffix of the canvas for `rows`; logits for generation positions.

    Without a cache this is the full forward. With a cache, row r recomputes positions from
    `fresh_from[r]` (absolute) on and reads its cached K/V before that; the window starts at
    the smallest `fresh_from` (one earlier under a logit shift) and slots a row keeps are
    not overwritten. Returns logits [rows, g1 - g0, V] for the generation positions
    `span` = [g0, g1), which must lie in the window. Under a logit shift (Dream, §6.2)
    position p reads the output at p - 1, and the window's first position its own.
    """
    shift = int(spec.logit_shift)
    start = 0 if cache is None or fresh_from is None else max(int(fresh_from.min()) - shift, 0)
    ids, visible = state.canvas[rows], state.visible[rows]
    positions = torch.arange(start, ids.shape[1], device=ids.device)
    keep = None
    if cache is not None and fresh_from is not None and start < int(fresh_from.max()):
        keep = positions[None, :] < fresh_from[:, None]
    first, end = (state.prompt_length + position for position in span)
    outputs = slice(max(first - shift - start, 0), end - shift - start)
    logits = model(ids[:, start:], positions=positions, cache=cache,
                   attention_mask=visible if cache is not None else visible[:, start:],
                   keep_cached=keep, logits_slice=outputs)
    if first - shift < start:  # the window's first position reuses its own output
        logits = torch.cat([logits[:, :1], logits], 1)
    return logits


def block_forward(model: D3Model, spec: ModelSpec, state: DecodeState, rows: Tensor,
                  cache: KVCache, block_start: Tensor, width: int) -> Tensor:
    """Forward only each row's block [block_start, +width) against the cache (dual cache).

    Returns logits [rows, width, V]. Under a logit shift the position before the block is run
    too (its cached K/V kept) to supply the first position's logits.
    """
    shift = int(spec.logit_shift)
    offsets = torch.arange(-shift, width, device=block_start.device)
    positions = block_start[:, None] + offsets[None, :]
    ids = state.canvas[rows].gather(1, positions)
    keep = (offsets < 0).expand_as(positions) if shift else None
    return model(ids, positions=positions, cache=cache, attention_mask=state.visible[rows],
                 keep_cached=keep, logits_slice=slice(0, width))


def blocks_span(blocks: Tensor, block_size: int) -> tuple[int, int]:
    """Generation positions [start, end) from the first to the last of `blocks` (host ints)."""
    low, high = torch.stack([blocks.min(), blocks.max()]).tolist()
    return low * block_size, (high + 1) * block_size


def at_positions(logits: Tensor, first: int, positions: Tensor) -> Tensor:
    """Rows of `logits` [rows, n, V] (generation positions first..) at `positions` [rows, k]."""
    return logits.gather(1, (positions - first)[:, :, None].expand(-1, -1, logits.shape[-1]))


@contextmanager
def rows_of(cache: KVCache, rows: Tensor) -> Iterator[KVCache]:
    """The cache of a subset of rows, written back once the block exits (the cache itself,
    not a copy, when the subset is every row)."""
    if rows.numel() == cache.keys[0].shape[0]:  # rows are distinct: all of them
        yield cache
        return
    part = cache.select_rows(rows)
    yield part
    cache.assign_rows(rows, part)


# --- semi-autoregressive single-block strategies ---------------------------------------------

Chooser = Callable[[Scores, Tensor, Tensor, Tensor], Tensor]


def decode_semi_ar(model: D3Model, state: DecodeState, spec: ModelSpec, options: DecodeOptions,
                   choose: Chooser, cache_mode: str = "none") -> None:
    """Semi-autoregressive blocks: each row decodes inside its first block that has masks.

    Per iteration every unfinished row gets one forward: the full canvas (`none`, and the
    first forward of each block under a cache), the suffix from the block start against the
    prefix cache (`prefix`), or only the block against the whole-canvas cache (`dual`), §3.5.
    `choose(scores, candidates, forwards, block)` then picks, on the block's positions
    [rows, block_size], which masked positions to commit.
    """
    block_size = options.block_size
    device, batch = state.canvas.device, state.canvas.shape[0]
    generator = torch.Generator(device=device).manual_seed(options.seed)
    offsets = torch.arange(block_size, device=device)
    cache = None
    if cache_mode != "none":
        cache = KVCache.empty(model.config, batch, state.canvas.shape[1], device, model.dtype)
    cached_block = torch.full((batch,), -1, device=device)
    while (rows := state.active_rows(spec)).numel():
        masked = state.masked(spec)[rows]
        block = masked.int().argmax(1) // block_size
        positions = block[:, None] * block_size + offsets  # generation-relative, [rows, bs]
        logits = torch.empty(len(rows), block_size, model.config.vocab_size, device=device,
                             dtype=model.dtype)
        full = cached_block[rows] != block if cache is not None else torch.ones_like(block).bool()
        if full.any():
            sub, span = rows[full], blocks_span(block[full], block_size)
            if cache is None:
                gen_logits = suffix_forward(model, spec, state, sub, None, None, span)
            else:
                with rows_of(cache, sub) as part:
                    gen_logits = suffix_forward(model, spec, state, sub, part,
                                                torch.zeros_like(sub), span)
                cached_block[sub] = block[full]
            logits[full] = at_positions(gen_logits, span[0], positions[full])
        if (~full).any():
            sub = rows[~full]
            block_start = state.prompt_length + block[~full] * block_size
            with rows_of(cache, sub) as part:
                if cache_mode == "dual":
                    logits[~full] = block_forward(model, spec, state, sub, part, block_start,
                                                  block_size)
                else:  # prefix: recompute from the block start on, read the prefix from cache
                    span = blocks_span(block[~full], block_size)
                    gen_logits = suffix_forward(model, spec, state, sub, part, block_start,
                                                span)
            if cache_mode == "prefix":
                logits[~full] = at_positions(gen_logits, span[0], positions[~full])
        state.count_forward(rows)
        scores = score(logits, spec.mask_token_id, options.temperature, generator)
        candidates = masked.gather(1, positions)
        commit = choose(scores, candidates, state.forwards[rows.cpu()].to(device), block)
        state.commit(rows, positions, scores.tokens, commit & candidates)


def decode_vanilla(model: D3Model, state: DecodeState, spec: ModelSpec,
                   options: DecodeOptions) -> None:
    """LLaDA low-confidence remasking (§3.4): a fixed number of steps per block.

    Each step commits ceil(masks left in block / steps left in block) tokens, which is exactly
    LLaDA's quota (the first n mod s steps take one extra); steps = gen_length is one token
    per forward.
    """
    num_blocks = state.generation.shape[1] // options.block_size
    steps = options.steps or state.generation.shape[1]
    if steps % num_blocks:
        raise ValueError(f"steps {steps} must be a multiple of the number of blocks {num_blocks}")
    steps_per_block = steps // num_blocks

    def choose(scores: Scores, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        steps_left = ((block + 1) * steps_per_block - forwards + 1).clamp_min(1)
        quota = (candidates.sum(1) + steps_left - 1) // steps_left
        return top_k_per_row(scores.confidence.masked_fill(~candidates, -math.inf), quota)

    decode_semi_ar(model, state, spec, options, choose)


def decode_threshold(model: D3Model, state: DecodeState, spec: ModelSpec,
                     options: DecodeOptions) -> None:
    """Fast-dLLM confidence threshold (§3.5): commit every candidate of the current block with
    confidence ≥ τ, and always the most confident one; `--cache none|prefix|dual`."""
    tau = resolved_threshold("threshold", options)

    def choose(scores: Scores, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        confidence = scores.confidence.masked_fill(~candidates, -math.inf)
        return (confidence >= tau) | one_hot_best(confidence)

    decode_semi_ar(model, state, spec, options, choose, cache_mode=options.cache)


def entropy_selection(entropy: Tensor, candidates: Tensor, gamma: float,
                      spec: ModelSpec) -> Tensor:
    """§3.1 step 9: candidates under the entropy threshold, plus (LLaDA rule) the lowest one.

    LLaDA: `H ≤ γ` and the global lowest-entropy candidate always; Dream: `H < γ` only.
    """
    below = entropy < gamma if spec.strict_entropy_threshold else entropy <= gamma
    selected = below & candidates
    if spec.commit_lowest_entropy:
        lowest = one_hot_best(entropy.masked_fill(~candidates, math.inf), lowest=True)
        selected |= lowest & candidates.any(1, keepdim=True)
    return selected


def decode_entropy(model: D3Model, state: DecodeState, spec: ModelSpec,
                   options: DecodeOptions) -> None:
    """dParallel (§3.1 with one block): commit the current block's candidates whose entropy
    is under γ; if none qualifies, the lowest-entropy one (guaranteed progress)."""
    gamma = resolved_threshold("entropy", options)

    def choose(scores: Scores, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        selected = entropy_selection(scores.entropy, candidates, gamma, spec)
        lowest = one_hot_best(scores.entropy.masked_fill(~candidates, math.inf), lowest=True)
        return selected | (lowest & ~selected.any(1, keepdim=True))

    decode_semi_ar(model, state, spec, options, choose)


# --- d3LLM entropy-based multi-block decoding -----------------------------------------------


@dataclass
class BlockTable:
    """Per-row multi-block state (§3.1, §3.2). Column 0 is the prompt, 1.. the answer blocks."""

    created: Tensor  # [batch, 1 + blocks] bool
    full: Tensor  # [batch, 1 + blocks] bool: fully activated
    completed_at: Tensor  # [batch, 1 + blocks] forward index first seen finished (-1: not yet)
    cache_len: Tensor  # [batch] leading positions whose K/V the cache holds (§3.2, A5)

    @classmethod
    def start(cls, batch: int, num_blocks: int, device: torch.device) -> BlockTable:
        created = torch.zeros(batch, 1 + num_blocks, dtype=torch.bool, device=device)
        created[:, :2] = True  # the prompt, and the first answer block (fully active)
        completed_at = torch.full_like(created, -1, dtype=torch.long)
        completed_at[:, 0] = 0
        return cls(created, created.clone(), completed_at,
                   torch.zeros(batch, dtype=torch.long, device=device))


def decode_multiblock(model: D3Model, state: DecodeState, spec: ModelSpec,
                      options: DecodeOptions) -> None:
    """d3LLM entropy-based multi-block decoding (§3.1) with `--cache none|delayed` (§3.2).

    Blocks open once their predecessor is `block_add_threshold` decoded (at most `blocks`
    with masks at once) and become fully active at `decoded_token_threshold`; every masked
    position of an open block is a candidate; selection by entropy (`entropy_selection`),
    plus the lowest-entropy position of the first full block if it got nothing. Early stop
    fills everything after the first stop token with it. The delayed cache holds exactly
    the K/V of positions [0, cache_len) (A5): finished blocks join it `cache_delay` forwards
    after they finish; a periodic or stabilizing refresh is one full forward.
    """
    gamma = resolved_threshold("multiblock", options)
    gen_length, block_size = state.generation.shape[1], options.block_size
    device, batch, prompt_length = state.canvas.device, state.canvas.shape[0], state.prompt_length
    num_blocks = gen_length // block_size
    generator = torch.Generator(device=device).manual_seed(options.seed)
    table = BlockTable.start(batch, num_blocks, device)
    ends = torch.cat([torch.tensor([prompt_length], device=device),
                      prompt_length + block_size * torch.arange(1, num_blocks + 1, device=device)])
    starts = torch.cat([torch.zeros(1, dtype=torch.long, device=device), ends[:-1]])
    block_of_position = torch.arange(gen_length, device=device) // block_size + 1
    stop_ids = torch.tensor(spec.stop_token_ids, device=device)
    cache = None
    if options.cache == "delayed":
        cache = KVCache.empty(model.config, batch, state.canvas.shape[1], device, model.dtype)
    while True:
        if options.early_stop:
            fill_after_first_stop(state, spec, table, stop_ids, block_size)
        rows = state.active_rows(spec)
        if not rows.numel():
            return
        masked = state.masked(spec)[rows]
        masks_left = torch.cat([torch.zeros(len(rows), 1, dtype=torch.long, device=device),
                                masked.view(len(rows), num_blocks, block_size).sum(-1)], 1)
        progress = 1 - masks_left / torch.tensor([1] + [block_size] * num_blocks, device=device)
        created, full = table.created[rows], table.full[rows]
        # §3.1 step 4: activation; step 5: open at most one block.
        previous = torch.cat([torch.ones_like(progress[:, :1]), progress[:, :-1]], 1)
        full |= created & (previous >= options.decoded_token_threshold)
        last = created.sum(1) - 1
        last_progress = progress.gather(1, last[:, None]).squeeze(1)
        open_blocks = (created & (masks_left > 0))[:, 1:].sum(1)
        can_open = (last < num_blocks) & ((last_progress >= options.block_add_threshold)
                                          | (masks_left.gather(1, last[:, None]).squeeze(1) == 0))
        if options.blocks is not None:
            can_open &= open_blocks < options.blocks
        opened = can_open.nonzero().squeeze(1)
        new_block = (last + 1).clamp_max(num_blocks)
        created[opened, new_block[opened]] = True
        full[opened, new_block[opened]] = last_progress[opened] >= options.decoded_token_threshold
        table.created[rows], table.full[rows] = created, full

        # Candidates: masked positions of created blocks; only their span gets logits.
        candidates = masked & created.gather(1, block_of_position.expand(len(rows), -1))
        span = candidate_span(candidates)
        if cache is None:
            logits = suffix_forward(model, spec, state, rows, None, None, span)
        else:
            fresh_from = plan_delayed_cache(table, rows, masks_left, state.forwards[rows.cpu()]
                                            .to(device) + 1, starts, ends, options)
            with rows_of(cache, rows) as part:
                logits = suffix_forward(model, spec, state, rows, part, fresh_from, span)
        state.count_forward(rows)
        scores = score(logits, spec.mask_token_id, options.temperature, generator)
        window_blocks = block_of_position[span[0]:span[1]]
        candidates = candidates[:, span[0]:span[1]]
        commit = entropy_selection(scores.entropy, candidates, gamma, spec)
        # §3.1 step 10: the first full block with masks gets its lowest-entropy position.
        first_full = (full & (masks_left > 0)).int().argmax(1)
        has_full = (full & (masks_left > 0)).any(1)
        in_first_full = (window_blocks[None, :] == first_full[:, None]) & candidates
        needs = has_full & ~(commit & in_first_full).any(1)
        forced = one_hot_best(scores.entropy.masked_fill(~in_first_full, math.inf), lowest=True)
        forced &= needs[:, None]
        tokens = scores.tokens
        if spec.commit_lowest_entropy and options.temperature > 0:  # LLaDA re-proposes argmax
            never_mask = torch.tensor([spec.mask_token_id], device=device)
            greedy = logits.index_fill(-1, never_mask, -math.inf).argmax(-1)
            tokens = torch.where(forced, greedy, tokens)
        window = torch.arange(*span, device=device).expand(len(rows), -1)
        state.commit(rows, window, tokens, commit | forced)


def candidate_span(candidates: Tensor) -> tuple[int, int]:
    """Generation positions [start, end) from the first to the last candidate of any row
    (host ints; every decoding row has a candidate)."""
    present = candidates.any(0)
    index = torch.arange(len(present), device=present.device)
    bounds = torch.stack([torch.where(present, index, len(present)).min(),
                          torch.where(present, index, -1).max()])
    first, last = bounds.tolist()
    return first, last + 1


def fill_after_first_stop(state: DecodeState, spec: ModelSpec, table: BlockTable,
                          stop_ids: Tensor, block_size: int) -> None:
    """§3.1 step 3 (early stop): after a row's first decoded stop token, every position
    becomes that token and the later blocks are created as finished (A8)."""
    generation = state.generation
    is_stop = torch.isin(generation, stop_ids)
    has_stop = is_stop.any(1)
    if not has_stop.any():
        return
    first = torch.where(has_stop, is_stop.int().argmax(1), generation.shape[1])
    stop_token = generation.gather(1, first.clamp_max(generation.shape[1] - 1)[:, None])
    after = torch.arange(generation.shape[1], device=generation.device)[None, :] > first[:, None]
    state.canvas[:, state.prompt_length:] = torch.where(after, stop_token, generation)
    later = torch.arange(table.created.shape[1], device=generation.device)[None, :] - 1
    block_of_stop = (first // block_size)[:, None]
    finished = has_stop[:, None] & (later > block_of_stop)
    table.created |= finished
    table.full |= finished


def plan_delayed_cache(table: BlockTable, rows: Tensor, masks_left: Tensor, now: Tensor,
                       starts: Tensor, ends: Tensor, options: DecodeOptions) -> Tensor:
    """§3.2 cache bookkeeping for one iteration; returns where each row's forward recomputes.

    Scan from the first block not in the cache: finished blocks get `completed_at`; those
    finished for `cache_delay` forwards are appended; the scan stops at a block with masks
    or one still inside its delay (LLaDA's rule, A6). Then per row: a periodic refresh
    (every `refresh_interval` forwards) or a refresh for a stabilizing block is a full
    forward (recompute from 0) after which the cache keeps [0, new length); an append or a
    plain cached step recomputes from the old `cache_len`; no cache yet: a full forward.
    """
    cache_len = table.cache_len[rows]
    created, completed_at = table.created[rows], table.completed_at[rows]
    index = torch.arange(created.shape[1], device=created.device)[None, :]
    unscanned = ends[None, :] > cache_len[:, None]
    finished = created & (masks_left == 0)
    stamped = torch.where(finished & unscanned & (completed_at < 0), now[:, None], completed_at)
    stops = unscanned & (~finished | (now[:, None] - stamped < options.cache_delay))
    first_stop = torch.where(stops.any(1), stops.int().argmax(1), created.shape[1])
    table.completed_at[rows] = torch.where(unscanned & (index <= first_stop[:, None]), stamped,
                                           completed_at)
    appended = unscanned & (index < first_stop[:, None])
    last_appended = torch.where(appended, index, -1).max(1).values
    new_len = torch.where(last_appended >= 0, ends[last_appended.clamp_min(0)], cache_len)
    stabilizing = unscanned & finished & (table.completed_at[rows] >= 0) & ~appended
    latest_stabilizing = torch.where(stabilizing, index, -1).max(1).values
    has_cache = cache_len > 0
    periodic = torch.zeros_like(has_cache)
    if options.refresh_interval:
        periodic = has_cache & (now % options.refresh_interval == 0)
    stabilizing_refresh = has_cache & ~periodic & (new_len == cache_len) & stabilizing.any(1)
    refresh = periodic | stabilizing_refresh
    fresh_from = torch.where(refresh | ~has_cache, 0, cache_len)
    refreshed_len = torch.where(stabilizing_refresh,
                                starts[latest_stabilizing.clamp_min(0)], new_len)
    table.cache_len[rows] = torch.where(refresh, refreshed_len, new_len)
    return fresh_from


def resolved_threshold(method: str, options: DecodeOptions) -> float:
    """The method's τ/γ: the option when given, else the method's default."""
    return DEFAULT_THRESHOLDS[method] if options.threshold is None else options.threshold


Strategy = Callable[[D3Model, DecodeState, ModelSpec, DecodeOptions], None]
STRATEGIES: dict[str, Strategy] = {
    "vanilla": decode_vanilla,
    "threshold": decode_threshold,
    "entropy": decode_entropy,
    "multiblock": decode_multiblock,
}
COMMON_OPTIONS = ("gen_length", "block_size", "temperature")
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "vanilla": (*COMMON_OPTIONS, "steps"),
    "threshold": (*COMMON_OPTIONS, "threshold", "cache"),
    "entropy": (*COMMON_OPTIONS, "threshold"),
    "multiblock": (*COMMON_OPTIONS, "threshold", "blocks", "block_add_threshold",
                   "decoded_token_threshold", "early_stop", "cache", "cache_delay",
                   "refresh_interval"),
}


def method_config(method: str, options: DecodeOptions) -> dict:
    """The options that define a method's run, as recorded in each result's `config`."""
    values = {name: getattr(options, name) for name in METHOD_OPTIONS[method]}
    if "steps" in values and values["steps"] is None:
        values["steps"] = options.gen_length
    if "threshold" in values:
        values["threshold"] = resolved_threshold(method, options)
    if values.get("cache") == "none":
        for name in ("cache_delay", "refresh_interval"):
            values.pop(name, None)
    return values


def model_defaults(decoding: dict[str, dict[str, Any]], method: str) -> dict[str, Any]:
    """A model's own options for `method` (`LoadedModel.decoding`), checked by name."""
    defaults = decoding.get(method, {})
    unknown = [name for name in defaults if name not in METHOD_OPTIONS[method]]
    if unknown:
        raise ValueError(f"the model's d3_decoding defaults for {method} name {unknown[0]!r}, "
                         f"which is not an option of {method}")
    return defaults


def options_for(method: str, options: DecodeOptions) -> DecodeOptions:
    """The shared options as `method` runs them (methods without a cache run with none)."""
    return options if method in CACHE_MODES else replace(options, cache="none")


def validate(method: str, options: DecodeOptions) -> None:
    """Reject settings a method cannot run with (one-line messages); the runner calls this
    before any strategy, so the strategies assume valid options."""
    if method not in STRATEGIES:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(STRATEGIES)}")
    modes = CACHE_MODES.get(method, ("none",))
    if options.cache not in modes:
        raise ValueError(f"--cache {options.cache} does not apply to {method} "
                         f"(choose from {', '.join(modes)})")
    if options.blocks is not None and options.blocks < 1:
        raise ValueError(f"--blocks must be at least 1, got {options.blocks}")
    if options.gen_length % options.block_size:
        raise ValueError(f"generation length {options.gen_length} is not a multiple of "
                         f"--block-size {options.block_size}")
