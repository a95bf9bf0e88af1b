"""Task data through `datasets`: a hub id by default, or a local jsonl/json/parquet/csv copy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class TaskDataError(ValueError):
    """Task data that cannot be loaded or lacks a field; the message says which, on one line."""


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def cache_reason(error: BaseException) -> str:
    """`first_line(error)`, where datasets' offline miss ("Dataset X is not cached in None":
    its default cache) names the cache folder it looked in."""
    import datasets

    text = first_line(error)
    missed = text.endswith(" is not cached in None")
    return text.removesuffix("None") + str(datasets.config.HF_DATASETS_CACHE) if missed else text


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (None when it can, or when `HF_HUB_OFFLINE` asks for the
    local cache): a quick connection test, instead of the hub client's retries (30 s)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return None
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or 443
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"the hub ({host}) is unreachable from here ({error.strerror or error})"
    return None


def builder_for(path: Path) -> str:
    """The `datasets` builder for a local file, by extension (a .gz suffix is looked through)."""
    suffixes = [suffix for suffix in path.suffixes if suffix not in (".gz", ".bz2", ".xz")]
    builder = BUILDERS.get(suffixes[-1] if suffixes else "")
    if builder is None:
        raise TaskDataError(f"{path}: unknown data file type (use .jsonl, .json, .parquet or .csv)")
    return builder


def load_rows(
    task: str,
    hub_id: str,
    split: str,
    data_file: str | None,
    fields: Sequence[str],
    configs: Sequence[str | None] = (None,),
) -> list[dict[str, Any]]:
    """Rows of `hub_id` (each of `configs`, concatenated) or of a local `data_file`.

    Every row must carry `fields`; a missing one is reported with the fields that were found.
    """
    import datasets

    datasets.disable_progress_bars()  # d3 reports errors in one line and draws its own progress
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors reach us as one

    if data_file:
        path = Path(data_file).expanduser()
        if not path.is_file():
            raise TaskDataError(f"{task}: data file {path} does not exist")
        source, builder = str(path), builder_for(path)
        try:
            parts = [datasets.load_dataset(builder, data_files=str(path), split="train")]
        except Exception as error:  # datasets raises many kinds; report them alike
            raise TaskDataError(f"{task}: cannot read {path} ({first_line(error)})") from error
    else:
        source = hub_id
        unreachable = hub_unreachable()
        if unreachable:
            raise TaskDataError(f"{task}: cannot load {hub_id}: {unreachable}; pass a local "
                                "copy with --data-file (or set HF_HUB_OFFLINE=1 to use a "
                                "cached copy)")
        try:
            parts = [datasets.load_dataset(hub_id, config, split=split) for config in configs]
        except Exception as error:  # no hub, unknown id, ...
            raise TaskDataError(
                f"{task}: cannot load {hub_id} from the hub "
                f"({first_line(error)}); pass a local copy as a data file"
            ) from error
    rows: list[dict[str, Any]] = []
    for part in parts:
        missing = [name for name in fields if name not in part.column_names]
        if missing:
            raise TaskDataError(
                f"{task}: {source} lacks the field {missing[0]!r} "
                f"(found: {', '.join(part.column_names)})"
            )
        rows.extend(part.to_list())
    if not rows:
        raise TaskDataError(f"{task}: {source} has no rows")
    return rows
