"""`d3 trajectories`: record a teacher's decoding order (training data)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .shared import (
    BlockSizeOpt,
    DeviceOpt,
    DtypeOpt,
    GenLengthOpt,
    SeedOpt,
    checked,
    console,
    fail,
    interrupted,
    one_of,
    progress_bar,
    warn,
)

if TYPE_CHECKING:
    from ..jobs.trajectories import TrajectoryJob

OutOpt = Annotated[Path, typer.Option(help="Folder of parquet shards and a dataset card.")]
ModelOpt = Annotated[str, typer.Option(
    help="Teacher: embedded name, local folder or hub id (default: arith-teacher).")]
TaskOpt = Annotated[str | None, typer.Option(
    help="Task whose training prompts to use (default arith).")]
DatasetOpt = Annotated[str | None, typer.Option(
    help="Hub id or local file of prompts instead of a task.")]
SplitOpt = Annotated[str, typer.Option(help="--dataset split.")]
QuestionFieldOpt = Annotated[str, typer.Option(help="--dataset prompt field.")]
AnswerFieldOpt = Annotated[str, typer.Option(
    help="--dataset reference field: an answer is correct when its final answer (the last "
         "\\boxed{}, else the text after the last ####) matches the reference's.")]
NumOpt = Annotated[int | None, typer.Option(
    min=1, help="Prompts to roll out (default: 1000 of a task, all of a dataset).")]
AttemptsOpt = Annotated[int, typer.Option(
    min=1, help="Tries per prompt at temperatures 0, 0.1, …, until correct.")]
KeepIncorrectOpt = Annotated[bool, typer.Option(
    "--keep-incorrect/--only-correct",
    help="Keep the last attempt of never-correct prompts (correct = false).")]
MethodOpt = Annotated[str, typer.Option(
    callback=one_of("vanilla", "threshold", "entropy", "multiblock"),
    help="Decoding that rolls out: vanilla (one token per forward, the teacher's) or "
         "a parallel one (a student's own order, at the model's defaults).")]
ThresholdOpt = Annotated[float | None, typer.Option(
    min=0.0, help="τ or γ of a parallel --method (default: the model's).")]
BatchSizeOpt = Annotated[int, typer.Option(min=1)]
ChunkSizeOpt = Annotated[int, typer.Option(
    min=1, help="Prompts per parquet file (the unit of resume and sharding).")]
ShardOpt = Annotated[str | None, typer.Option(
    help="I/N: this process's share (default: the accelerate rank, else all).")]
ImportOpt = Annotated[str | None, typer.Option(
    "--import", help="Convert trajectories in the d3LLM reference layout (hub id, or a "
                     "parquet or JSON lines file or folder) instead of rolling out; "
                     "--model names their teacher.")]
OnePerStepOpt = Annotated[bool, typer.Option(
    "--one-per-step/--any-per-step",
    help="--import: refuse a state that decodes other than one token.")]


def trajectories(
    out: OutOpt,
    model: ModelOpt = "",
    task: TaskOpt = None,
    dataset: DatasetOpt = None,
    split: SplitOpt = "train",
    question_field: QuestionFieldOpt = "question",
    answer_field: AnswerFieldOpt = "answer",
    num: NumOpt = None,
    attempts: AttemptsOpt = 5,
    keep_incorrect: KeepIncorrectOpt = True,
    block_size: BlockSizeOpt = None,
    gen_length: GenLengthOpt = None,
    method: MethodOpt = "vanilla",
    threshold: ThresholdOpt = None,
    batch_size: BatchSizeOpt = 64,
    chunk_size: ChunkSizeOpt = 256,
    shard: ShardOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    seed: SeedOpt = 0,
    import_source: ImportOpt = None,
    one_per_step: OnePerStepOpt = True,
) -> None:
    """Record the teacher's one-token-per-forward trajectories (or a model's own parallel
    decoding order with --method), or import published ones with --import; rerun the same
    command to resume."""
    options = dict(locals())  # the parameters: nothing else is named yet
    if options.pop("import_source") is not None or not options.pop("one_per_step"):
        return import_reference(import_source, out, model, task or dataset, split,
                                gen_length, block_size, chunk_size, one_per_step)
    roll_out(options)


def roll_out(options: dict) -> None:
    """Roll the prompts out under a progress bar, then print the folder's summary."""
    from ..jobs.trajectories import TrajectoryJob, TrajectoryRequest

    job = checked(TrajectoryJob, TrajectoryRequest(**options))
    for notice in job.notices:
        warn(notice)
    try:
        with progress_bar("speed", "accuracy") as bar:
            row = bar.add_task("trajectories", total=job.total, completed=job.done, speed="",
                               accuracy="")
            for count in job.roll_out():
                tally = job.tally
                bar.update(row, advance=count,
                           speed=f"{tally.rolled / tally.seconds():.1f} prompts/s",
                           accuracy=f"acc {100 * tally.correct / tally.rolled:.1f}%")
    except KeyboardInterrupt:
        raise interrupted(f"finished chunks are in {job.request.out}; rerun to resume") from None
    console.print(summary_line(job, job.finish()))


def summary_line(job: TrajectoryJob, numbers: dict[str, float]) -> str:
    """The folder's prompts, accuracy and answer lengths, and what this run rolled out."""
    request, tally = job.request, job.tally
    incorrect = (f"{numbers['incorrect']} incorrect kept" if request.keep_incorrect
                 else f"{tally.dropped} incorrect dropped this run")
    where = f"{request.out}" + (f" (shard {job.index}/{job.count})" if job.count > 1 else "")
    return (f"{where}: {numbers['prompts']} prompts, accuracy {numbers['accuracy']:.1f}% "
            f"({incorrect}), mean forwards {numbers['mean_forwards']:.1f}, "
            f"{numbers['tokens']} answer tokens; rolled out {tally.rolled} prompts in "
            f"{tally.seconds():.1f}s")


def import_reference(source: str | None, out: Path, model: str, prompts: str | None,
                     split: str, gen_length: int | None, block_size: int | None,
                     chunk_size: int, one_per_step: bool) -> None:
    """`d3 trajectories --import`: convert `source` chunk by chunk, with a progress bar."""
    import time

    from ..checkpoints import DEFAULT_TEACHER
    from ..jobs.output import check_writable
    from ..trajectory_import import import_trajectories, load_teacher

    if source is None or prompts:
        raise fail("--any-per-step needs --import" if source is None else
                   "give --import or --task/--dataset, not both")
    checked(check_writable, out, "folder")
    started, converted, kept = time.perf_counter(), 0, 0
    teacher = checked(load_teacher, model or DEFAULT_TEACHER)
    chunks = checked(import_trajectories, source, out, teacher,
                     block_size or teacher.spec.block_size, chunk_size, one_per_step, split,
                     gen_length or 256)
    try:
        with progress_bar("speed") as bar:
            job = bar.add_task("import", total=None, speed="")
            for (start, end), new in chunks:
                converted += (end - start) if new else 0
                kept += 0 if new else end - start
                speed = converted / (time.perf_counter() - started)
                bar.update(job, advance=end - start, speed=f"{speed:.0f} records/s")
    except ValueError as error:  # TrajectoryImportError, TrajectoryFolderError
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        raise interrupted(f"finished chunks are in {out}; rerun to resume") from None
    seconds = time.perf_counter() - started
    console.print(f"{out}: imported {converted} records in {seconds:.1f}s "
                  f"({converted / seconds:.0f} records/s); {kept} were already there")
