"""Distillation targets from a dataset, masked in the order of a teacher trajectory (§2.1).

The d3LLM trainer does not learn the trajectory's own answer: its target is a distillation
set's response (`llm_response`, after the question under the chat template, with EOS
appended), and the trajectory of the same row (the set's row index, `sample_idx`, is the
trajectory's `idx`) gives only the order in which the answer positions are unmasked. The
order is taken response-relative (A1): answer position r of the target follows answer
position r of the trajectory, whatever the two prompts' lengths.

The target answer is cut or EOS-padded to a fixed canvas (by default the trajectory's). Past
the trajectory's canvas the reference pads the teacher states: LLaDA with MASK (those
positions count as never decoded, `NEVER`), Dream with EOS (decoded from the start,
`DECODED`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .checkpoints import LoadedModel, encode_prompt
from .tasks.data import load_rows
from .trajectories import DECODED, NEVER

# How the reference pads teacher states past their canvas, per family (d3's own: as LLaDA).
PAST_CANVAS = {"Dream": DECODED}


class TargetsError(ValueError):
    """Targets that cannot be joined to the trajectories; the message says why, on one line."""


@dataclass(frozen=True)
class Targets:
    """Where the targets come from: a hub id or local file, and the fields read."""

    dataset: str
    question_field: str = "question"
    response_field: str = "llm_response"
    index_field: str = "sample_idx"  # absent from the dataset: the row index (the reference's)
    split: str = "train"
    length: int | None = None  # the answer canvas; None: the trajectories'


def trajectory_index(record_id: str) -> int:
    """The row index a trajectory was made from: the number ending its id (`NAME-IDX`)."""
    number = record_id.rsplit("-", 1)[-1]
    if not number.isdigit():
        raise TargetsError(f"trajectory id {record_id!r} does not end in a row index")
    return int(number)


def fitted(values: Sequence[int], length: int, fill: int) -> list[int]:
    """`values` cut or padded with `fill` to `length`."""
    return (list(values) + [fill] * length)[:length]


class TargetRecords(Dataset):
    """Trajectory records (prompt_ids, answer_ids, unmask_step, correct) whose prompt and
    answer are the targets' and whose unmask steps are the matching trajectory's; built on
    access, so a large target set costs no start-up time."""

    def __init__(self, rows: list[dict[str, Any]], trajectories, pairs: list[tuple[int, int]],
                 loaded: LoadedModel, targets: Targets, canvas: int) -> None:
        self.rows, self.trajectories, self.pairs = rows, trajectories, pairs
        self.loaded, self.targets, self.canvas = loaded, targets, canvas
        self.unmatched = len(rows) - len(pairs)  # rows without a (kept) trajectory
        tokenizer = loaded.tokenizer
        self.eos_id = (tokenizer.eos_token_id if tokenizer.eos_token_id is not None
                       else loaded.spec.stop_token_ids[0])
        self.past_canvas = PAST_CANVAS.get(loaded.family, NEVER)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row_index, trajectory_row = self.pairs[index]
        row, trajectory = self.rows[row_index], self.trajectories[trajectory_row]
        tokenizer = self.loaded.tokenizer
        answer = tokenizer(str(row[self.targets.response_field]),
                           add_special_tokens=False).input_ids + [self.eos_id]
        return {"id": trajectory["id"],
                "prompt_ids": encode_prompt(self.loaded, str(row[self.targets.question_field])),
                "answer_ids": fitted(answer, self.canvas, self.eos_id),
                "unmask_step": fitted(trajectory["unmask_step"], self.canvas, self.past_canvas),
                "correct": trajectory["correct"]}


def load_targets(targets: Targets) -> list[dict[str, Any]]:
    """The target rows (every one with the question and response fields)."""
    local = Path(targets.dataset).expanduser().is_file()
    return load_rows(targets.dataset, targets.dataset, targets.split,
                     targets.dataset if local else None,
                     (targets.question_field, targets.response_field))


def join_targets(targets: Targets, trajectories, loaded: LoadedModel,
                 only_correct: bool) -> TargetRecords:
    """Each target row paired with the trajectory of its index (only correct trajectories
    with `only_correct`); rows without one are left out (counted in `unmatched`)."""
    rows = load_targets(targets)
    by_index: dict[int, int] = {}
    for position, record_id in enumerate(trajectories["id"]):
        index = trajectory_index(record_id)
        if index in by_index:
            raise TargetsError(f"two trajectories are of row {index} "
                               f"({trajectories[by_index[index]]['id']}, {record_id})")
        by_index[index] = position
    correct = trajectories["correct"]
    pairs = []
    for row_index, row in enumerate(rows):
        key = row.get(targets.index_field, row_index)
        if not isinstance(key, int):
            raise TargetsError(f"{targets.dataset}: row {row_index} has {targets.index_field} "
                               f"{key!r}, not a row index")
        found = by_index.get(key)
        if found is not None and (correct[found] or not only_correct):
            pairs.append((row_index, found))
    if not pairs:
        kept = "correct trajectory" if only_correct else "trajectory"
        raise TargetsError(f"no row of {targets.dataset} has a {kept} (rows are matched by "
                           f"{targets.index_field!r}, else their row index, to the number "
                           "ending a trajectory's id)")
    canvas = targets.length or len(trajectories[0]["answer_ids"])
    return TargetRecords(rows, trajectories, pairs, loaded, targets, canvas)
