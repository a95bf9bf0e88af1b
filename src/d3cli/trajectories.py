"""Teacher pseudo-trajectories (algorithms.md §1): roll the teacher out one token per
forward inside semi-AR blocks and record, per prompt, the forward at which each answer
position was committed (`unmask_step`, the compact form of §1.4). Any other strategy can roll
out instead (`method`), e.g. a student's own multi-block decoding, which commits several
positions per forward.

A trajectory folder is a `datasets` parquet folder (``load_dataset("parquet",
data_dir=DIR)`` reads it) plus a ``README.md`` dataset card whose front matter holds the run
that made it, so a rerun can refuse to mix runs and the distiller can check its teacher.
Prompts are cut into fixed chunks, one parquet file per chunk, written atomically: a rerun
skips finished chunks (nothing lost or duplicated after a kill), and `--shard I/N` takes
every N-th chunk, so the shards' files together are exactly the unsharded run's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from .canvas import first_stop
from .checkpoints import LoadedModel, encode_prompt
from .decode import STRATEGIES, DecodeOptions, decode_prompts, noise_key
from .tasks import Example, Task

CARD = "README.md"
STAGING = ".staging"  # hidden, so the parquet loader never sees half-written files
TEMPERATURE_STEP = 0.1  # attempt a runs at temperature 0.1·a (§1.2)
# Run settings that older cards lack, with the value those runs had.
ADDED_LATER: dict[str, Any] = {"method": "vanilla", "decoding": {}}
IMPORTED = "imported"  # the `method` of a folder converted from the reference layout
# `unmask_step` values that are not a forward: a position decoded before the first one, and
# one never decoded (masked in every state), as when a target runs past the teacher's canvas.
DECODED = -1
NEVER = 2**31 - 1


class TrajectoryFolderError(ValueError):
    """A trajectory folder that cannot be used as asked; the message says why, on one line."""


@dataclass(frozen=True)
class TrajectoryRun:
    """What defines a trajectory folder; every process writing into it must agree."""

    teacher: str
    source: str  # the task name or dataset the prompts came from
    num_prompts: int
    gen_length: int
    block_size: int
    attempts: int
    keep_incorrect: bool
    chunk_size: int
    seed: int
    vocab_size: int
    mask_token_id: int
    method: str = "vanilla"  # the decoding strategy that rolls out (§1: one token per forward)
    decoding: dict[str, Any] = field(default_factory=dict)  # its options beyond the above


def features():
    """The parquet schema (explicit, so a chunk whose prompts were all dropped still loads)."""
    import datasets

    ids = datasets.Sequence(datasets.Value("int32"))
    return datasets.Features({
        "id": datasets.Value("string"), "task": datasets.Value("string"),
        "teacher": datasets.Value("string"), "prompt_ids": ids, "answer_ids": ids,
        "unmask_step": ids, "block_size": datasets.Value("int32"),
        "num_forwards": datasets.Value("int32"), "correct": datasets.Value("bool"),
        "text": datasets.Value("string"), "attempt": datasets.Value("int32"),
        "temperature": datasets.Value("float64")})


def temperatures(attempts: int) -> list[float]:
    """The sampling temperature of each attempt: 0, 0.1, 0.2, …"""
    return [round(TEMPERATURE_STEP * attempt, 6) for attempt in range(attempts)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` → (I, N) with 0 ≤ I < N."""
    index, slash, count = text.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"--shard {text!r} is not I/N with 0 <= I < N (e.g. 0/2)")
    return int(index), int(count)


def shard_chunks(num_prompts: int, chunk_size: int, shard: int = 0,
                 num_shards: int = 1) -> list[tuple[int, int]]:
    """The [start, end) prompt ranges of this shard: every `num_shards`-th chunk."""
    chunks = [(start, min(start + chunk_size, num_prompts))
              for start in range(0, num_prompts, chunk_size)]
    return chunks[shard::num_shards]


