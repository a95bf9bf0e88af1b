"""`d3 pretrain`: train a small dLLM from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .shared import DeviceOpt, SeedOpt, checked, console, interrupted, train

OutOpt = Annotated[Path, typer.Option(help="Run folder: checkpoint, log, exported model/.")]
TaskOpt = Annotated[str, typer.Option(help="Synthetic task to train on.")]
StepsOpt = Annotated[int, typer.Option(min=1, help="Total optimizer steps.")]
BatchSizeOpt = Annotated[int, typer.Option(min=1)]
LearningRateOpt = Annotated[float, typer.Option(min=0.0)]
WarmupStepsOpt = Annotated[int, typer.Option(min=0)]
EmaDecayOpt = Annotated[float, typer.Option(min=0.0, max=1.0)]
HiddenSizeOpt = Annotated[int, typer.Option(min=1)]
IntermediateSizeOpt = Annotated[int, typer.Option(min=1)]
LayersOpt = Annotated[int, typer.Option(min=1)]
HeadsOpt = Annotated[int, typer.Option(min=1, help="Must divide --hidden-size.")]
ModelBlockOpt = Annotated[int, typer.Option(
    min=1, help="Default decoding block of the model.")]
LearnedPositionsOpt = Annotated[bool, typer.Option(
    help="Add learned absolute position embeddings to RoPE.")]
SaveEveryOpt = Annotated[int, typer.Option(min=1, help="Checkpoint interval (steps).")]
EvalEveryOpt = Annotated[int, typer.Option(
    min=1, help="Eval + export interval (steps).")]
EvalPromptsOpt = Annotated[int, typer.Option(min=1, help="Held-out prompts per eval.")]
Bf16Opt = Annotated[bool, typer.Option(
    help="bfloat16 autocast over float32 weights.")]


def pretrain(
    out: OutOpt,
    task: TaskOpt = "arith",
    steps: StepsOpt = 40000,
    batch_size: BatchSizeOpt = 32,
    learning_rate: LearningRateOpt = 2e-3,
    warmup_steps: WarmupStepsOpt = 200,
    ema_decay: EmaDecayOpt = 0.999,
    hidden_size: HiddenSizeOpt = 192,
    intermediate_size: IntermediateSizeOpt = 512,
    layers: LayersOpt = 4,
    heads: HeadsOpt = 6,
    block_size: ModelBlockOpt = 16,
    learned_positions: LearnedPositionsOpt = True,
    seed: SeedOpt = 0,
    save_every: SaveEveryOpt = 500,
    eval_every: EvalEveryOpt = 2000,
    eval_prompts: EvalPromptsOpt = 200,
    bf16: Bf16Opt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Train a small dLLM from scratch (LLaDA objective); rerun the same command to resume.
    Runs under `accelerate launch` like `d3 distill`."""
    options = dict(locals())  # the parameters: nothing else is named yet
    from ..jobs.pretrain import PretrainRequest, prepare_pretrain

    run = checked(prepare_pretrain, PretrainRequest(**options))
    model = train(run.trainer, "pretrain", steps, run.run)
    if model is None:
        saved = f"saved step {run.step}; " if run.stop.requested else ""
        raise interrupted(f"{saved}rerun the same command to resume from {out}")
    accuracy = "-" if run.accuracy is None else f"{run.accuracy:.1f}%"
    console.print(f"done: {run.step} steps, eval accuracy {accuracy}; model in {model}")
