"""One `d3 trajectories` run: the request checked before any work (the prompts' source,
the teacher, the folder's earlier run), then this process's chunks rolled out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from ..checkpoints import DEFAULT_TEACHER, LoadedModel, encode_prompt, load_model, pick_device
from ..decode import method_config, resolve_options
from ..runner import check_positions
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
from .output import check_writable


@dataclass
class TrajectoryRequest:
    """The options of `d3 trajectories` as the CLI fills them; None: the task's or model's own."""

    out: Path
    model: str
    task: str | None
    dataset: str | None
    split: str
    question_field: str
    answer_field: str
    num: int | None
    attempts: int
    keep_incorrect: bool
    block_size: int | None
    gen_length: int | None
    method: str
    threshold: float | None
    batch_size: int
    chunk_size: int
    shard: str | None
    device: str
    dtype: str
    seed: int


@dataclass
class Tally:
    """What this run has rolled out so far."""

    rolled: int = 0
    correct: int = 0
    dropped: int = 0
    started: float = field(default_factory=time.perf_counter)

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def rollout_decoding(loaded: LoadedModel, method: str, threshold: float | None) -> dict:
    """A trajectory run's decoding options beyond its canvas: none for vanilla (one token
    per forward), else the model's own defaults for `method` under `threshold`."""
    if method == "vanilla":
        if threshold is not None:
            raise ValueError("--threshold applies to a parallel --method, not vanilla")
        return {}
    given = {} if threshold is None else {"threshold": threshold}
    config = method_config(method, resolve_options(method, loaded.decoding, given))
    return {name: value for name, value in config.items()
            if name not in ("gen_length", "block_size", "temperature")}


class TrajectoryJob:
    """A checked `d3 trajectories` request: the prompts, the teacher, the run its folder
    records, and this process's chunks (under `accelerate launch` or torchrun, those of its
    rank; with `--shard I/N`, every N-th); `notices` say what differs from the request."""

    def __init__(self, request: TrajectoryRequest) -> None:
        check_writable(request.out, "folder")
        self.request = request
        processes = PartialState(cpu=pick_device(request.device) == "cpu")
        self.source = self.prompt_source()
        self.examples = self.source.train_examples(
            request.num if request.num or request.dataset else 1000)
        self.notices = []  # what the command says before it rolls out
        if len(self.examples) < (request.num or 0):
            self.notices.append(f"--num {request.num}: {self.source.name} has only "
                                f"{len(self.examples)} prompts; rolling out those")
        self.index, self.count = (parse_shard(request.shard) if request.shard else
                                  (processes.process_index, processes.num_processes))
        device = str(processes.device) if processes.num_processes > 1 else request.device
        self.loaded = load_model(request.model or DEFAULT_TEACHER, device, request.dtype)
        self.run = self.run_settings()
        self.chunks = shard_chunks(len(self.examples), request.chunk_size, self.index,
                                   self.count)
        check_positions(self.loaded, (encode_prompt(self.loaded, example.prompt)
                                      for start, end in self.chunks
                                      for example in self.examples[start:end]),
                        self.run.gen_length)
        prepare_folder(request.out, self.run)
        self.total = sum(end - start for start, end in self.chunks)
        self.done = sum(end - start for start, end in self.chunks
                        if chunk_path(request.out, (start, end)).exists())
        self.tally = Tally()

    def prompt_source(self) -> Any:
        """The task or dataset whose training prompts roll out."""
        request = self.request
        if request.task and request.dataset:
            raise ValueError("give --task or --dataset, not both")
        if request.dataset:
            return DatasetTask(request.dataset, request.split, request.question_field,
                               request.answer_field)
        source = get_task(request.task or "arith")
        if not hasattr(source, "train_examples"):
            raise ValueError(f"task {source.name!r} has no training prompts here; "
                             "pass them with --dataset")
        return source

    def run_settings(self) -> TrajectoryRun:
        """What defines the folder (checked against an earlier run's card)."""
        request, loaded = self.request, self.loaded
        run = TrajectoryRun(
            teacher=loaded.name, source=self.source.name, num_prompts=len(self.examples),
            gen_length=request.gen_length or self.source.gen_length,
            block_size=request.block_size or loaded.spec.block_size,
            attempts=request.attempts, keep_incorrect=request.keep_incorrect,
            chunk_size=request.chunk_size, seed=request.seed,
            vocab_size=loaded.model.config.vocab_size, mask_token_id=loaded.spec.mask_token_id,
            method=request.method,
            decoding=rollout_decoding(loaded, request.method, request.threshold))
        if run.gen_length % run.block_size:
            raise ValueError(f"generation length {run.gen_length} is not a multiple of "
                             f"--block-size {run.block_size}")
        return run

    def roll_out(self) -> Iterator[int]:
        """Roll out the chunks not yet in the folder; after each batch, how many prompts it
        held (`tally` counts them)."""
        request, tally = self.request, self.tally
        for _, records in collect(self.loaded, self.source, self.examples, self.run,
                                  request.out, self.chunks, request.batch_size):
            correct = sum(record["correct"] for record in records)
            tally.rolled += len(records)
            tally.correct += correct
            tally.dropped += 0 if request.keep_incorrect else len(records) - correct
            yield len(records)

    def finish(self) -> dict[str, float]:
        """Clear the staging files; the numbers of this process's chunks (`summary`)."""
        out = self.request.out
        remove_staging(out)
        return summary(load_trajectories(out, [chunk_path(out, chunk) for chunk in self.chunks]),
                       self.loaded.spec.stop_token_ids)
