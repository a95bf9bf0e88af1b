"""The `d3` command line: parses options, calls one module function per command, renders.
Usage errors and the commands' own errors are one line (`error: ...`, exit 2)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperGroup

console = Console(stderr=True)


class OneLineErrors(TyperGroup):
    """Every usage error (a bad option value, an unknown option) as one line on stderr,
    `error: ...`, exit 2, like the commands' own errors."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except (typer.Abort, click.exceptions.Abort):
            if not standalone_mode:
                raise
            sys.exit(130)
        except (typer.TyperException, click.ClickException) as error:  # typer vendors click
            if not standalone_mode:
                raise
            message = getattr(error, "format_message", error.__str__)()
            typer.echo(f"error: {' '.join(message.split())}", err=True)
            sys.exit(getattr(error, "exit_code", 2))
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


HELP = """Make diffusion language models (LLaDA, Dream and d3's embedded models) decode
many tokens per forward without losing accuracy.

\b
  d3 decode        decode a task's prompts; one JSON line per sample
  d3 aup           Accuracy Under Parallelism of decode results
  d3 trajectories  record a teacher's decoding order (training data)
  d3 distill       train a student that decodes in parallel
  d3 pretrain      train a small dLLM from scratch
  d3 models, d3 tasks   what is built in

Every command defaults to the embedded models; `d3 COMMAND --help` has the details."""

app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None, help=HELP)


def show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"d3 {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads for torch (default: torch's; under a launcher, the cores "
                    "shared among the node's processes).")] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=show_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    import os
    import signal

    import torch
    from transformers.utils import logging as transformers_logging

    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads is None and local_processes > 1:
        threads = max(1, (os.cpu_count() or 1) // local_processes)
    if threads is not None:
        torch.set_num_threads(threads)

    transformers_logging.disable_progress_bar()  # d3 draws its own progress
    # `kill` (SIGTERM) stops a command as Ctrl-C does, so long runs save what they have
    # (a background job ignores SIGINT, which leaves SIGTERM as the way to stop it).
    signal.signal(signal.SIGTERM, signal.default_int_handler)


DTYPES = ("float32", "bfloat16", "float16", "auto")


def one_of(*values: str):
    """An option callback that accepts only `values` (a one-line error otherwise)."""
    def check(value: str) -> str:
        if value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}")
        return value
    return check


def device_option(device: str) -> str:
    """--device, checked against what this machine has (a one-line error otherwise)."""
    from .checkpoints import ModelLoadError, pick_device

    try:
        pick_device(device)
    except ModelLoadError as error:
        raise typer.BadParameter(str(error)) from None
    return device


def check_writable(path: Path, kind: str) -> None:
    """Stop now, with one line and nothing created, if `path` (a "file" or a "folder")
    cannot be written."""
    import os

    if path.exists():
        if path.is_dir() != (kind == "folder"):
            raise fail(f"{path} is a {'folder' if path.is_dir() else 'file'}; --out must be "
                       f"a {kind}")
        if not os.access(path, os.W_OK):
            raise fail(f"{path} is not writable")
        return
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise fail(f"cannot create {path}: {ancestor} is not a writable folder")


def fail(message: str) -> typer.Exit:
    """Print a one-line error (never wrapped) and return the exit to raise (status 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def progress_bar(*fields: str) -> Progress:
    """A rich progress bar with extra text columns read from the task's fields."""
    columns = [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)


@app.command()
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
    from .checkpoints import pick_device
    from .pretrain import PretrainConfig, Pretrainer, RunSchedule
    from .training import RichProgress

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


