"""`d3 decode`: decode a task's prompts; one JSON line per sample, then a summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .shared import (
    BlockSizeOpt,
    DeviceOpt,
    DtypeOpt,
    GenLengthOpt,
    SeedOpt,
    checked,
    console,
    one_of,
    progress_bar,
)

if TYPE_CHECKING:
    from ..jobs.decode import DecodeJob, MethodRun

ModelOpt = Annotated[str, typer.Option(
    help="Embedded name, local folder or hub id (default: arith-d3, the distilled "
         "student; its generation_config.json sets its decoding defaults).")]
TaskOpt = Annotated[str, typer.Option(
    help="arith, or an lm-eval generate-until task or group (gsm8k_cot_zeroshot, "
         "minerva_math, humaneval, mbpp, ...): its prompts and its scorer.")]
DataFileOpt = Annotated[Path | None, typer.Option(
    help="Local data file for an lm-eval task's test split (default: its hub "
         "dataset).")]
SplitOpt = Annotated[str | None, typer.Option(
    help="arith: test (default; 2,000 prompts) or validation (1,000 others, for "
         "choosing settings).")]
PromptsOpt = Annotated[Path | None, typer.Option(
    help="JSON lines with 'prompt' (and optional 'id', 'answer') instead of the task's "
         "eval prompts; an answer is scored by arith's scorer (other tasks score only "
         "their own documents: give no answers).")]
MethodOpt = Annotated[list[str], typer.Option(
    help="Strategy: vanilla, threshold, entropy, multiblock; repeat to compare on the same "
         "prompts.")]
LimitOpt = Annotated[int | None, typer.Option(
    min=1, help="Decode only the first N prompts.")]
ThresholdOpt = Annotated[float | None, typer.Option(
    min=0.0, help="τ for threshold (default 0.9); γ for entropy and multiblock "
                  "(default 0.5).")]
BlocksOpt = Annotated[int | None, typer.Option(
    min=1, help="multiblock: most blocks decoding at once (default: no limit).")]
BlockAddThresholdOpt = Annotated[float | None, typer.Option(
    min=0.0, max=1.0,
    help="multiblock: open the next block at this progress (default 0.1).")]
DecodedTokenThresholdOpt = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, help="multiblock: fully activate a block at this predecessor "
                           "progress (0.95).")]
EarlyStopOpt = Annotated[bool | None, typer.Option(
    "--early-stop/--no-early-stop", help="multiblock: fill after the first EOS (on).")]
CacheOpt = Annotated[str | None, typer.Option(
    help="threshold: none|prefix|dual; multiblock: none|delayed (default none).")]
CacheDelayOpt = Annotated[int | None, typer.Option(
    min=0, help="multiblock delayed cache: forwards a finished block waits "
                "(default 2).")]
RefreshIntervalOpt = Annotated[int | None, typer.Option(
    min=1, help="multiblock delayed cache: full refresh every N forwards "
                "(default never).")]
StepsOpt = Annotated[int | None, typer.Option(
    min=1, help="vanilla: forwards over the canvas (default: its length).")]
TopPOpt = Annotated[float | None, typer.Option(
    min=0.0, max=1.0, help="vanilla: sample from the top-p nucleus (default 1; Dream "
                           "models 0.9).")]
OneBlockOpt = Annotated[bool | None, typer.Option(
    "--one-block/--block-by-block", help="vanilla: the whole answer as one block "
                                         "(Dream models' default).")]
OneTokenPerForwardOpt = Annotated[bool | None, typer.Option(
    "--one-token-per-forward", help="vanilla: exactly one token per forward on every "
    "family (Dream models otherwise follow Dream's timestep schedule); needs steps = "
    "length.")]
TemperatureOpt = Annotated[float | None, typer.Option(
    min=0.0, help="Sampling temperature (default 0; Dream models' vanilla "
                  "0.1).")]
BatchSizeOpt = Annotated[int, typer.Option(
    min=1, help="Rows decoding at once; a finished row's slot takes the next prompt.")]
SyncEveryOpt = Annotated[int, typer.Option(
    min=1, help="Decoder iterations between host reads (GPU: fewer waits).")]
CompileOpt = Annotated[bool, typer.Option(
    help="torch.compile each decoding iteration whole: forward, scoring and "
         "commits (CUDA graphs on CUDA).")]
ScoreDtypeOpt = Annotated[str, typer.Option(
    callback=one_of("float32", "float64"),
    help="Precision of softmax, entropy and confidence: float32 or float64.")]
OutOpt = Annotated[Path, typer.Option(
    help="Result JSON lines; appended, and a rerun skips ids already there.")]
ConfirmRunUnsafeCodeOpt = Annotated[bool, typer.Option(
    "--confirm-run-unsafe-code", help="Allow a code task (humaneval, mbpp, ...) to run the "
                                      "model's answers with its tests, in d3's sandbox.")]


def decode(
    model: ModelOpt = "",
    task: TaskOpt = "arith",
    data_file: DataFileOpt = None,
    split: SplitOpt = None,
    prompts: PromptsOpt = None,
    method: MethodOpt = ["multiblock"],  # noqa: B006 (typer needs a literal; never mutated)
    limit: LimitOpt = None,
    threshold: ThresholdOpt = None,
    blocks: BlocksOpt = None,
    block_size: BlockSizeOpt = None,
    block_add_threshold: BlockAddThresholdOpt = None,
    decoded_token_threshold: DecodedTokenThresholdOpt = None,
    early_stop: EarlyStopOpt = None,
    cache: CacheOpt = None,
    cache_delay: CacheDelayOpt = None,
    refresh_interval: RefreshIntervalOpt = None,
    steps: StepsOpt = None,
    top_p: TopPOpt = None,
    one_block: OneBlockOpt = None,
    one_token_per_forward: OneTokenPerForwardOpt = None,
    gen_length: GenLengthOpt = None,
    temperature: TemperatureOpt = None,
    batch_size: BatchSizeOpt = 64,
    sync_every: SyncEveryOpt = 1,
    compile: CompileOpt = False,
    score_dtype: ScoreDtypeOpt = "float32",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = Path("results.jsonl"),
    confirm_run_unsafe_code: ConfirmRunUnsafeCodeOpt = False,
) -> None:
    """Decode prompts with one or more strategies; one JSON line per sample, then a summary.

    Under `accelerate launch` or `torchrun` each process decodes every N-th prompt on its
    own device into OUT.rankI-of-N; the main process merges the parts into OUT at the end.
    """
    show_runs(prepared(dict(locals())))  # the parameters: nothing else is named yet


def prepared(options: dict) -> DecodeJob:
    """The decode job of the command's options, or a one-line error."""
    from ..jobs.decode import DecodeJob, DecodeRequest

    return checked(DecodeJob, DecodeRequest(**options))


