"""`d3 distill`: train a student that decodes in parallel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .shared import check_writable, console, device_option, fail, progress_bar


def distill(
    trajectories: Annotated[Path, typer.Option(help="Folder written by d3 trajectories.")],
    out: Annotated[Path, typer.Option(help="Student folder (checkpoints/ while training).")],
    teacher: Annotated[str, typer.Option(
        help="Teacher (the student starts from it): embedded name, folder or hub id "
             "(default: arith-teacher).")] = "",
    recipe: Annotated[str, typer.Option(help="d3 (trajectory) or dparallel.")] = "d3",
    lora: Annotated[bool | None, typer.Option(
        "--lora/--full", help="LoRA adapters or full fine-tune (default: the preset's).")] = None,
    merge: Annotated[bool, typer.Option(
        help="LoRA: write merged weights instead of the adapter.")] = False,
    config: Annotated[Path | None, typer.Option(
        help="Preset YAML with d3:/dparallel: sections (default: the teacher family's).")] = None,
    masks: Annotated[str | None, typer.Option(help="trajectory or random.")] = None,
    noise_schedule: Annotated[bool | None, typer.Option(
        "--noise-schedule/--no-noise-schedule",
        help="Mask ratio rising over training (docs/algorithms.md).")] = None,
    window_schedule: Annotated[str | None, typer.Option(
        help="Window size per epoch, e.g. 16,16,24,24,32,32.")] = None,
    complementary: Annotated[bool | None, typer.Option(
        "--complementary/--no-complementary", help="Complementary-mask pass (CE').")] = None,
    only_correct: Annotated[bool | None, typer.Option(
        "--only-correct/--all-answers",
        help="Train on the teacher's correct answers only (default).")] = None,
    entropy_weight: Annotated[float | None, typer.Option(
        min=0.0, help="β of the entropy term.")] = None,
    entropy_temperature: Annotated[float | None, typer.Option(
        min=0.0, help="τ of softmax(z/τ); above 0.")] = None,
    epochs: Annotated[float | None, typer.Option(min=0.0)] = None,
    max_steps: Annotated[int | None, typer.Option(
        min=1, help="Stop after N optimizer steps.")] = None,
    learning_rate: Annotated[float | None, typer.Option(min=0.0)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Per device.")] = None,
    save_steps: Annotated[int | None, typer.Option(min=1, help="Checkpoint interval.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    bf16: Annotated[bool | None, typer.Option(
        "--bf16/--no-bf16", help="bfloat16 autocast over float32 master weights "
                                 "(default: on with CUDA).")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(
        help="Recompute each layer in the backward pass: less memory, ~30% more time.")
    ] = False,
    device: Annotated[str, typer.Option(
        help="cpu, cuda, cuda:N or auto.", callback=device_option)] = "auto",
) -> None:
    """Distil the teacher into a student that decodes many tokens per forward; rerun the
    same command to resume from the last checkpoint. Under `accelerate launch` each
    process trains on its own device (see the README for multi-GPU recipes)."""
    import torch

    from ..checkpoints import DEFAULT_TEACHER, ModelLoadError, load_model, pick_device
    from ..distill import TERMS, DistillJob, load_config, preset_path
    from ..training import RichProgress
    from ..trajectories import TrajectoryFolderError

    overrides = {"lora": lora, "masks": masks, "noise_schedule": noise_schedule,
                 "complementary": complementary, "only_correct": only_correct,
                 "entropy_weight": entropy_weight,
                 "entropy_temperature": entropy_temperature, "epochs": epochs,
                 "max_steps": max_steps, "learning_rate": learning_rate,
                 "batch_size": batch_size, "save_steps": save_steps, "seed": seed}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    check_writable(out, "folder")
    device = pick_device(device)
    try:
        if window_schedule is not None:
            try:
                overrides["window_schedule"] = [int(size) for size in window_schedule.split(",")
                                                if size.strip()]
            except ValueError:
                raise ValueError(f"--window-schedule {window_schedule!r} is not a list of "
                                 "integers like 16,16,24") from None
        if bf16 is None:
            bf16 = device.startswith("cuda")
        loaded = load_model(teacher or DEFAULT_TEACHER, device, "float32")
        settings = load_config(config or preset_path(loaded.family), recipe, overrides)
        if settings.lora and bf16:  # the frozen base may be bf16; PEFT keeps adapters fp32
            loaded.model.to(torch.bfloat16)
        job = DistillJob(loaded, trajectories, settings, out, merge, device, bf16,
                         gradient_checkpointing)
        trainer = job.prepare()
    except (ModelLoadError, TrajectoryFolderError, ValueError) as error:
        raise fail(str(error)) from None
    try:
        with progress_bar("loss") as bar:
            trainer.add_callback(RichProgress(bar, bar.add_task(f"distill ({recipe})",
                                                                total=None, loss=""), TERMS))
            student = job.run(trainer)
    except KeyboardInterrupt:
        student = None
    if student is None:
        saved = f"saved step {trainer.state.global_step}; " if job.stop.requested else ""
        console.print(f"interrupted: {saved}rerun the same command to resume from "
                      f"{out}/checkpoints")
        raise typer.Exit(130)
    console.print(f"student written to {student}; log in {out}/distill_log.jsonl")
