"""Data-parallel decoding: each process of `accelerate launch` / `torchrun` decodes every
N-th prompt into its own part file, and the main process merges the parts into `--out`.

A part file is the resume unit of its rank: a rerun after a kill skips what `--out` and the
rank's part already hold, and the merge appends each record whose resume key `--out` lacks,
so every sample lands in `--out` exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from .runner import end_cut_line, read_records, resume_key

Item = TypeVar("Item")


def share(items: Sequence[Item], rank: int, world: int) -> list[Item]:
    """This rank's items: every `world`-th one from index `rank`."""
    return list(items[rank::world])


def part_path(out: Path, rank: int, world: int) -> Path:
    """Where rank `rank` of `world` writes its results until the merge."""
    return out.with_name(f"{out.name}.rank{rank}-of-{world}")


def merge_parts(out: Path, parts: Sequence[Path]) -> int:
    """Append to `out` every record of `parts` it does not hold yet (by `resume_key`), then
    delete the parts; returns how many records were appended."""
    held = {resume_key(record) for record in read_records(out)}
    added = []
    for part in parts:
        for record in read_records(part):
            if resume_key(record) not in held:
                held.add(resume_key(record))
                added.append(json.dumps(record) + "\n")
    end_cut_line(out)
    with out.open("a", encoding="utf-8") as handle:
        handle.writelines(added)
    for part in parts:
        part.unlink(missing_ok=True)
    return len(added)