def show_runs(job: DecodeJob) -> None:
    """Run each method under a progress bar, then print the summary table, where the
    results went, and (under a launcher) the merge."""
    world = f", rank {job.rank} of {job.world}" if job.world > 1 else ""
    source = job.request.prompts or job.task.name  # free-form prompts: the file's
    summary = Table("method", "rows (new)", "accuracy %", "TPF", "forwards", "tokens/s",
                    "seconds", title=f"{job.loaded.name} on {source} "
                                     f"({len(job.examples)} prompts{world}; tokens/s and "
                                     "seconds: new rows)")
    skipped = 0
    with progress_bar("accuracy") as bar:
        for run in job.runs():
            skipped += run.done_before
            summary.add_row(*method_row(job, run, bar))
    Console().print(summary)
    console.print(f"wrote {job.target} on {job.loaded.device}" + (
        f" (skipped {skipped} rows already there)" if skipped else ""))
    merged = job.merge()
    if merged is not None:
        console.print(f"merged {merged} results of {job.world} processes into "
                      f"{job.request.out}")


def method_row(job: DecodeJob, run: MethodRun, bar: Progress) -> tuple[str, ...]:
    """Consume one method's results under its progress bar; its row of the summary."""
    task = bar.add_task(run.name, total=len(job.examples), completed=run.done_before,
                        accuracy="")
    results = []
    for result in run.results:
        results.append(result)
        scored = [r.correct for r in results if r.correct is not None]
        accuracy = f"acc {100 * sum(scored) / len(scored):.1f}%" if scored else ""
        bar.update(task, advance=1, accuracy=accuracy)
    rows = job.rows(run, results)
    return (run.name, f"{len(rows)} ({len(results)})",
            *summary_numbers(rows, results, time.perf_counter() - run.started))


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
