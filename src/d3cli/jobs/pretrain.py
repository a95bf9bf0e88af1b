"""One `d3 pretrain` run: the request as a model shape, an objective and a schedule, the
run folder checked (an earlier run there must agree) before any training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..checkpoints import pick_device
from ..pretrain import PretrainConfig, Pretrainer, RunSchedule
from .output import check_writable


@dataclass
class PretrainRequest:
    """The options of `d3 pretrain` as the CLI fills them."""

    out: Path
    task: str
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    ema_decay: float
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    block_size: int
    learned_positions: bool
    seed: int
    save_every: int
    eval_every: int
    eval_prompts: int
    bf16: bool
    device: str


def prepare_pretrain(request: PretrainRequest) -> Pretrainer:
    """The run, built or resumed from `out` (a `RunMismatchError` when its settings differ)."""
    check_writable(request.out, "folder")
    config = PretrainConfig(
        task=request.task, batch_size=request.batch_size, learning_rate=request.learning_rate,
        warmup_steps=request.warmup_steps, ema_decay=request.ema_decay,
        hidden_size=request.hidden_size, intermediate_size=request.intermediate_size,
        num_layers=request.layers, num_heads=request.heads, block_size=request.block_size,
        learned_positions=request.learned_positions, seed=request.seed)
    schedule = RunSchedule(steps=request.steps, save_every=request.save_every,
                           eval_every=request.eval_every, eval_prompts=request.eval_prompts,
                           device=pick_device(request.device), bf16=request.bf16)
    return Pretrainer(config, request.out, schedule)
