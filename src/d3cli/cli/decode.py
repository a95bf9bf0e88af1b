"""`d3 decode`: decode a task's prompts; one JSON line per sample, then a summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .shared import DTYPES, check_writable, console, device_option, fail, one_of, progress_bar


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

    from ..checkpoints import DEFAULT_MODEL, ModelLoadError, load_model, pick_device
    from ..data_parallel import merge_parts, part_path, share
    from ..decode import METHOD_OPTIONS, resolve_options
    from ..runner import (
        PromptsFileError,
        decode_examples,
        load_prompts,
        records_of_run,
        run_record,
        write_results,
    )
    from ..tasks import EMBEDDED, get_task

    given = {"threshold": threshold, "blocks": blocks,
             "block_add_threshold": block_add_threshold,
             "decoded_token_threshold": decoded_token_threshold, "early_stop": early_stop,
             "cache": cache, "cache_delay": cache_delay, "refresh_interval": refresh_interval,
             "steps": steps, "top_p": top_p, "one_block": one_block}
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