def chunk_path(out: Path, chunk: tuple[int, int]) -> Path:
    return out / f"part-{chunk[0]:07d}-{chunk[1]:07d}.parquet"


def read_card(out: Path) -> dict[str, Any]:
    """The run recorded in a trajectory folder's card."""
    card = out / CARD
    if not out.is_dir():
        raise TrajectoryFolderError(f"{out}: no such folder (give the --out of d3 "
                                    "trajectories)")
    if not card.is_file():
        raise TrajectoryFolderError(f"{out}: no {CARD}: not a d3 trajectory folder")
    text = card.read_text(encoding="utf-8")
    try:
        front = yaml.safe_load(text.split("---")[1]) if text.startswith("---") else None
    except (IndexError, yaml.YAMLError):
        front = None
    if not isinstance(front, dict) or not isinstance(front.get("d3"), dict):
        raise TrajectoryFolderError(f"{card}: no d3 run in its front matter")
    return front["d3"]


def prepare_folder(out: Path, run: TrajectoryRun) -> None:
    """Create `out` with its card, or check that the run already there is this one."""
    if (out / CARD).is_file():
        recorded = read_card(out)
        for name, value in asdict(run).items():
            if recorded.get(name, ADDED_LATER.get(name)) != value:
                raise TrajectoryFolderError(
                    f"{out} holds trajectories with {name} = {recorded.get(name)!r}, "
                    f"not {value!r}; use another --out folder")
    elif out.is_dir() and any(out.glob("*.parquet")):
        raise TrajectoryFolderError(f"{out} holds parquet files but no d3 {CARD}; "
                                    "use another --out folder")
    (out / STAGING).mkdir(parents=True, exist_ok=True)
    front = yaml.safe_dump({"d3": asdict(run)}, sort_keys=False)
    card = (f"---\n{front}---\n# Trajectories of {run.teacher}\n\n{made_by(run)}\n"
            "`unmask_step[r]` is the forward at which answer position r was committed.\n")
    atomic_write(out / CARD, card.encode())


def made_by(run: TrajectoryRun) -> str:
    """The card's sentence on how the trajectories were made."""
    if run.method == IMPORTED:
        steps = ("one token per step" if run.decoding.get("one_per_step")
                 else "any number of tokens per step")
        return (f"Imported by `d3 trajectories --import` from {run.source} (the d3LLM "
                f"reference layout, {steps}), blocks of {run.block_size}; that layout "
                "records neither attempts nor temperatures.")
    how = ("one token per forward" if run.method == "vanilla" else
           f"`{run.method}` decoding ({run.decoding})")
    return (f"Made by `d3 trajectories` on {run.num_prompts} prompts of {run.source}: {how} "
            f"in blocks of {run.block_size}, up to {run.attempts} attempts.")


def remove_staging(out: Path) -> None:
    """Remove the staging folder once it is empty (another shard may still be writing)."""
    with contextlib.suppress(OSError):
        (out / STAGING).rmdir()


def atomic_write(path: Path, data: bytes) -> None:
    staged = path.parent / STAGING / f"{path.name}.{os.getpid()}"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(data)
    os.replace(staged, path)


def write_chunk(out: Path, chunk: tuple[int, int], records: Sequence[dict]) -> Path:
    """One chunk's records as a parquet file, appearing whole or not at all."""
    import datasets

    datasets.disable_progress_bars()
    path = chunk_path(out, chunk)
    staged = out / STAGING / f"{path.name}.{os.getpid()}"
    datasets.Dataset.from_list(list(records), features=features()).to_parquet(str(staged))
    os.replace(staged, path)
    return path