@app.command()
def decode(
    model: Annotated[str, typer.Option(
        help="Embedded name, local folder or hub id (default: arith-d3, the distilled "
             "student; its generation_config.json sets its decoding defaults).")] = "",
    task: Annotated[str, typer.Option(
        help="arith, or an lm-eval generate-until task or group (gsm8k_cot_zeroshot, "
             "minerva_math, humaneval, mbpp, ...): its prompts and its scorer.")] = "arith",
    data_file: Annotated[Path | None, typer.Option(
        help="Local data file for an lm-eval task's test split (default: its hub "
             "dataset).")] = None,
    split: Annotated[str | None, typer.Option(
        help="arith: test (default; 2,000 prompts) or validation (1,000 others, for "
             "choosing settings).")] = None,
    prompts: Annotated[Path | None, typer.Option(
        help="JSON lines with 'prompt' (and optional 'id', 'answer') instead of the task's "
             "eval prompts; scored with the task's scorer where an answer is given.")] = None,
    method: Annotated[
        list[str], typer.Option(help="Strategy: vanilla, threshold, entropy, multiblock; "
                                     "repeat to compare on the same prompts.")
    ] = ["multiblock"],  # noqa: B006 (typer needs a literal default; never mutated)
    limit: Annotated[int | None, typer.Option(
        min=1, help="Decode only the first N prompts.")] = None,
    threshold: Annotated[float | None, typer.Option(
        min=0.0, help="τ for threshold (default 0.9); γ for entropy and multiblock "
                      "(default 0.5).")] = None,
    blocks: Annotated[int | None, typer.Option(
        min=1, help="multiblock: most blocks decoding at once (default: no limit).")] = None,
    block_size: Annotated[int | None, typer.Option(
        min=1, help="Default: the model's.")] = None,
    block_add_threshold: Annotated[float | None, typer.Option(
        min=0.0, max=1.0,
        help="multiblock: open the next block at this progress (default 0.1).")] = None,
    decoded_token_threshold: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="multiblock: fully activate a block at this predecessor "
                               "progress (0.95).")] = None,
    early_stop: Annotated[bool | None, typer.Option(
        "--early-stop/--no-early-stop", help="multiblock: fill after the first EOS (on).")] = None,
    cache: Annotated[str | None, typer.Option(
        help="threshold: none|prefix|dual; multiblock: none|delayed (default none).")] = None,
    cache_delay: Annotated[int | None, typer.Option(
        min=0, help="multiblock delayed cache: forwards a finished block waits "
                    "(default 2).")] = None,
    refresh_interval: Annotated[int | None, typer.Option(
        min=1, help="multiblock delayed cache: full refresh every N forwards "
                    "(default never).")] = None,
    steps: Annotated[int | None, typer.Option(
        min=1, help="vanilla: forwards over the canvas (default: its length).")] = None,
    top_p: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="vanilla: sample from the top-p nucleus (default 1; Dream "
                               "models 0.9).")] = None,
    one_block: Annotated[bool | None, typer.Option(
        "--one-block/--block-by-block", help="vanilla: the whole answer as one block "
                                             "(Dream models' default).")] = None,
    one_token_per_forward: Annotated[bool | None, typer.Option(
        "--one-token-per-forward", help="vanilla: exactly one token per forward on every "
        "family (Dream models otherwise follow Dream's timestep schedule); needs steps = "
        "length.")] = None,
    gen_length: Annotated[int | None, typer.Option(
        min=1, help="Default: the task's.")] = None,
    temperature: Annotated[float | None, typer.Option(
        min=0.0, help="Sampling temperature (default 0; Dream models' vanilla "
                      "0.1).")] = None,
    batch_size: Annotated[int, typer.Option(
        min=1, help="Rows decoding at once; a finished row's slot takes the next prompt.")] = 64,
    sync_every: Annotated[int, typer.Option(
        min=1, help="Decoder iterations between host reads (GPU: fewer waits).")] = 1,
    compile: Annotated[bool, typer.Option(
        help="torch.compile the model forward (CUDA graphs on CUDA).")] = False,
    score_dtype: Annotated[str, typer.Option(
        callback=one_of("float32", "float64"),
        help="Precision of softmax, entropy and confidence: float32 or float64.")] = "float32",
    device: Annotated[str, typer.Option(
        help="cpu, cuda, cuda:N or auto.", callback=device_option)] = "auto",
    dtype: Annotated[str, typer.Option(
        callback=one_of(*DTYPES), help="float32, bfloat16, float16 or auto.")] = "auto",
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(
        help="Result JSON lines; appended, and a rerun skips ids already there.")] = Path(
        "results.jsonl"),
) -> None:
    """Decode prompts with one or more strategies; one JSON line per sample, then a summary.

    Under `accelerate launch` or `torchrun` each process decodes every N-th prompt on its
    own device into OUT.rankI-of-N; the main process merges the parts into OUT at the end.
    """
    from dataclasses import asdict

    from accelerate import PartialState

    from .checkpoints import DEFAULT_MODEL, ModelLoadError, load_model, pick_device
    from .data_parallel import merge_parts, part_path, share
    from .decode import METHOD_OPTIONS, resolve_options
    from .runner import (
        PromptsFileError,
        decode_examples,
        load_prompts,
        records_of_run,
        run_record,
        write_results,
    )
    from .tasks import EMBEDDED, get_task

    given = {"threshold": threshold, "blocks": blocks,
             "block_add_threshold": block_add_threshold,
             "decoded_token_threshold": decoded_token_threshold, "early_stop": early_stop,
             "cache": cache, "cache_delay": cache_delay, "refresh_interval": refresh_interval,
             "steps": steps, "top_p": top_p, "one_block": one_block,
             "one_token_per_forward": one_token_per_forward}
    given = {name: value for name, value in given.items() if value is not None}
    check_writable(out, "file")
    processes = PartialState(cpu=pick_device(device) == "cpu")
    try:
        unknown = [name for name in method if name not in METHOD_OPTIONS]
        if unknown:
            raise ValueError(f"unknown method {unknown[0]!r}; known: {', '.join(METHOD_OPTIONS)}")
        for name in given:
            if not any(name in METHOD_OPTIONS[m] for m in method):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} is not an option of {', '.join(method)}")
        chosen_task = get_task(task, data_file=data_file, split=split)
        examples = load_prompts(prompts) if prompts else chosen_task.eval_examples()
        if prompts and task not in EMBEDDED and any(e.answer is not None for e in examples):
            raise ValueError(f"{prompts}: answers in a prompts file are scored by arith only; "
                             f"{task} scores its own documents (drop the answers)")
        loaded = load_model(model or DEFAULT_MODEL, device, dtype)
        shared = {"gen_length": chosen_task.gen_length if gen_length is None else gen_length,
                  "block_size": block_size or loaded.spec.block_size,
                  "temperature": temperature, "seed": seed, "score_dtype": score_dtype}
        options = {name: resolve_options(name, loaded.decoding, {
            option: value for option, value in given.items()
            if option in METHOD_OPTIONS[name]}, **shared) for name in method}
    except (ModelLoadError, PromptsFileError, ValueError) as error:
        raise fail(str(error)) from None
    rank, world = processes.process_index, processes.num_processes
    examples = share(examples[:limit], rank, world)
    target = part_path(out, rank, world) if world > 1 else out
    share_name = f", rank {rank} of {world}" if world > 1 else ""
    summary = Table("method", "rows (new)", "accuracy %", "TPF", "forwards", "tokens/s",
                    "seconds", title=f"{loaded.name} on {chosen_task.name} ({len(examples)} "
                                     f"prompts{share_name}; tokens/s and seconds: new rows)")
    ids, skipped = {example.id for example in examples}, 0
    with progress_bar("accuracy") as bar:
        for name in method:
            method_options = options[name]
            run = run_record(loaded, chosen_task.name, name, method_options, batch_size,
                             compile)
            earlier = records_of_run({out, target}, run)
            todo = [example for example in examples if example.id not in earlier]
            skipped += len(examples) - len(todo)
            job = bar.add_task(name, total=len(examples), completed=len(examples) - len(todo),
                               accuracy="")
            results, started = [], time.perf_counter()
            stream = decode_examples(loaded, chosen_task, todo, name, method_options, batch_size,
                                     sync_every, compile)
            for result in write_results(stream, target):
                results.append(result)
                scored = [r.correct for r in results if r.correct is not None]
                accuracy = f"acc {100 * sum(scored) / len(scored):.1f}%" if scored else ""
                bar.update(job, advance=1, accuracy=accuracy)
            done = {**earlier, **{result.id: asdict(result) for result in results}}
            rows = [record for key, record in done.items() if key in ids]
            summary.add_row(name, f"{len(rows)} ({len(results)})", *summary_numbers(
                rows, results, time.perf_counter() - started))
    Console().print(summary)
    console.print(f"wrote {target} on {loaded.device}" + (
        f" (skipped {skipped} rows already there)" if skipped else ""))
    if world > 1:
        processes.wait_for_everyone()
        if processes.is_main_process:
            added = merge_parts(out, [part_path(out, index, world) for index in range(world)])
            console.print(f"merged {added} results of {world} processes into {out}")


