"""`d3 models`: the embedded models."""

from __future__ import annotations

import typer

from .shared import listing_entry


def models() -> None:
    """List the embedded models (any local folder or hub id also works as --model)."""
    from ..checkpoints import ASSETS, DEFAULT_MODEL, DEFAULT_TEACHER

    roles = {DEFAULT_MODEL: "default of decode", DEFAULT_TEACHER: "default teacher"}
    for folder in sorted(path for path in ASSETS.iterdir() if (path / "config.json").is_file()):
        card = folder / "README.md"
        lines = card.read_text(encoding="utf-8").split("\n\n") if card.is_file() else [""]
        summary = " ".join(lines[1].split()) if len(lines) > 1 else ""
        role = f" ({roles[folder.name]})" if folder.name in roles else ""
        typer.echo(listing_entry(f"{folder.name}{role}", summary))
