"""Importing teacher trajectories published in the d3LLM reference layout (algorithms.md §1.2).

A reference record holds `idx` (the prompt's row in its distillation set), `prompt_ids`,
`trajectory` (one full sequence, prompt + answer canvas, per teacher step; with one token per
step, state k has k + 1 answer positions decoded), `final_output`, `is_correct` and text
fields. d3 keeps one integer per answer position instead (§1.4): `unmask_step[r]` is the
first state in which position r is no longer masked, so the conversion is exact and about
as many times smaller as there are states. The answer is the final state's.

The source (a hub id, a parquet or JSON lines file, or a folder of them) is streamed in
chunks of records, each written as one parquet file of a d3 trajectory folder: a rerun skips
the chunks already written. A record whose states are not a pure unmasking is refused with
an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from .canvas import first_stop
from .checkpoints import ModelSpec, canonical_name, resolve_model_path
from .checkpoints.load import load_tokenizer, read_json
from .checkpoints.spec import spec_for
from .families import detect_family, token_facts_family
from .model import D3Config
from .tasks.data import builder_for, first_line, hub_unreachable
from .trajectories import (
    IMPORTED,
    TrajectoryRun,
    chunk_path,
    prepare_folder,
    remove_staging,
    write_chunk,
)

REQUIRED = ("idx", "prompt_ids", "trajectory", "is_correct")


class TrajectoryImportError(ValueError):
    """A source or record that cannot be imported; the message says which and why."""


@dataclass(frozen=True)
class Teacher:
    """What an import needs of the teacher: its token facts and tokenizer, not its weights."""

    name: str
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    vocab_size: int


def load_teacher(name: str) -> Teacher:
    """The teacher's config and tokenizer (any name `load_model` takes), without weights."""
    path = resolve_model_path(name)
    raw = read_json(path / "config.json")
    family = detect_family(raw, path)
    config = (D3Config.from_pretrained(path) if family.build_config is None
              else family.build_config(raw, path))
    facts = token_facts_family(raw, family)
    tokenizer = load_tokenizer(path, facts)
    # spec_for reads only the model's config and name
    spec = spec_for(SimpleNamespace(config=config, name_or_path=str(path)), tokenizer, facts)
    return Teacher(canonical_name(name), tokenizer, spec, config.vocab_size)


def import_run(source: str, teacher: Teacher, gen_length: int, block_size: int,
               chunk_size: int, one_per_step: bool) -> TrajectoryRun:
    """The card of an imported folder; the reference layout records no attempts or seeds."""
    return TrajectoryRun(
        teacher=teacher.name, source=source, num_prompts=0, gen_length=gen_length,
        block_size=block_size, attempts=0, keep_incorrect=True, chunk_size=chunk_size,
        seed=0, vocab_size=teacher.vocab_size, mask_token_id=teacher.spec.mask_token_id,
        method=IMPORTED, decoding={"one_per_step": one_per_step})


def source_files(folder: Path) -> list[Path]:
    """A folder's parquet files, else its JSON lines files, in name order."""
    for pattern in ("*.parquet", "*.jsonl", "*.json", "*.jsonl.gz"):
        files = sorted(folder.rglob(pattern))
        if files:
            return files
    raise TrajectoryImportError(f"{folder}: no parquet or JSON lines files")