def summary_numbers(rows: list[dict], new: list, seconds: float) -> tuple[str, ...]:
    """Accuracy, TPF and forwards per sample over every row of the run (`rows`, records),
    then tokens/s and wall seconds of this run's `new` results."""
    scored = [row["correct"] for row in rows if row["correct"] is not None]
    tokens = sum(row["gen_tokens"] for row in rows)
    forwards = sum(row["forwards"] for row in rows)
    accuracy = f"{100 * sum(scored) / len(scored):.1f}" if scored else "-"
    speed = f"{sum(r.gen_tokens for r in new) / seconds:.0f}" if new else "-"
    return (accuracy, f"{tokens / forwards:.2f}" if forwards else "-",
            f"{forwards / len(rows):.1f}" if rows else "-", speed,
            f"{seconds:.1f}" if new else "-")


@app.command()
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
        min=1, help="Default: the task's (--import: 256).")] = None,
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
    import_source: Annotated[str | None, typer.Option(
        "--import", help="Convert trajectories in the d3LLM reference layout (hub id, or a "
                         "parquet or JSON lines file or folder) instead of rolling out; "
                         "--model names their teacher.")] = None,
    one_per_step: Annotated[bool, typer.Option(
        "--one-per-step/--any-per-step",
        help="--import: refuse a state that decodes other than one token.")] = True,
) -> None:
    """Record the teacher's one-token-per-forward trajectories (or a model's own parallel
    decoding order with --method), or import published ones with --import; rerun the same
    command to resume."""
    if import_source:
        if task or dataset:
            raise fail("give --import or --task/--dataset, not both")
        check_writable(out, "folder")
        import_reference(import_source, out, model, split, gen_length or 256, block_size,
                         chunk_size, one_per_step)
        return
    from accelerate import PartialState

    from .checkpoints import DEFAULT_TEACHER, ModelLoadError, load_model, pick_device
    from .tasks import get_task
    from .tasks.dataset import DatasetTask
    from .trajectories import (
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


def import_reference(source: str, out: Path, model: str, split: str, gen_length: int,
                     block_size: int | None, chunk_size: int, one_per_step: bool) -> None:
    """`d3 trajectories --import`: convert `source` chunk by chunk, with a progress bar."""
    from .checkpoints import DEFAULT_TEACHER, ModelLoadError
    from .trajectory_import import import_trajectories, load_teacher

    started, converted, kept = time.perf_counter(), 0, 0
    try:
        teacher = load_teacher(model or DEFAULT_TEACHER)
        chunks = import_trajectories(source, out, teacher, block_size or teacher.spec.block_size,
                                     chunk_size, one_per_step, split, gen_length)
        with progress_bar("speed") as bar:
            job = bar.add_task("import", total=None, speed="")
            for (start, end), new in chunks:
                converted += (end - start) if new else 0
                kept += 0 if new else end - start
                speed = converted / (time.perf_counter() - started)
                bar.update(job, advance=end - start, speed=f"{speed:.0f} records/s")
    except (ModelLoadError, ValueError) as error:  # TrajectoryImportError, TrajectoryFolderError
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        console.print(f"interrupted: finished chunks are in {out}; rerun to resume")
        raise typer.Exit(130) from None
    seconds = time.perf_counter() - started
    console.print(f"{out}: imported {converted} records in {seconds:.1f}s "
                  f"({converted / seconds:.0f} records/s); {kept} were already there")


def rollout_decoding(loaded, method: str, threshold: float | None) -> dict:
    """A trajectory run's decoding options beyond its canvas: none for vanilla (one token
    per forward), else the model's own defaults for `method` under `threshold`."""
    from .decode import method_config, resolve_options

    if method == "vanilla":
        if threshold is not None:
            raise ValueError("--threshold applies to a parallel --method, not vanilla")
        return {}
    given = {} if threshold is None else {"threshold": threshold}
    config = method_config(method, resolve_options(method, loaded.decoding, given))
    return {name: value for name, value in config.items()
            if name not in ("gen_length", "block_size", "temperature")}


@app.command()
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
    targets: Annotated[str | None, typer.Option(
        help="Hub id or file of a distillation set: train on its responses, masked in the "
             "order of the trajectory of the same row (default: the trajectories' answers).")
    ] = None,
    target_question_field: Annotated[str, typer.Option(
        help="--targets question field (under the chat template).")] = "question",
    target_response_field: Annotated[str, typer.Option(
        help="--targets response field (EOS appended).")] = "llm_response",
    target_index_field: Annotated[str, typer.Option(
        help="--targets field with the trajectory's row index (absent: the row's own "
             "index).")] = "sample_idx",
    target_length: Annotated[int | None, typer.Option(
        min=1, help="--targets answer canvas (default: the trajectories').")] = None,
) -> None:
    """Distil the teacher into a student that decodes many tokens per forward; rerun the
    same command to resume from the last checkpoint. Under `accelerate launch` each
    process trains on its own device (see the README for multi-GPU recipes)."""
    import torch

    from .checkpoints import DEFAULT_TEACHER, ModelLoadError, load_model, pick_device
    from .distill import TERMS, DistillJob, load_config, preset_path
    from .targets import Targets
    from .training import RichProgress
    from .trajectories import TrajectoryFolderError

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
        chosen = targets and Targets(targets, target_question_field, target_response_field,
                                     target_index_field, length=target_length)
        job = DistillJob(loaded, trajectories, settings, out, merge, device, bf16,
                         gradient_checkpointing, targets=chosen)
        trainer = job.prepare()
    except (ModelLoadError, TrajectoryFolderError, ValueError) as error:
        raise fail(str(error)) from None
    unmatched = getattr(trainer.train_dataset, "unmatched", 0)
    if unmatched:
        console.print(f"{unmatched} rows of {targets} left out: no trajectory of their row "
                      "(or only an incorrect one, without --all-answers)")
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


