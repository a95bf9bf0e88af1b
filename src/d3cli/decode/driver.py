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

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..checkpoints import ModelSpec
from ..model import D3Model, KVCache
from .options import DecodeOptions
from .rows import PromptQueue, Rows
from .scoring import gumbel_noise, score, token_hashes
from .strategy import Plan, Strategy

BLOCK_WINDOW = -1  # the window of each row's own block (dual cache)
PATIENCE = 2  # reads a row may wait for a window before it gets one
# Each window shape is a graph of its own: a decode needs up to answer blocks + 1 (9 for
# 256 tokens in blocks of 32), and the methods, batch sizes and prompt lengths of a process
# share one compiled iteration. Dynamo's default of 8 graphs per function would make the
# next recompile an error under `fullgraph`.
RECOMPILE_LIMIT = 256


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


def compiled_step(step: Callable[..., None], device: torch.device) -> Callable[..., None]:
    """`step(window, read_start)` (`Driver.advance`) under torch.compile: one graph per window
    shape for the whole iteration (CUDA graphs on CUDA). `fullgraph` makes a graph break an
    error; the recompile limit is raised to `RECOMPILE_LIMIT`."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(step, fullgraph=True, dynamic=False,
                         mode="reduce-overhead" if device.type == "cuda" else None)


def held_tensors(state: object) -> Iterator[Tensor]:
    """Every tensor `state` holds in its attributes, through nested dataclasses and objects
    (not modules): the decoding state an iteration updates in place."""
    for value in vars(state).values():
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, list):
            yield from (item for item in value if isinstance(item, Tensor))
        elif hasattr(value, "__dict__") and not isinstance(value, torch.nn.Module):
            yield from held_tensors(value)


@dataclass
class SlotRead:
    """The host's copy of one read: per slot, whether it decodes, its forwards, the suffix
    start its next forward needs, whether its block alone serves it and the first answer
    column it reads; the answers (and commit steps) of every slot, flat."""

    active: list[int]
    forwards: list[int]
    starts: list[int]
    block_only: list[int]
    read_need: list[int]
    answers: list[int]
    steps: list[int] | None

    @classmethod
    def unpack(cls, packed: list[int], slots: int, commit_steps: bool) -> SlotRead:
        fields = [packed[index * slots:(index + 1) * slots] for index in range(5)]
        answers = packed[5 * slots:]
        if not commit_steps:
            return cls(*fields, answers, None)
        half = len(answers) // 2
        return cls(*fields, answers[:half], answers[half:])

    def row(self, values: list[int] | None, slot: int) -> list[int] | None:
        width = len(self.answers) // len(self.active)
        return None if values is None else values[slot * width:(slot + 1) * width]


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
                 commit_steps: bool = False, compile: bool = False) -> None:
        self.model, self.spec, self.queue, self.options = model, spec, queue, options
        self.rows = Rows.empty(slots, queue, options.gen_length, spec, commit_steps)
        self.strategy = make_strategy(self.rows, spec, options)
        self.shift = int(spec.logit_shift)
        device = queue.ids.device
        # Built once, not per iteration: index tensors, the read's filler, the token hashes.
        self.positions = torch.arange(self.rows.length, device=device)
        self.block_offsets = torch.arange(-self.shift, options.block_size, device=device)
        self.zeros = torch.zeros_like(self.rows.forwards)
        self.token_hashes = token_hashes(model.config.vocab_size, device) \
            if options.temperature > 0 else None
        self.score_dtype = getattr(torch, options.score_dtype)
        self.cache = None
        if self.strategy.uses_cache:
            self.cache = KVCache.empty(model.config, slots, self.rows.length, device, model.dtype)
        self.step, self.compiled = self.advance, compile
        if compile:
            self.step = compiled_step(self.advance, device)
            if device.type == "cuda":  # CUDA graphs replay the state at fixed addresses
                for tensor in {id(tensor): tensor for tensor in held_tensors(self)}.values():
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
            offset = (prompt_length - plan.fresh_from)[:, None]  # the window starts at
        else:  # fresh_from - shift
            positions, ids = self.positions[window:], rows.canvas[:, window:]
            offset = prompt_length - self.shift - window
        # Under a logit shift position p reads the output at p - 1 (a window's first position
        # reads its own).
        logits_at = (plan.read + offset).clamp(0, ids.shape[1] - 1)
        keep = None
        if self.cache is not None:
            keep = ((positions < plan.fresh_from[:, None]) | (positions >= plan.fresh_to[:, None])
                    | ~served[:, None])
        mask = None
        if self.queue.padded:
            mask = rows.visible if self.cache is not None else rows.visible[:, window:]
        return self.model(ids, positions=positions, cache=self.cache, attention_mask=mask,
                          keep_cached=keep, logits_at=logits_at)

    def advance(self, window: int, read_start: int, plan: Plan | None = None) -> None:
        """One iteration, all on the device: the strategy's plan (unless the read's is given),
        reading from answer column `read_start` on when it reads every column, one forward
        over `window`, scoring and commits."""
        if plan is None:
            plan = self.strategy.plan()
        if plan.read_need is not None:
            plan = plan.from_column(read_start)
        served = self.served(plan, window)
        logits = self.run_forward(plan, window, served)
        self.rows.forwards += served
        noise = None
        if self.options.temperature > 0:
            noise = gumbel_noise(self.rows.keys, self.rows.forwards, plan.read,
                                 self.token_hashes, self.score_dtype)
        scores = score(logits, self.spec.mask_token_id, self.options.temperature, noise,
                       self.score_dtype, self.options.top_p, self.strategy.certainty)
        self.strategy.commit(plan, scores, logits, served)

    def read(self, plan: Plan) -> SlotRead:
        """The one host synchronisation: activity, forwards, window needs and answers of
        every slot (and commit steps when kept), packed into one transfer (`cat` promotes
        the flags to integers)."""
        rows, zeros = self.rows, self.zeros
        parts = [plan.active, rows.forwards,
                 zeros if plan.need_start is None else plan.need_start,
                 zeros if plan.block_only is None else plan.block_only,
                 zeros if plan.read_need is None else plan.read_need,
                 rows.generation.flatten()]
        steps = rows.commit_step is not None
        if steps:
            parts.append(rows.commit_step.flatten())
        return SlotRead.unpack(torch.cat(parts).tolist(), rows.slots, steps)

    def run(self, sync_every: int) -> Iterator[Decoded]:
        """Decode the whole queue, yielding each prompt as its row finishes. Each host read
        plans eagerly; a compiled step plans again inside its graph (the plan changes
        nothing), so that every iteration is the same graph."""
        slots = self.rows.slots
        prompt_of, started, waited = [-1] * slots, [0.0] * slots, [0] * slots
        next_prompt, window, read_start = 0, 0, 0
        for iteration in itertools.count():
            plan = None
            if iteration % sync_every == 0:
                plan = self.strategy.plan()
                read, now = self.read(plan), time.perf_counter()
                for slot in range(slots):
                    if prompt_of[slot] >= 0 and not read.active[slot]:
                        yield Decoded(prompt_of[slot], read.row(read.answers, slot),
                                      read.forwards[slot], now - started[slot],
                                      read.row(read.steps, slot))
                        prompt_of[slot] = -1
                free = [slot for slot in range(slots) if not read.active[slot]]
                if free and next_prompt < len(self.queue):
                    self.strategy.reset(self.rows.refill(self.queue, ~plan.active, next_prompt))
                    for slot in free[:len(self.queue) - next_prompt]:
                        prompt_of[slot], started[slot], waited[slot] = next_prompt, now, 0
                        read.active[slot], read.starts[slot], read.block_only[slot] = 1, 0, 0
                        read.read_need[slot] = 0
                        next_prompt += 1
                    plan = self.strategy.plan()
                live = [slot for slot in range(slots) if read.active[slot]]
                if not live:
                    return
                if plan.need_start is not None:
                    window = self.choose(read, live, waited)
                if plan.read_need is not None:
                    read_start = self.read_start(read, live, window)
            self.step(window, read_start, None if self.compiled else plan)

    def read_start(self, read: SlotRead, live: list[int], window: int) -> int:
        """The first answer column read until the next host read, for a plan that reads every
        answer position. Uncached: the least need of the live rows (it only grows between
        reads). Cached: where the window's answer part starts (a served row's cache covers
        the blocks before it, which are finished), so each window has one read shape."""
        if self.cache is None:
            return min(read.read_need[slot] for slot in live)
        return max(window + self.shift - self.rows.prompt_length, 0)

    def choose(self, read: SlotRead, live: list[int], waited: list[int]) -> int:
        """`choose_window` over the live rows; counts the reads each row waits."""
        window = choose_window({slot: read.starts[slot] for slot in live},
                               {slot: bool(read.block_only[slot]) for slot in live},
                               {slot: waited[slot] for slot in live}, self.rows.length,
                               self.options.block_size + self.shift)
        for slot in live:
            fits = read.block_only[slot] if window == BLOCK_WINDOW else \
                read.starts[slot] >= window
            waited[slot] = 0 if fits else waited[slot] + 1
        return window


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
    driver = Driver(model, spec, queue, min(batch_size, len(prompts)), make_strategy, options,
                    commit_steps, compile)
    yield from driver.run(sync_every)
