"""Writing a model folder that `--model` loads."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def save_model(model: torch.nn.Module, folder: Path) -> None:
    """`save_pretrained` into `folder`, with the files readable as the user's umask allows
    (transformers writes its weights through a private temporary file, mode 0600)."""
    model.save_pretrained(folder)
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
