"""Decoding strategies (one function each, sharing `DecodeState`) and the task runner.

Every strategy is written against the one model call ``model(ids, positions=, cache=)`` and
reads token facts from `ModelSpec`. Specs: ../shared/design/algorithms.md §3.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .canvas import first_stop, left_pad
from .checkpoints import LoadedModel, ModelSpec, encode_prompt
from .tasks import Example, Task


@dataclass(frozen=True)
class DecodeOptions:
    """Knobs of every strategy; each strategy reads the ones it documents."""

    gen_length: int = 64
    block_size: int = 16
    steps: int | None = None  # vanilla: forwards over the whole canvas (None = gen_length)
    threshold: float = 0.9  # threshold: confidence τ
    temperature: float = 0.0
    seed: int = 0


@dataclass
class DecodeState:
    """Per-row state shared by every strategy: the canvas and the forwards each row used."""

    canvas: Tensor  # [batch, prompt_length + gen_length]: left-padded prompt, then the answer
    attention_mask: Tensor  # [batch, same] bool: False on prompt padding
    prompt_length: int
    forwards: Tensor = field(init=False)  # [batch] model calls that included the row

    def __post_init__(self) -> None:
        self.forwards = torch.zeros(self.canvas.shape[0], dtype=torch.long)

    @classmethod
    def start(cls, prompts: Sequence[Sequence[int]], spec: ModelSpec, gen_length: int,
              device: torch.device) -> DecodeState:
        """Prompts left-padded with the pad id, followed by `gen_length` mask tokens."""
        prompt_ids, visible = left_pad(prompts, spec.pad_token_id)
        batch = prompt_ids.shape[0]
        canvas = torch.cat([prompt_ids, torch.full((batch, gen_length), spec.mask_token_id)], 1)
        attention_mask = torch.cat([visible, torch.ones(batch, gen_length, dtype=torch.bool)], 1)
        return cls(canvas.to(device), attention_mask.to(device), prompt_ids.shape[1])

    @property
    def generation(self) -> Tensor:
        return self.canvas[:, self.prompt_length:]


def propose(logits: Tensor, mask_id: int, temperature: float,
            generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Proposed tokens and their confidence (§3.4, §3.6).

    T = 0 takes the argmax; T > 0 takes Gumbel-max over logits / T, which samples
    softmax(logits / T). Confidence is the float64 softmax probability of the proposed
    token under the raw logits. The mask token is never proposed, so every commit makes
    progress.
    """
    logits = logits.double()
    logits[..., mask_id] = -math.inf
    if temperature > 0:
        uniform = torch.rand(logits.shape, dtype=torch.float64, device=logits.device,
                             generator=generator).clamp_min(1e-300)
        tokens = (logits / temperature - torch.log(-torch.log(uniform))).argmax(-1)
    else:
        tokens = logits.argmax(-1)
    confidence = logits.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    return tokens, confidence


def top_k_per_row(scores: Tensor, counts: Tensor) -> Tensor:
    """Boolean mask of the `counts[row]` highest scores of each row."""
    order = scores.argsort(dim=-1, descending=True)
    ranks = order.argsort(dim=-1)
    return ranks < counts[:, None]


Chooser = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]


def decode_semi_ar(model: torch.nn.Module, state: DecodeState, spec: ModelSpec,
                   options: DecodeOptions, choose: Chooser) -> None:
    """Semi-autoregressive blocks: each row decodes inside its first block that has masks.

    Per iteration, one full forward over the rows that still have masks; `choose(confidence,
    candidates, forwards, block_index)` picks which candidates of the current block to commit.
    """
    gen_length, block_size = state.generation.shape[1], options.block_size
    if gen_length % block_size:
        raise ValueError(f"gen_length {gen_length} is not a multiple of block_size {block_size}")
    device = state.canvas.device
    block_of_position = torch.arange(gen_length, device=device) // block_size
    generator = torch.Generator(device=device).manual_seed(options.seed)
    while True:
        masked = state.generation == spec.mask_token_id
        rows = masked.any(1).nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        logits = model(state.canvas[rows], attention_mask=state.attention_mask[rows])
        logits = logits[:, state.prompt_length:]
        row_masked = masked[rows]
        block_index = row_masked.int().argmax(1) // block_size
        candidates = row_masked & (block_of_position[None] == block_index[:, None])
        tokens, confidence = propose(logits, spec.mask_token_id, options.temperature, generator)
        confidence = confidence.masked_fill(~candidates, -math.inf)
        commit = choose(confidence, candidates, state.forwards[rows.cpu()].to(device), block_index)
        commit &= candidates
        generation = state.generation[rows]
        state.canvas[rows, state.prompt_length:] = torch.where(commit, tokens, generation)
        state.forwards[rows.cpu()] += 1


