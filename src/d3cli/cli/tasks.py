"""`d3 tasks`: the built-in tasks."""

from __future__ import annotations

import typer

from .shared import listing_entry


def tasks() -> None:
    """List the tasks of --task: the embedded one, and the lm-eval tasks of the d3LLM
    paper (any lm-eval generate-until task or group works; `lm_eval ls tasks` lists
    them)."""
    from ..tasks import EMBEDDED, REFERENCE_TASKS

    for name, task in EMBEDDED.items():
        typer.echo(listing_entry(name, task.__doc__ or ""))
    for name in REFERENCE_TASKS:
        typer.echo(listing_entry(name, "lm-eval's task (hub data, or a local --data-file)"))
