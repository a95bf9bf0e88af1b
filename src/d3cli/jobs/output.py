"""An output path, checked before any work, so a bad `--out` costs nothing."""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """An `--out` that cannot be written; the message says why, on one line."""


def check_writable(path: Path, kind: str) -> None:
    """Stop now, with one line and nothing created, if `path` (a "file" or a "folder")
    cannot be written."""
    if path.exists():
        if path.is_dir() != (kind == "folder"):
            raise OutputPathError(f"{path} is a {'folder' if path.is_dir() else 'file'}; "
                                  f"--out must be a {kind}")
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"{path} is not writable")
        return
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot create {path}: {ancestor} is not a writable folder")