def decode_vanilla(model: torch.nn.Module, state: DecodeState, spec: ModelSpec,
                   options: DecodeOptions) -> None:
    """LLaDA low-confidence remasking (§3.4): a fixed number of steps per block.

    Each step commits ceil(masks left in block / steps left in block) tokens, which is exactly
    LLaDA's quota (the first n mod s steps take one extra); steps = gen_length is one token
    per forward.
    """
    gen_length = state.generation.shape[1]
    num_blocks = gen_length // options.block_size
    steps = options.steps or gen_length
    if steps % num_blocks:
        raise ValueError(f"steps {steps} must be a multiple of the number of blocks {num_blocks}")
    steps_per_block = steps // num_blocks

    def choose(confidence: Tensor, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        steps_left = ((block + 1) * steps_per_block - forwards).clamp_min(1)
        quota = (candidates.sum(1) + steps_left - 1) // steps_left
        return top_k_per_row(confidence, quota)

    decode_semi_ar(model, state, spec, options, choose)


def decode_threshold(model: torch.nn.Module, state: DecodeState, spec: ModelSpec,
                     options: DecodeOptions) -> None:
    """Fast-dLLM confidence threshold (§3.5), no cache: commit every candidate of the current
    block with confidence ≥ τ, and always the most confident one."""

    def choose(confidence: Tensor, candidates: Tensor, forwards: Tensor, block: Tensor) -> Tensor:
        best = torch.zeros_like(candidates).scatter_(1, confidence.argmax(1, keepdim=True), True)
        return (confidence >= options.threshold) | best

    decode_semi_ar(model, state, spec, options, choose)


Strategy = Callable[[torch.nn.Module, DecodeState, ModelSpec, DecodeOptions], None]
STRATEGIES: dict[str, Strategy] = {"vanilla": decode_vanilla, "threshold": decode_threshold}
METHOD_OPTIONS: dict[str, tuple[str, ...]] = {
    "vanilla": ("gen_length", "block_size", "steps", "temperature"),
    "threshold": ("gen_length", "block_size", "threshold", "temperature"),
}


def method_config(method: str, options: DecodeOptions) -> dict:
    """The options that define a method's run, as recorded in each result's `config`."""
    values = {name: getattr(options, name) for name in METHOD_OPTIONS[method]}
    if method == "vanilla" and values["steps"] is None:
        values["steps"] = options.gen_length
    return values


@dataclass
class SampleResult:
    """One result record (the contract of architecture.md)."""

    task: str
    method: str
    model: str
    id: str
    config: dict
    gen_tokens: int
    forwards: int
    tpf: float
    seconds: float
    correct: bool
    output: str


def batches(items: Sequence[Example], size: int) -> Iterator[Sequence[Example]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def decode_examples(loaded: LoadedModel, task: Task, examples: Sequence[Example], method: str,
                    options: DecodeOptions, batch_size: int = 64) -> Iterator[SampleResult]:
    """Decode `examples` with `method` in batches; yields one scored result per example.

    `seconds` is the batch's wall time shared equally among its rows. `gen_tokens` counts the
    answer tokens before the first stop token (EOS padding is not counted, §4.2).
    """
    strategy, spec, tokenizer = STRATEGIES[method], loaded.spec, loaded.tokenizer
    config = method_config(method, options)
    for batch in batches(examples, batch_size):
        prompts = [encode_prompt(loaded, example.prompt) for example in batch]
        started = time.perf_counter()
        state = DecodeState.start(prompts, spec, options.gen_length, loaded.device)
        strategy(loaded.model, state, spec, options)
        generations = state.generation.tolist()
        seconds = (time.perf_counter() - started) / len(batch)
        for example, tokens, forwards in zip(batch, generations, state.forwards.tolist(),
                                             strict=True):
            answer = tokens[:first_stop(tokens, spec.stop_token_ids)]
            output = tokenizer.decode(answer, skip_special_tokens=True)
            yield SampleResult(task.name, method, loaded.name, example.id, config, len(answer),
                               forwards, len(answer) / forwards, seconds,
                               task.score(example, output), output)


def write_results(results: Iterator[SampleResult], path: Path) -> Iterator[SampleResult]:
    """Append each result to `path` as one JSON line (flushed at once), passing it on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for result in results:
            handle.write(json.dumps(result.__dict__) + "\n")
            handle.flush()
            yield result