def open_source(source: str, split: str = "train"):
    """The source as a streamed `datasets.IterableDataset` (hub id, file or folder)."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    path = Path(source).expanduser()
    try:
        if path.exists():
            files = source_files(path) if path.is_dir() else [path]
            stream = datasets.load_dataset(builder_for(files[0]), split="train", streaming=True,
                                           data_files=[str(file) for file in files])
        else:
            unreachable = hub_unreachable()
            if unreachable:
                raise TrajectoryImportError(f"cannot load {source}: {unreachable}; pass a "
                                            "local copy (parquet or JSON lines)")
            stream = datasets.load_dataset(source, split=split, streaming=True)
    except (TrajectoryImportError, ValueError) as error:  # TaskDataError is a ValueError
        raise TrajectoryImportError(str(error)) from None
    except Exception as error:  # datasets raises many kinds; report them alike
        raise TrajectoryImportError(f"cannot read {source} ({first_line(error)})") from error
    missing = [name for name in REQUIRED if name not in (stream.column_names or REQUIRED)]
    if missing:
        raise TrajectoryImportError(f"{source} lacks the field {missing[0]!r} of the reference "
                                    f"layout (found: {', '.join(stream.column_names)})")
    return stream


def unmask_steps(states: np.ndarray, mask_id: int, one_per_step: bool) -> np.ndarray:
    """`unmask_step` of answer canvases `states` [S, G] (state k after teacher step k): the
    index of the first state where each position is no longer masked. Raises ValueError
    when the states are not a pure unmasking that ends fully decoded."""
    masked = states == mask_id
    if not masked[0].any() and states.shape[1] > 1 and one_per_step:
        raise ValueError(f"state 0 holds no mask token ({mask_id}): not this teacher's "
                         "trajectories")
    remasked = masked[1:] & ~masked[:-1]
    if remasked.any():
        state, position = np.argwhere(remasked)[0]
        raise ValueError(f"state {state + 1} re-masks answer position {position}")
    rewritten = ~masked & (states != states[-1])
    if rewritten.any():
        state, position = np.argwhere(rewritten)[0]
        raise ValueError(f"state {state} holds another token at answer position {position} "
                         "than the final state")
    if masked[-1].any():
        raise ValueError(f"answer position {int(np.argmax(masked[-1]))} is still masked in "
                         "the last state")
    if one_per_step:
        remaining = np.concatenate([[states.shape[1]], masked.sum(1)])
        decoded = remaining[:-1] - remaining[1:]
        if (decoded != 1).any():
            state = int(np.argmax(decoded != 1))
            raise ValueError(f"state {state} decodes {decoded[state]} tokens, not one per step")
    return masked.sum(0)


def nested_lists(records: pa.ListArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A list<list<int>> array as (record → state offsets, state → token offsets, tokens);
    a null record has no state."""
    states = records.values
    return (records.offsets.to_numpy(), states.offsets.to_numpy(),
            states.values.to_numpy(zero_copy_only=False))