@torch.no_grad()
def teacher_rollouts(loaded: LoadedModel, task: Task, examples: Sequence[Example],
                     run: TrajectoryRun, batch_size: int) -> list[dict]:
    """Trajectory records of `examples`, in order (§1.2).

    Attempt a decodes (with `run.method`, by default one token per forward) the prompts
    still wrong after attempt a − 1 at temperature 0.1·a (Gumbel sampling); a prompt keeps
    its first correct attempt, or its last one with `correct = False`. A prompt without a
    reference answer is correct. Positions an early stop filled after the answer's end
    count as committed at the row's last forward.
    """
    spec, pending, records = loaded.spec, list(examples), {}
    prompt_ids = {example.id: encode_prompt(loaded, example.prompt) for example in examples}
    # float64 scoring, as the reference: in float32 the confidences of near-certain
    # positions saturate at 1.0 and tie, which would reorder the recorded trajectory.
    options = DecodeOptions(gen_length=run.gen_length, block_size=run.block_size,
                            one_token_per_forward=run.method == "vanilla",
                            score_dtype="float64", **run.decoding)
    for attempt, temperature in enumerate(temperatures(run.attempts)):
        seed = run.seed + attempt
        decoded = decode_prompts(
            loaded.model, spec, [prompt_ids[example.id] for example in pending],
            [noise_key(seed, example.id) for example in pending], STRATEGIES[run.method],
            replace(options, temperature=temperature, seed=seed), batch_size, commit_steps=True)
        for done in decoded:
            example, answer_ids = pending[done.index], done.tokens
            answer = answer_ids[:first_stop(answer_ids, spec.stop_token_ids)]
            text = loaded.tokenizer.decode(answer, skip_special_tokens=True)
            correct = example.answer is None or task.score(example, text)
            records[example.id] = {
                "id": example.id, "task": task.name, "teacher": run.teacher,
                "prompt_ids": prompt_ids[example.id], "answer_ids": answer_ids,
                "unmask_step": [step if step >= 0 else done.forwards - 1
                                for step in done.commit_step],
                "block_size": run.block_size,
                "num_forwards": done.forwards, "correct": correct, "text": text,
                "attempt": attempt, "temperature": temperature}
        pending = [example for example in pending if not records[example.id]["correct"]]
        if not pending:
            break
    return [records[example.id] for example in examples]


def collect(loaded: LoadedModel, task: Task, examples: Sequence[Example], run: TrajectoryRun,
            out: Path, chunks: Sequence[tuple[int, int]],
            batch_size: int) -> Iterator[tuple[tuple[int, int], list[dict]]]:
    """Roll out every chunk of `chunks` not yet in `out`, write it, and yield it with all
    its records (those dropped by `keep_incorrect = False` included, for the progress)."""
    for chunk in chunks:
        if chunk_path(out, chunk).exists():
            continue
        records = teacher_rollouts(loaded, task, examples[chunk[0]:chunk[1]], run, batch_size)
        write_chunk(out, chunk, [record for record in records
                                 if run.keep_incorrect or record["correct"]])
        yield chunk, records


def load_trajectories(out: Path, files: Sequence[Path] | None = None):
    """The trajectory dataset in `out` (or only `files` of it) as a `datasets.Dataset`."""
    import datasets

    datasets.disable_progress_bars()
    read_card(out)
    paths = [str(path) for path in (files if files is not None else sorted(out.glob("*.parquet")))]
    if not paths:
        raise TrajectoryFolderError(f"{out}: no trajectory files")
    return datasets.load_dataset("parquet", data_files=paths, split="train",
                                 features=features())


def summary(dataset, stop_ids: Sequence[int]) -> dict[str, float]:
    """Prompts, kept incorrect ones, accuracy %, mean forwards and answer tokens."""
    count = len(dataset)
    correct = sum(dataset["correct"])
    tokens = sum(first_stop(ids, stop_ids) for ids in dataset["answer_ids"])
    return {"prompts": count, "incorrect": count - correct,
            "accuracy": 100 * correct / count if count else 0.0,
            "mean_forwards": sum(dataset["num_forwards"]) / count if count else 0.0,
            "tokens": tokens}

