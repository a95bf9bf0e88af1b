"""`d3 trajectories`: record a teacher's decoding order (training data)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from .shared import DTYPES, check_writable, console, device_option, fail, one_of, progress_bar


def trajectories(
    out: Annotated[Path, typer.Option(help="Folder of parquet shards and a dataset card.")],
    model: Annotated[str, typer.Option(
        help="Teacher: embedded name, local folder or hub id (default: arith-teacher).")] = "",
    task: Annotated[str | None, typer.Option(
        help="Task whose training prompts to use (default arith).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Hub id or local file of prompts instead of a task.")] = None,
    split: Annotated[str, typer.Option(help="--dataset split.")] = "train",
    question_field: Annotated[str, typer.Option(help="--dataset prompt field.")] = "question",
    answer_field: Annotated[str, typer.Option(help="--dataset reference field.")] = "answer",
    num: Annotated[int | None, typer.Option(
        min=1, help="Prompts to roll out (default: 1000 of a task, all of a dataset).")] = None,
    attempts: Annotated[int, typer.Option(
        min=1, help="Tries per prompt at temperatures 0, 0.1, …, until correct.")] = 5,
    keep_incorrect: Annotated[bool, typer.Option(
        "--keep-incorrect/--only-correct",
        help="Keep the last attempt of never-correct prompts (correct = false).")] = True,
    block_size: Annotated[int | None, typer.Option(
        min=1, help="Default: the model's.")] = None,
    gen_length: Annotated[int | None, typer.Option(
        min=1, help="Default: the task's.")] = None,
    method: Annotated[str, typer.Option(
        callback=one_of("vanilla", "threshold", "entropy", "multiblock"),
        help="Decoding that rolls out: vanilla (one token per forward, the teacher's) or "
             "a parallel one (a student's own order, at the model's defaults).")] = "vanilla",
    threshold: Annotated[float | None, typer.Option(
        min=0.0, help="τ or γ of a parallel --method (default: the model's).")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    chunk_size: Annotated[int, typer.Option(
        min=1, help="Prompts per parquet file (the unit of resume and sharding).")] = 256,
    shard: Annotated[str | None, typer.Option(
        help="I/N: this process's share (default: the accelerate rank, else all).")] = None,
    device: Annotated[str, typer.Option(
        help="cpu, cuda, cuda:N or auto.", callback=device_option)] = "auto",
    dtype: Annotated[str, typer.Option(
        callback=one_of(*DTYPES), help="float32, bfloat16, float16 or auto.")] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Record the teacher's one-token-per-forward trajectories (or a model's own parallel
    decoding order with --method); rerun the same command to resume."""
    from accelerate import PartialState

    from ..checkpoints import DEFAULT_TEACHER, ModelLoadError, load_model, pick_device
    from ..tasks import get_task
    from ..tasks.dataset import DatasetTask
    from ..trajectories import (
        TrajectoryRun,
        chunk_path,
        collect,
        load_trajectories,
        parse_shard,
        prepare_folder,
        remove_staging,
        shard_chunks,
        summary,
    )

    check_writable(out, "folder")
    # Under `accelerate launch` (or torchrun) each process takes the chunks of its rank.
    processes = PartialState(cpu=pick_device(device) == "cpu")
    try:
        if task and dataset:
            raise ValueError("give --task or --dataset, not both")
        if dataset:
            chosen = DatasetTask(dataset, split, question_field, answer_field)
        else:
            chosen = get_task(task or "arith")
            if not hasattr(chosen, "train_examples"):
                raise ValueError(f"task {chosen.name!r} has no training prompts here; "
                                 "pass them with --dataset")
        examples = chosen.train_examples(num if num or dataset else 1000)
        index, count = (parse_shard(shard) if shard else
                        (processes.process_index, processes.num_processes))
        loaded = load_model(model or DEFAULT_TEACHER,
                            str(processes.device) if processes.num_processes > 1 else device,
                            dtype)
        run = TrajectoryRun(
            teacher=loaded.name, source=chosen.name, num_prompts=len(examples),
            gen_length=gen_length or chosen.gen_length,
            block_size=block_size or loaded.spec.block_size, attempts=attempts,
            keep_incorrect=keep_incorrect, chunk_size=chunk_size, seed=seed,
            vocab_size=loaded.model.config.vocab_size, mask_token_id=loaded.spec.mask_token_id,
            method=method, decoding=rollout_decoding(loaded, method, threshold))
        if run.gen_length % run.block_size:
            raise ValueError(f"generation length {run.gen_length} is not a multiple of "
                             f"--block-size {run.block_size}")
        prepare_folder(out, run)
    except (ModelLoadError, ValueError) as error:  # TaskDataError, TrajectoryFolderError
        raise fail(str(error)) from None
    chunks = shard_chunks(len(examples), chunk_size, index, count)
    total = sum(end - start for start, end in chunks)
    done = sum(end - start for start, end in chunks if chunk_path(out, (start, end)).exists())
    started, rolled, right, dropped = time.perf_counter(), 0, 0, 0
    try:
        with progress_bar("speed", "accuracy") as bar:
            job = bar.add_task("trajectories", total=total, completed=done, speed="",
                               accuracy="")
            for _, records in collect(loaded, chosen, examples, run, out, chunks, batch_size):
                rolled += len(records)
                right += sum(record["correct"] for record in records)
                dropped += 0 if keep_incorrect else len(records) - sum(
                    record["correct"] for record in records)
                bar.update(job, advance=len(records),
                           speed=f"{rolled / (time.perf_counter() - started):.1f} prompts/s",
                           accuracy=f"acc {100 * right / rolled:.1f}%")
    except KeyboardInterrupt:
        console.print(f"interrupted: finished chunks are in {out}; rerun to resume")
        raise typer.Exit(130) from None
    remove_staging(out)
    numbers = summary(load_trajectories(out, [chunk_path(out, chunk) for chunk in chunks]),
                      loaded.spec.stop_token_ids)
    incorrect = (f"{numbers['incorrect']} incorrect kept" if keep_incorrect
                 else f"{dropped} incorrect dropped this run")
    where = f"{out}" + (f" (shard {index}/{count})" if count > 1 else "")
    console.print(
        f"{where}: {numbers['prompts']} prompts, accuracy {numbers['accuracy']:.1f}% "
        f"({incorrect}), mean forwards {numbers['mean_forwards']:.1f}, "
        f"{numbers['tokens']} answer tokens; rolled out {rolled} prompts in "
        f"{time.perf_counter() - started:.1f}s")


def rollout_decoding(loaded, method: str, threshold: float | None) -> dict:
    """A trajectory run's decoding options beyond its canvas: none for vanilla (one token
    per forward), else the model's own defaults for `method` under `threshold`."""
    from ..decode import method_config, resolve_options

    if method == "vanilla":
        if threshold is not None:
            raise ValueError("--threshold applies to a parallel --method, not vanilla")
        return {}
    given = {} if threshold is None else {"threshold": threshold}
    config = method_config(method, resolve_options(method, loaded.decoding, given))
    return {name: value for name, value in config.items()
            if name not in ("gen_length", "block_size", "temperature")}
