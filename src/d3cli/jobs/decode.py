"""One `d3 decode` run: the request checked and resolved before any work (a bad option,
prompts file, task or model is one `ValueError`), then each method decoded over this
process's share of the prompts into the results file, resuming from what it holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from ..checkpoints import DEFAULT_MODEL, load_model, pick_device
from ..data_parallel import merge_parts, part_path, share
from ..decode import METHOD_OPTIONS, resolve_options
from ..runner import (
    SampleResult,
    check_positions,
    decode_examples,
    load_prompts,
    prompt_ids,
    records_of_run,
    run_record,
    write_results,
)
from ..tasks import EMBEDDED, Example, get_task, runs_generated_code
from .output import check_writable

# The options that belong to some methods only, in the order their errors are reported.
METHOD_ONLY = ("threshold", "blocks", "block_add_threshold", "decoded_token_threshold",
               "early_stop", "cache", "cache_delay", "refresh_interval", "steps", "top_p",
               "one_block", "one_token_per_forward")


@dataclass
class DecodeRequest:
    """The options of `d3 decode` as the CLI fills them; None: the model's, the task's or
    the method's own."""

    model: str
    task: str
    data_file: Path | None
    split: str | None
    prompts: Path | None
    method: list[str]
    limit: int | None
    threshold: float | None
    blocks: int | None
    block_size: int | None
    block_add_threshold: float | None
    decoded_token_threshold: float | None
    early_stop: bool | None
    cache: str | None
    cache_delay: int | None
    refresh_interval: int | None
    steps: int | None
    top_p: float | None
    one_block: bool | None
    one_token_per_forward: bool | None
    gen_length: int | None
    temperature: float | None
    batch_size: int
    sync_every: int
    compile: bool
    score_dtype: str
    device: str
    dtype: str
    seed: int
    out: Path
    confirm_run_unsafe_code: bool = False  # a code task's scorer runs the model's answers

    def given(self) -> dict[str, Any]:
        """The method-specific options that were set."""
        return {name: getattr(self, name) for name in METHOD_ONLY
                if getattr(self, name) is not None}


@dataclass
class MethodRun:
    """One method over the job's prompts: how many the results already held, those records
    by id, and the new results, each appended to the results file as it is consumed."""

    name: str
    done_before: int
    earlier: dict[str, dict[str, Any]]
    results: Iterator[SampleResult]
    started: float = field(default_factory=time.perf_counter)


def check_methods(methods: list[str], given: dict[str, Any]) -> None:
    """Every method known, and every method-specific option an option of one of them."""
    unknown = [name for name in methods if name not in METHOD_OPTIONS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; known: {', '.join(METHOD_OPTIONS)}")
    for name in given:
        if not any(name in METHOD_OPTIONS[method] for method in methods):
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} is not an option of {', '.join(methods)}")


class DecodeJob:
    """A checked `d3 decode` request: the model, the task, this process's prompts and each
    method's resolved options (`resolve_options`), ready to run."""

    def __init__(self, request: DecodeRequest) -> None:
        check_writable(request.out, "file")
        self.request = request
        self.processes = PartialState(cpu=pick_device(request.device) == "cpu")
        given = request.given()
        check_methods(request.method, given)
        if (not request.prompts and not request.confirm_run_unsafe_code
                and runs_generated_code(request.task)):
            raise ValueError(f"--task {request.task} scores answers by running the model's "
                             "code (in d3's sandbox); pass --confirm-run-unsafe-code to allow it")
        self.task = get_task(request.task, data_file=request.data_file, split=request.split)
        examples = self.prompts()
        self.loaded = load_model(request.model or DEFAULT_MODEL, request.device, request.dtype)
        gen_length = self.task.gen_length if request.gen_length is None else request.gen_length
        shared = {"gen_length": gen_length,
                  "block_size": request.block_size or self.loaded.spec.block_size,
                  "temperature": request.temperature, "seed": request.seed,
                  "score_dtype": request.score_dtype}
        self.options = {name: resolve_options(name, self.loaded.decoding, {
            option: value for option, value in given.items()
            if option in METHOD_OPTIONS[name]}, **shared) for name in request.method}
        self.rank, self.world = self.processes.process_index, self.processes.num_processes
        self.examples = share(examples[:request.limit], self.rank, self.world)
        check_positions(self.loaded, (prompt_ids(self.loaded, example, self.task.name)
                                      for example in self.examples), gen_length)
        out = request.out
        self.target = part_path(out, self.rank, self.world) if self.world > 1 else out

    def prompts(self) -> list[Example]:
        """The prompts file's examples, or the task's eval prompts."""
        request = self.request
        if not request.prompts:
            return self.task.eval_examples()
        examples = load_prompts(request.prompts)
        if request.task not in EMBEDDED and any(e.answer is not None for e in examples):
            raise ValueError(f"{request.prompts}: answers in a prompts file are scored by "
                             f"arith only; {request.task} scores its own documents (drop the "
                             "answers)")
        return examples

    def runs(self) -> Iterator[MethodRun]:
        """Each method in turn; a method's prompts already in the results are skipped."""
        request = self.request
        for name, options in self.options.items():
            run = run_record(self.loaded, self.task.name, name, options, request.batch_size,
                             request.compile)
            earlier = records_of_run({request.out, self.target}, run)
            todo = [example for example in self.examples if example.id not in earlier]
            stream = decode_examples(self.loaded, self.task, todo, name, options,
                                     request.batch_size, request.sync_every, request.compile)
            yield MethodRun(name, len(self.examples) - len(todo), earlier,
                            write_results(stream, self.target))

    def rows(self, run: MethodRun, new: list[SampleResult]) -> list[dict[str, Any]]:
        """Every record of `run` over this process's prompts: the earlier ones and `new`."""
        ids = {example.id for example in self.examples}
        done = {**run.earlier, **{result.id: asdict(result) for result in new}}
        return [record for key, record in done.items() if key in ids]

    def merge(self) -> int | None:
        """Under a launcher, wait for every process; the main one merges the parts into
        `--out` and returns how many records it added (None elsewhere)."""
        if self.world == 1:
            return None
        self.processes.wait_for_everyone()
        if not self.processes.is_main_process:
            return None
        out = self.request.out
        return merge_parts(out, [part_path(out, index, self.world)
                                 for index in range(self.world)])
