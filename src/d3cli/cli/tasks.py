"""`d3 tasks`: the built-in tasks."""

from __future__ import annotations

import typer


def tasks() -> None:
    """List the tasks of --task: the embedded one, and the lm-eval tasks of the d3LLM
    paper (any lm-eval generate-until task or group works; `lm_eval ls tasks` lists
    them)."""
    from ..tasks import EMBEDDED, REFERENCE_TASKS

    for name, task in EMBEDDED.items():
        typer.echo(f"{name}: {(task.__doc__ or '').strip().splitlines()[0]}")
    for name in REFERENCE_TASKS:
        typer.echo(f"{name}: lm-eval's task (hub data, or a local --data-file)")