@app.command()
def aup(
    files: Annotated[
        list[Path],
        typer.Argument(help="d3 decode results (.jsonl) and/or summary tables (.yaml/.yml/.csv)."),
    ],
    alpha: Annotated[float, typer.Option(min=0.0, help="Penalty α of W(y).")] = 3.0,
    y_max: Annotated[
        list[str],
        typer.Option("--y-max", metavar="TASK=VALUE", help="Override a task's y_max (repeatable)."),
    ] = [],  # noqa: B006 (typer needs a literal default; never mutated)
    floor: Annotated[
        list[str],
        typer.Option("--floor", metavar="TASK=VALUE",
                     help="Score only the points at or above this accuracy (%) on TASK, "
                          "e.g. arith=92.2: at most 2 points below a 94.2 % baseline "
                          "(repeatable; not in the paper's metric)."),
    ] = [],  # noqa: B006
    skip_first: Annotated[
        int, typer.Option(min=0, help="Warm-up samples skipped per result group (.jsonl only).")
    ] = 10,
    scale: Annotated[
        str,
        typer.Option(metavar="percent|fraction", callback=one_of("percent", "fraction"),
                     help="Accuracy scale of summary tables."),
    ] = "percent",
    output_format: Annotated[
        str,
        typer.Option("--format", metavar="table|markdown|json|csv",
                     callback=one_of("table", "markdown", "json", "csv"),
                     help="json and csv carry every number; markdown prints the tables as "
                          "Markdown."),
    ] = "table",
    bootstrap: Annotated[int | None, typer.Option(
        min=1, metavar="N",
        help="Per run (a curve in every file of one folder, one file per training seed): "
             "median AUP over seeds with a 95 % interval from N resamples of seeds and "
             "prompts, and ratios to the one-token curve.")] = None,
    bootstrap_seed: Annotated[int, typer.Option(
        help="Seed of the --bootstrap resampling.")] = 0,
    plot: Annotated[Path | None, typer.Option(help="Write accuracy-vs-TPF panels (PNG).")] = None,
    lm_eval_samples: Annotated[list[Path], typer.Option(
        help="lm-eval --log_samples output (files or folders): FILES are then the records "
             "of `--model d3` (records=...), scored by these samples.")] = [],  # noqa: B006
    lm_eval_metric: Annotated[str, typer.Option(
        help="The samples' per-sample metric (0 or 1).")] = "exact_match",
    lm_eval_filter: Annotated[str | None, typer.Option(
        help="The samples' filter (default: each file's first).")] = None,
    one_token_tpf: Annotated[str, typer.Option(
        metavar="measured|nominal", callback=one_of("measured", "nominal"),
        help="TPF of one-token-per-forward runs (vanilla, steps = length): measured "
             "(EOS padding costs forwards, so below 1) or nominal (1, the paper's "
             "leaderboards).")] = "measured",
) -> None:
    """Accuracy Under Parallelism per task and method, with a per-file average (the
    metric: docs/algorithms.md)."""
    import json

    from rich.markup import escape

    from . import aup as metric
    from .harness_results import HarnessResultsError, joined_records

    try:
        overrides = metric.parse_task_values(y_max, "--y-max")
        floors = metric.parse_task_values(floor, "--floor")
        if lm_eval_samples:
            curves = [curve for path in files for curve in metric.result_curves(
                path, joined_records(path, lm_eval_samples, lm_eval_metric, lm_eval_filter),
                skip_first, one_token_tpf)]
        else:
            curves = metric.load(files, skip_first=skip_first, scale=scale,
                                 one_token_tpf=one_token_tpf)
        report = metric.build_report(curves, alpha=alpha, y_max=overrides, floor=floors)
    except (metric.AupInputError, HarnessResultsError, OSError) as error:
        raise fail(str(error)) from None
    if plot is not None:
        try:
            metric.plot(report, plot)
        except OSError as error:
            raise fail(f"cannot write plot {plot}: {error.strerror or error}") from None
    for source in dict.fromkeys(curve.source for curve in curves):
        unscored = sum(curve.unscored for curve in curves if curve.source == source)
        if unscored:
            typer.echo(f"note: {source}: left out {unscored} rows without a score "
                       "('correct': null)", err=True)
    tables, numbers = metric.text_tables(report), report.to_json()
    if bootstrap:
        if output_format == "csv":
            raise fail("--bootstrap prints a table, markdown or json, not csv")
        try:
            runs = metric.bootstrap(curves, report.y_max, floors, bootstrap, bootstrap_seed)
        except metric.AupInputError as error:
            raise fail(str(error)) from None
        tables, numbers = [metric.interval_table(runs, bootstrap)], metric.intervals_json(
            runs, bootstrap)
    if output_format == "json":
        typer.echo(json.dumps(numbers, indent=2))
    elif output_format == "csv":
        typer.echo(report.to_csv(), nl=False)
    elif output_format == "markdown":
        typer.echo("\n\n".join(metric.markdown(text_table) for text_table in tables))
    else:
        out = Console()
        if not out.is_terminal:
            out = Console(width=80)  # piped: cells wrap to 80 columns
        for text_table in tables:
            table = Table(title=text_table.title)
            for index, name in enumerate(text_table.columns):
                right = index >= text_table.first_number_column
                table.add_column(name, justify="right" if right else "left")
            for row, end in zip(text_table.rows, text_table.section_ends, strict=True):
                table.add_row(*map(escape, row), end_section=end)  # "[cache=…]" is no markup
            out.print(table)
    errors = [] if bootstrap else report.errors  # --bootstrap scores a curve's kept points
    for message in errors:
        typer.echo(f"error: {message}", err=True)
    if errors:
        raise typer.Exit(1)


