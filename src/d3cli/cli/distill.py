"""`d3 distill`: train a student that decodes in parallel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .shared import DeviceOpt, checked, console, interrupted, train, warn

TrajectoriesOpt = Annotated[Path, typer.Option(help="Folder written by d3 trajectories.")]
OutOpt = Annotated[Path, typer.Option(help="Student folder (checkpoints/ while training).")]
TeacherOpt = Annotated[str, typer.Option(
    help="Teacher (the student starts from it): embedded name, folder or hub id "
         "(default: arith-teacher).")]
RecipeOpt = Annotated[str, typer.Option(help="d3 (trajectory) or dparallel.")]
LoraOpt = Annotated[bool | None, typer.Option(
    "--lora/--full", help="LoRA adapters or full fine-tune (default: the preset's).")]
MergeOpt = Annotated[bool, typer.Option(
    help="LoRA: write merged weights instead of the adapter.")]
ConfigOpt = Annotated[Path | None, typer.Option(
    help="Preset YAML with d3:/dparallel: sections (default: the teacher family's).")]
MasksOpt = Annotated[str | None, typer.Option(help="trajectory or random.")]
NoiseScheduleOpt = Annotated[bool | None, typer.Option(
    "--noise-schedule/--no-noise-schedule",
    help="Mask ratio rising over training (docs/algorithms.md).")]
WindowScheduleOpt = Annotated[str | None, typer.Option(
    help="Window size per epoch, e.g. 16,16,24,24,32,32.")]
ComplementaryOpt = Annotated[bool | None, typer.Option(
    "--complementary/--no-complementary", help="Complementary-mask pass (CE').")]
OnlyCorrectOpt = Annotated[bool | None, typer.Option(
    "--only-correct/--all-answers",
    help="Train on the teacher's correct answers only (default).")]
EntropyWeightOpt = Annotated[float | None, typer.Option(
    min=0.0, help="β of the entropy term.")]
EntropyTemperatureOpt = Annotated[float | None, typer.Option(
    min=0.0, help="τ of softmax(z/τ); above 0.")]
EpochsOpt = Annotated[float | None, typer.Option(min=0.0)]
MaxStepsOpt = Annotated[int | None, typer.Option(
    min=1, help="Stop after N optimizer steps.")]
LearningRateOpt = Annotated[float | None, typer.Option(min=0.0)]
BatchSizeOpt = Annotated[int | None, typer.Option(min=1, help="Per device.")]
SaveStepsOpt = Annotated[int | None, typer.Option(min=1, help="Checkpoint interval.")]
SeedOpt = Annotated[int | None, typer.Option()]
Bf16Opt = Annotated[bool | None, typer.Option(
    "--bf16/--no-bf16", help="bfloat16 autocast over float32 master weights "
                             "(default: on with CUDA).")]
GradientCheckpointingOpt = Annotated[bool, typer.Option(
        help="Recompute each layer in the backward pass: less memory, ~30% more time.")
    ]

TargetsOpt = Annotated[str | None, typer.Option(
    help="Hub id or file of a distillation set: train on its responses, masked in the "
         "order of the trajectory of the same row (default: the trajectories' answers).")]
TargetQuestionFieldOpt = Annotated[str, typer.Option(
    help="--targets question field (under the chat template).")]
TargetResponseFieldOpt = Annotated[str, typer.Option(
    help="--targets response field (EOS appended).")]
TargetIndexFieldOpt = Annotated[str, typer.Option(
    help="--targets field with the trajectory's row index (absent: the row's own index).")]
TargetLengthOpt = Annotated[int | None, typer.Option(
    min=1, help="--targets answer canvas (default: the trajectories').")]


def distill(
    trajectories: TrajectoriesOpt,
    out: OutOpt,
    teacher: TeacherOpt = "",
    recipe: RecipeOpt = "d3",
    lora: LoraOpt = None,
    merge: MergeOpt = False,
    config: ConfigOpt = None,
    masks: MasksOpt = None,
    noise_schedule: NoiseScheduleOpt = None,
    window_schedule: WindowScheduleOpt = None,
    complementary: ComplementaryOpt = None,
    only_correct: OnlyCorrectOpt = None,
    entropy_weight: EntropyWeightOpt = None,
    entropy_temperature: EntropyTemperatureOpt = None,
    epochs: EpochsOpt = None,
    max_steps: MaxStepsOpt = None,
    learning_rate: LearningRateOpt = None,
    batch_size: BatchSizeOpt = None,
    save_steps: SaveStepsOpt = None,
    seed: SeedOpt = None,
    bf16: Bf16Opt = None,
    gradient_checkpointing: GradientCheckpointingOpt = False,
    device: DeviceOpt = "auto",
    targets: TargetsOpt = None,
    target_question_field: TargetQuestionFieldOpt = "question",
    target_response_field: TargetResponseFieldOpt = "llm_response",
    target_index_field: TargetIndexFieldOpt = "sample_idx",
    target_length: TargetLengthOpt = None,
) -> None:
    """Distil the teacher into a student that decodes many tokens per forward; rerun the
    same command to resume from the last checkpoint. Under `accelerate launch` each
    process trains on its own device (see the README for multi-GPU recipes)."""
    train_student(dict(locals()))  # the parameters: nothing else is named yet


def train_student(options: dict) -> None:
    """Prepare the run, train under a progress bar, say where the student went."""
    from ..distill import LOG_FILE, TERMS
    from ..jobs.distill import DistillRequest, prepare_distill

    job, trainer = checked(prepare_distill, DistillRequest(**options))
    if trainer is None:
        console.print(f"the student is already in {job.out}; nothing to do (another --out "
                      "trains a new one)")
        return
    for notice in job.notices:
        warn(notice)
    if getattr(trainer.train_dataset, "unmatched", 0):
        console.print(f"{trainer.train_dataset.unmatched} rows of {options['targets']} left "
                      "out: no trajectory of their row (or only an incorrect one, without "
                      "--all-answers)")
    student = train(trainer, f"distill ({options['recipe']})", None,
                    lambda: job.run(trainer), TERMS)
    out = options["out"]
    if student is None:
        saved = f"saved step {trainer.state.global_step}; " if job.stop.requested else ""
        raise interrupted(f"{saved}rerun the same command to resume from {out}/checkpoints")
    console.print(f"student written to {student}; log in {out}/{LOG_FILE}")