def flat_lists(records: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """A list<int> array as (record → token offsets, tokens)."""
    return records.offsets.to_numpy(), records.values.to_numpy(zero_copy_only=False)


@dataclass
class Converter:
    """Turns tables of reference records into d3 trajectory records."""

    source: str
    teacher: Teacher
    gen_length: int
    block_size: int
    one_per_step: bool = True

    @property
    def name(self) -> str:
        """The prefix of the records' ids (`NAME-IDX`, as `d3 trajectories --dataset`)."""
        return Path(self.source.rstrip("/")).name.split(".")[0]

    def records(self, table: pa.Table, first_row: int) -> list[dict[str, Any]]:
        """The d3 records of `table`, whose first record is row `first_row` of the source."""
        converted: list[dict[str, Any]] = []
        for batch in table.to_batches():  # contiguous arrays, read without copies
            converted += self.batch_records(batch, first_row + len(converted))
        return converted

    def batch_records(self, batch: pa.RecordBatch, first_row: int) -> list[dict[str, Any]]:
        record_states, state_tokens, tokens = nested_lists(batch.column("trajectory"))
        prompt_offsets, prompt_tokens = flat_lists(batch.column("prompt_ids"))
        final = (flat_lists(batch.column("final_output"))
                 if "final_output" in batch.schema.names else None)
        indices, correct = batch.column("idx").to_pylist(), batch.column("is_correct").to_pylist()
        converted = []
        for row in range(batch.num_rows):
            start, end = record_states[row], record_states[row + 1]
            prompt = prompt_tokens[prompt_offsets[row]:prompt_offsets[row + 1]]
            final_output = (final[1][final[0][row]:final[0][row + 1]]
                            if final is not None else None)
            try:
                states = state_matrix(state_tokens[start:end + 1], tokens)
                converted.append(self.record(indices[row], prompt, states, final_output,
                                             correct[row]))
            except ValueError as error:
                raise TrajectoryImportError(f"{self.source}: record {first_row + row} (idx "
                                            f"{indices[row]}): {error}") from None
        return converted

    def record(self, idx: Any, prompt: np.ndarray, states: np.ndarray,
               final_output: np.ndarray | None, correct: Any) -> dict[str, Any]:
        """One d3 record from one reference record's parts."""
        if not isinstance(idx, int) or not isinstance(correct, bool):
            raise ValueError(f"idx must be an integer and is_correct a boolean, got {idx!r} "
                             f"and {correct!r}")
        if states.shape[1] != len(prompt) + self.gen_length:
            raise ValueError(f"its states hold {states.shape[1]} tokens, not the "
                             f"{len(prompt)}-token prompt + {self.gen_length} answer positions")
        if (states[:, :len(prompt)] != prompt).any():
            state = int(np.argmax((states[:, :len(prompt)] != prompt).any(1)))
            raise ValueError(f"state {state} does not start with prompt_ids")
        if final_output is not None and not np.array_equal(final_output, states[-1]):
            raise ValueError(f"final_output ({len(final_output)} tokens) is not the last "
                             f"state ({states.shape[1]} tokens)")
        answers = states[:, len(prompt):]
        spec = self.teacher.spec
        steps = unmask_steps(answers, spec.mask_token_id, self.one_per_step)
        answer = answers[-1].tolist()
        text = self.teacher.tokenizer.decode(answer[:first_stop(answer, spec.stop_token_ids)],
                                             skip_special_tokens=True)
        return {"id": f"{self.name}-{idx}", "task": self.source, "teacher": self.teacher.name,
                "prompt_ids": prompt.tolist(), "answer_ids": answer,
                "unmask_step": steps.tolist(), "block_size": self.block_size,
                "num_forwards": len(states), "correct": correct, "text": text,
                "attempt": None, "temperature": None}


def state_matrix(offsets: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The states between token `offsets` as one [S, L] array; all must have one length."""
    if len(offsets) < 2:
        raise ValueError("its trajectory has no state")
    lengths = np.diff(offsets)
    if (lengths != lengths[0]).any():
        state = int(np.argmax(lengths != lengths[0]))
        raise ValueError(f"state {state} has {lengths[state]} tokens, state 0 {lengths[0]}")
    return tokens[offsets[0]:offsets[-1]].reshape(len(lengths), int(lengths[0]))


def import_trajectories(source: str, out: Path, teacher: Teacher, block_size: int,
                        chunk_size: int = 256, one_per_step: bool = True, split: str = "train",
                        gen_length: int = 256) -> Iterator[tuple[tuple[int, int], bool]]:
    """Open `source` and prepare the trajectory folder `out` now (bad input fails here),
    then convert chunk by chunk as the returned iterator is read: it yields each chunk and
    whether it was converted now (False: written by an earlier run)."""
    stream = open_source(source, split)
    prepare_folder(out, import_run(source, teacher, gen_length, block_size, chunk_size,
                                   one_per_step))
    return convert_chunks(stream, out, Converter(source, teacher, gen_length, block_size,
                                                 one_per_step), chunk_size)


def convert_chunks(stream, out: Path, converter: Converter,
                   chunk_size: int) -> Iterator[tuple[tuple[int, int], bool]]:
    """Write each chunk of `stream` not yet in `out`; yield every chunk and whether it was."""
    start = 0
    for table in stream.with_format("arrow").iter(batch_size=chunk_size):
        chunk = (start, start + table.num_rows)
        done = chunk_path(out, chunk).exists()
        if not done:
            write_chunk(out, chunk, converter.records(table, start))
        yield chunk, not done
        start = chunk[1]
    remove_staging(out)


def reference_layout(record: dict[str, Any], mask_id: int) -> dict[str, Any]:
    """A d3 record of a one-token-per-forward rollout written in the reference layout (the
    inverse of the import, for tests and benchmarks); `idx` is the number ending its id."""
    prompt, answer = record["prompt_ids"], record["answer_ids"]
    states = [prompt + [token if step <= state else mask_id
                        for token, step in zip(answer, record["unmask_step"], strict=True)]
              for state in range(record["num_forwards"])]
    return {"idx": int(record["id"].rsplit("-", 1)[-1]), "question": "", "prompt_ids": prompt,
            "trajectory": states, "final_output": states[-1], "generated_text": record["text"],
            "llm_answer": None, "gt_answer": None, "is_correct": record["correct"]}
