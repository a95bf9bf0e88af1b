"""The one decoding loop: slots, cache, forwards, counting, timing and stopping for every
strategy, with one host read every `sync_every` iterations.

Each iteration a strategy plans the next forward on the device; the driver picks a window
(the whole canvas, a suffix from a block boundary, or each row's block), runs the model
once over every slot, scores the positions the strategy reads, and lets the strategy
commit. A row the window does not serve, or that has nothing left to decode, is unchanged
by the iteration, so a row's result never depends on its neighbours, on the window policy,
or on how many iterations run between host reads. At a read the host collects finished
rows and refills their slots from the queue, so the batch keeps its shape.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..checkpoints import ModelSpec
from ..model import D3Model, KVCache
from .options import DecodeOptions
from .rows import PromptQueue, Rows
from .scoring import gumbel_noise, score
from .strategy import Plan, Strategy

BLOCK_WINDOW = -1  # the window of each row's own block (dual cache)
PATIENCE = 2  # reads a row may wait for a window before it gets one


@dataclass
class Decoded:
    """One finished prompt: its index in the input, answer tokens, forwards that included
    it, seconds from entering a slot to the read that found it done, and (on request) the
    forward that committed each answer position."""

    index: int
    tokens: list[int]
    forwards: int
    seconds: float
    commit_step: list[int] | None = None


StrategyFactory = Callable[[Rows, ModelSpec, DecodeOptions], Strategy]
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled(model: D3Model) -> Callable[..., Tensor]:
    """The model's forward under torch.compile (CUDA graphs on CUDA), built once per model.
    `fullgraph` makes any graph break an error."""
    if model not in _COMPILED:
        cuda = next(model.parameters()).device.type == "cuda"
        _COMPILED[model] = torch.compile(model, fullgraph=True, dynamic=False,
                                         mode="reduce-overhead" if cuda else None)
    return _COMPILED[model]


def choose_window(starts: dict[int, int], block_only: dict[int, bool], waited: dict[int, int],
                  length: int, block_width: int) -> int:
    """The window that serves the most rows per position computed, unless a row has waited
    `PATIENCE` reads: then the latest suffix start that serves every such row."""
    overdue = [slot for slot in starts if waited[slot] >= PATIENCE]
    if overdue:
        return min(starts[slot] for slot in overdue)
    options = {start: sum(s >= start for s in starts.values()) / (length - start)
               for start in set(starts.values())}
    if any(block_only.values()):
        options[BLOCK_WINDOW] = sum(block_only.values()) / block_width
    return max(options, key=lambda window: (options[window], -window))


class Driver:
    """Decodes a queue of prompts with one strategy in a fixed number of slots."""

    def __init__(self, model: D3Model, spec: ModelSpec, queue: PromptQueue, slots: int,
                 make_strategy: StrategyFactory, options: DecodeOptions,
                 forward: Callable[..., Tensor]) -> None:
        self.model, self.spec, self.queue, self.options = model, spec, queue, options
        self.rows = Rows.empty(slots, queue, options.gen_length, spec)
        self.strategy = make_strategy(self.rows, spec, options)
        self.forward = forward
        self.shift = int(spec.logit_shift)
        device = queue.ids.device
        self.positions = torch.arange(self.rows.length, device=device)
        self.block_offsets = torch.arange(-self.shift, options.block_size, device=device)
        self.score_dtype = getattr(torch, options.score_dtype)
        self.cache = None
        if self.strategy.uses_cache:
            self.cache = KVCache.empty(model.config, slots, self.rows.length, device, model.dtype)
            if device.type == "cuda" and forward is not model:  # CUDA graphs reuse addresses
                for tensor in self.cache.keys + self.cache.values:
                    torch._dynamo.mark_static_address(tensor)

    def served(self, plan: Plan, window: int) -> Tensor:
        if plan.need_start is None:
            return plan.active
        if window == BLOCK_WINDOW:
            return plan.active & plan.block_only
        return plan.active & (plan.need_start >= window)

    def run_forward(self, plan: Plan, window: int, served: Tensor) -> Tensor:
        """The model over `window` for every slot; logits [slots, k, V] at `plan.read`."""
        rows, prompt_length = self.rows, self.rows.prompt_length
        if window == BLOCK_WINDOW:
            positions = (plan.fresh_from[:, None] + self.block_offsets).clamp_min(0)
            ids = rows.canvas.gather(1, positions)
            first = (plan.fresh_from - self.shift)[:, None]
        else:
            positions, ids, first = self.positions[window:], rows.canvas[:, window:], window
        # Under a logit shift position p reads the output at p - 1 (a window's first position
        # reads its own).
        logits_at = (prompt_length - self.shift + plan.read - first).clamp(0, ids.shape[1] - 1)
        keep = None
        if self.cache is not None:
            keep = ((positions < plan.fresh_from[:, None]) | (positions >= plan.fresh_to[:, None])
                    | ~served[:, None])
        mask = None
        if self.queue.padded:
            mask = rows.visible if self.cache is not None else rows.visible[:, window:]
        return self.forward(ids, positions=positions, cache=self.cache, attention_mask=mask,
                            keep_cached=keep, logits_at=logits_at)

    def iterate(self, plan: Plan, window: int) -> None:
        """One forward and its commits."""
        served = self.served(plan, window)
        logits = self.run_forward(plan, window, served)
        self.rows.forwards += served
        noise = None
        if self.options.temperature > 0:
            noise = gumbel_noise(self.rows.keys, self.rows.forwards, plan.read,
                                 logits.shape[-1], self.score_dtype)
        scores = score(logits, self.spec.mask_token_id, self.options.temperature, noise,
                       self.score_dtype)
        self.strategy.commit(plan, scores, logits, served)

    def read(self, plan: Plan, commit_steps: bool) -> list[int]:
        """The one host synchronisation: activity, prompts, forwards, window needs and
        answers of every slot, packed into one transfer."""
        rows = self.rows
        zeros = torch.zeros_like(rows.forwards)
        parts = [plan.active.long(), rows.prompt, rows.forwards,
                 zeros if plan.need_start is None else plan.need_start,
                 zeros if plan.block_only is None else plan.block_only.long(),
                 rows.generation.flatten()]
        if commit_steps:
            parts.append(rows.commit_step.flatten())
        return torch.cat(parts).tolist()

    def run(self, sync_every: int, commit_steps: bool) -> Iterator[Decoded]:
        """Decode the whole queue, yielding each prompt as its row finishes."""
        slots, gen_length = self.rows.slots, self.options.gen_length
        block_width = self.options.block_size + self.shift
        prompt_of, started = [-1] * slots, [0.0] * slots
        waited = [0] * slots
        next_prompt, iteration, window = 0, 0, 0
        while True:
            plan = self.strategy.plan()
            if iteration % sync_every == 0:
                packed = self.read(plan, commit_steps)
                now = time.perf_counter()
                field = [packed[index * slots:(index + 1) * slots] for index in range(5)]
                active, _, forwards, starts, block_only = field
                answers = packed[5 * slots:]
                for slot in range(slots):
                    if prompt_of[slot] >= 0 and not active[slot]:
                        offset = slot * gen_length
                        steps = None
                        if commit_steps:
                            steps = answers[(slots + slot) * gen_length:
                                            (slots + slot + 1) * gen_length]
                        yield Decoded(prompt_of[slot], answers[offset:offset + gen_length],
                                      forwards[slot], now - started[slot], steps)
                        prompt_of[slot] = -1
                free = [slot for slot in range(slots) if not active[slot]]
                if free and next_prompt < len(self.queue):
                    self.strategy.reset(self.rows.refill(self.queue, ~plan.active, next_prompt))
                    for slot in free[:len(self.queue) - next_prompt]:
                        prompt_of[slot], started[slot] = next_prompt, now
                        active[slot], starts[slot], block_only[slot] = True, 0, False
                        next_prompt += 1
                    plan = self.strategy.plan()
                live = [slot for slot in range(slots) if active[slot]]
                if not live:
                    return
                if plan.need_start is not None:
                    window = choose_window({s: starts[s] for s in live},
                                           {s: bool(block_only[s]) for s in live},
                                           {s: waited[s] for s in live}, self.rows.length,
                                           block_width)
                    for slot in live:
                        fits = block_only[slot] if window == BLOCK_WINDOW else \
                            starts[slot] >= window
                        waited[slot] = 0 if fits else waited[slot] + 1
            self.iterate(plan, window)
            iteration += 1


@torch.no_grad()
def decode_prompts(model: D3Model, spec: ModelSpec, prompts: Sequence[Sequence[int]],
                   keys: Sequence[int], make_strategy: StrategyFactory, options: DecodeOptions,
                   batch_size: int, sync_every: int = 1, commit_steps: bool = False,
                   compile: bool = False) -> Iterator[Decoded]:
    """Decode `prompts` (token ids; `keys` seed each row's sampling) in `batch_size` slots,
    yielding each as it finishes, in any order (`Decoded.index` says which)."""
    if not prompts:
        return
    device = next(model.parameters()).device
    queue = PromptQueue.upload(prompts, keys, spec.pad_token_id, device)
    forward = compiled(model) if compile else model
    driver = Driver(model, spec, queue, min(batch_size, len(prompts)), make_strategy, options,
                    forward)
    yield from driver.run(sync_every, commit_steps)