@app.command()
def models() -> None:
    """List the embedded models (any local folder or hub id also works as --model)."""
    from .checkpoints import ASSETS, DEFAULT_MODEL, DEFAULT_TEACHER

    roles = {DEFAULT_MODEL: "default of decode", DEFAULT_TEACHER: "default teacher"}
    for folder in sorted(path for path in ASSETS.iterdir() if (path / "config.json").is_file()):
        card = folder / "README.md"
        lines = card.read_text(encoding="utf-8").split("\n\n") if card.is_file() else [""]
        summary = " ".join(lines[1].split()) if len(lines) > 1 else ""
        role = f" ({roles[folder.name]})" if folder.name in roles else ""
        typer.echo(f"{folder.name}{role}: {summary}")


@app.command()
def tasks() -> None:
    """List the tasks of --task: the embedded one, and the lm-eval tasks of the d3LLM
    paper (any lm-eval generate-until task or group works; `lm_eval ls tasks` lists
    them)."""
    from .tasks import EMBEDDED, REFERENCE_TASKS

    for name, task in EMBEDDED.items():
        typer.echo(f"{name}: {(task.__doc__ or '').strip().splitlines()[0]}")
    for name in REFERENCE_TASKS:
        typer.echo(f"{name}: lm-eval's task (hub data, or a local --data-file)")
