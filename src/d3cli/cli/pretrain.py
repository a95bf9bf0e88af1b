"""`d3 pretrain`: train a small dLLM from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .shared import check_writable, console, device_option, fail, progress_bar


def pretrain(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint, log, exported model/.")],
    task: Annotated[str, typer.Option(help="Synthetic task to train on.")] = "arith",
    steps: Annotated[int, typer.Option(min=1, help="Total optimizer steps.")] = 40000,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    learning_rate: Annotated[float, typer.Option(min=0.0)] = 2e-3,
    warmup_steps: Annotated[int, typer.Option(min=0)] = 200,
    ema_decay: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.999,
    hidden_size: Annotated[int, typer.Option(min=1)] = 192,
    intermediate_size: Annotated[int, typer.Option(min=1)] = 512,
    layers: Annotated[int, typer.Option(min=1)] = 4,
    heads: Annotated[int, typer.Option(min=1, help="Must divide --hidden-size.")] = 6,
    block_size: Annotated[int, typer.Option(
        min=1, help="Default decoding block of the model.")] = 16,
    learned_positions: Annotated[bool, typer.Option(
        help="Add learned absolute position embeddings to RoPE.")] = True,
    seed: Annotated[int, typer.Option()] = 0,
    save_every: Annotated[int, typer.Option(min=1, help="Checkpoint interval (steps).")] = 500,
    eval_every: Annotated[int, typer.Option(
        min=1, help="Eval + export interval (steps).")] = 2000,
    eval_prompts: Annotated[int, typer.Option(min=1, help="Held-out prompts per eval.")] = 200,
    bf16: Annotated[bool, typer.Option(
        help="bfloat16 autocast over float32 weights.")] = False,
    device: Annotated[str, typer.Option(
        help="cpu, cuda, cuda:N or auto.", callback=device_option)] = "auto",
) -> None:
    """Train a small dLLM from scratch (LLaDA objective); rerun the same command to resume.
    Runs under `accelerate launch` like `d3 distill`."""
    from ..checkpoints import pick_device
    from ..pretrain import PretrainConfig, Pretrainer, RunSchedule
    from ..training import RichProgress

    check_writable(out, "folder")

    config = PretrainConfig(
        task=task, batch_size=batch_size, learning_rate=learning_rate,
        warmup_steps=warmup_steps, ema_decay=ema_decay, hidden_size=hidden_size,
        intermediate_size=intermediate_size, num_layers=layers, num_heads=heads,
        block_size=block_size, learned_positions=learned_positions, seed=seed)
    schedule = RunSchedule(steps=steps, save_every=save_every, eval_every=eval_every,
                           eval_prompts=eval_prompts, device=pick_device(device), bf16=bf16)
    try:
        run = Pretrainer(config, out, schedule)
    except ValueError as error:  # RunMismatchError and unknown tasks
        raise fail(str(error)) from None
    try:
        with progress_bar("loss") as bar:
            run.trainer.add_callback(RichProgress(bar, bar.add_task("pretrain", total=steps,
                                                                    loss="")))
            model = run.run()
    except KeyboardInterrupt:
        model = None
    if model is None:
        saved = f"saved step {run.step}; " if run.stop.requested else ""
        console.print(f"interrupted: {saved}rerun the same command to resume from {out}")
        raise typer.Exit(130)
    accuracy = "-" if run.accuracy is None else f"{run.accuracy:.1f}%"
    console.print(f"done: {run.step} steps, eval accuracy {accuracy}; model in {model}")
