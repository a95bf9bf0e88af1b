"""Running a strategy over prompts: batching, scoring, result records, resume."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from . import __version__
from .canvas import first_stop
from .checkpoints import LoadedModel, encode_prompt
from .decode import STRATEGIES, Decoded, DecodeOptions, decode_prompts, method_config, noise_key
from .tasks import Example, Task
from .tasks.execution import isolation


class PromptsFileError(ValueError):
    """A prompts file line that cannot be used; the message names file and line."""


@dataclass
class SampleResult:
    """One result record: the contract of architecture.md plus the run's environment."""

    task: str
    method: str
    model: str
    id: str
    config: dict
    gen_tokens: int
    forwards: int
    tpf: float
    seconds: float
    correct: bool | None
    output: str
    env: dict


def environment(loaded: LoadedModel, options: DecodeOptions, batch_size: int,
                compile: bool) -> dict:
    """What is needed to reproduce a result line."""
    device = loaded.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {"d3": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "device": name or device.type, "dtype": str(loaded.model.dtype).removeprefix("torch."),
            "seed": options.seed, "batch_size": batch_size, "score_dtype": options.score_dtype,
            "compile": compile}


def decode_examples(loaded: LoadedModel, task: Task, examples: Sequence[Example], method: str,
                    options: DecodeOptions, batch_size: int = 64, sync_every: int = 1,
                    compile: bool = False) -> Iterator[SampleResult]:
    """Decode `examples` with `method` in `batch_size` slots; yields one scored result per
    example as its row finishes (in any order). `options` are valid for `method`
    (`resolve_options` checks them).

    `gen_tokens` counts the answer before the first stop token (EOS padding is not counted,
    §4.2, A3); `forwards` the model calls that included the row; `seconds` the wall time from
    the row entering its slot until a host read found it done.
    """
    run = run_record(loaded, task.name, method, options, batch_size, compile)
    if any(example.metadata.get("kind") == "code" for example in examples):
        run["env"]["sandbox"] = isolation().description
    prompts = [prompt_ids(loaded, example, task.name) for example in examples]
    keys = [noise_key(options.seed, example.id) for example in examples]
    for done, answer, output in decode_answers(loaded, prompts, keys, method, options,
                                               batch_size, sync_every, compile):
        example = examples[done.index]
        correct = task.score(example, output) if example.answer is not None else None
        yield SampleResult(task.name, method, loaded.name, example.id, run["config"],
                           len(answer), done.forwards, len(answer) / done.forwards,
                           done.seconds, correct, output, run["env"])


def check_positions(loaded: LoadedModel, prompts: Iterable[Sequence[int]],
                    gen_length: int) -> None:
    """Fail, before any work, when the longest prompt plus the answer canvas needs more
    positions than the model has (`max_position_embeddings`, or fewer learned positions)."""
    config = loaded.model.config
    limit = min(size for size in (config.max_position_embeddings, config.learned_positions)
                if size)
    longest = max((len(prompt) for prompt in prompts), default=0)
    if longest + gen_length > limit:
        raise ValueError(f"the longest prompt ({longest} tokens) plus --gen-length {gen_length} "
                         f"needs {longest + gen_length} positions; {loaded.name} has {limit}")


def prompt_ids(loaded: LoadedModel, example: Example, task: str) -> list[int]:
    """An example's prompt as the model's family feeds it (`encode_prompt`), with the chat
    turns and task kind a harness task records."""
    metadata = example.metadata
    return encode_prompt(loaded, example.prompt, metadata.get("messages"),
                         metadata.get("kind"), metadata.get("task", task))


def decode_answers(loaded: LoadedModel, prompts: Sequence[Sequence[int]], keys: Sequence[int],
                   method: str, options: DecodeOptions, batch_size: int, sync_every: int = 1,
                   compile: bool = False, max_tokens: int | None = None,
                   ) -> Iterator[tuple[Decoded, list[int], str]]:
    """Decode token-id `prompts` (noise keyed by `keys`); yields, as rows finish, each row's
    `Decoded`, its answer ids before the first stop token (at most `max_tokens`) and their
    text."""
    spec, tokenizer = loaded.spec, loaded.tokenizer
    for done in decode_prompts(loaded.model, spec, prompts, keys, STRATEGIES[method], options,
                               batch_size, sync_every, compile=compile):
        answer = done.tokens[:first_stop(done.tokens, spec.stop_token_ids)][:max_tokens]
        yield done, answer, tokenizer.decode(answer, skip_special_tokens=True)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The whole JSON records of a results file (a line cut by a kill is skipped: its
    sample is decoded again)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def resume_key(record: dict[str, Any]) -> tuple:
    """What makes two records the same sample: everything that changes an output (model,
    task, method, config, seed, the weights' dtype, the scoring precision) and the id."""
    env = record.get("env") or {}
    return (record.get("model"), record.get("task"), record.get("method"),
            json.dumps(record.get("config"), sort_keys=True), env.get("seed"),
            env.get("dtype"), env.get("score_dtype"), record.get("id"))


def records_of_run(paths: Iterable[Path], run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The records in `paths` of the same run as `run` (`run_record`), by id."""
    key = resume_key(run)[:-1]
    return {record.get("id"): record for path in paths for record in read_records(path)
            if resume_key(record)[:-1] == key}


def run_record(loaded: LoadedModel, task: str, method: str, options: DecodeOptions,
               batch_size: int, compile: bool) -> dict[str, Any]:
    """The fields every record of one run shares (all but the sample's own)."""
    return {"model": loaded.name, "task": task, "method": method,
            "config": method_config(method, options),
            "env": environment(loaded, options, batch_size, compile)}


def end_cut_line(path: Path) -> None:
    """Create `path`, or end its last line if a kill cut it, so the next record stays whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as raw:
        if raw.tell() and not _ends_with_newline(path):
            raw.write(b"\n")


def write_results(results: Iterable[SampleResult], path: Path) -> Iterator[SampleResult]:
    """Append each result to `path` as one JSON line (flushed at once), passing it on."""
    end_cut_line(path)
    with path.open("a", encoding="utf-8") as handle:
        for result in results:
            handle.write(json.dumps(asdict(result)) + "\n")
            handle.flush()
            yield result


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


def load_prompts(path: Path) -> list[Example]:
    """Prompts from a JSON-lines file: `prompt` (required), `id` and `answer` (optional)."""
    examples, seen = [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PromptsFileError(f"{path}: cannot read: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptsFileError(f"{path}:{number}: malformed JSON: {error.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            raise PromptsFileError(f"{path}:{number}: expected an object with a 'prompt' string")
        if not record["prompt"].strip():
            raise PromptsFileError(f"{path}:{number}: empty prompt")
        example_id = str(record.get("id", f"{path.stem}-{number}"))
        if example_id in seen:
            raise PromptsFileError(f"{path}:{number}: duplicate id {example_id!r}")
        seen.add(example_id)
        answer = record.get("answer")
        examples.append(Example(example_id, record["prompt"],
                                None if answer is None else str(answer)))
    if not examples:
        raise PromptsFileError(f"{path}:1: no prompts")
    return examples
