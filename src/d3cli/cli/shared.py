"""What the commands share: the one-line error path, option checks, progress bars."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperGroup

console = Console(stderr=True)


class OneLineErrors(TyperGroup):
    """Every usage error (a bad option value, an unknown option) as one line on stderr,
    `error: ...`, exit 2, like the commands' own errors."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except (typer.Abort, click.exceptions.Abort):
            if not standalone_mode:
                raise
            sys.exit(130)
        except (typer.TyperException, click.ClickException) as error:  # typer vendors click
            if not standalone_mode:
                raise
            message = getattr(error, "format_message", error.__str__)()
            typer.echo(f"error: {' '.join(message.split())}", err=True)
            sys.exit(getattr(error, "exit_code", 2))
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result



DTYPES = ("float32", "bfloat16", "float16", "auto")


def one_of(*values: str):
    """An option callback that accepts only `values` (a one-line error otherwise)."""
    def check(value: str) -> str:
        if value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}")
        return value
    return check


def device_option(device: str) -> str:
    """--device, checked against what this machine has (a one-line error otherwise)."""
    from ..checkpoints import ModelLoadError, pick_device

    try:
        pick_device(device)
    except ModelLoadError as error:
        raise typer.BadParameter(str(error)) from None
    return device


def check_writable(path: Path, kind: str) -> None:
    """Stop now, with one line and nothing created, if `path` (a "file" or a "folder")
    cannot be written."""
    import os

    if path.exists():
        if path.is_dir() != (kind == "folder"):
            raise fail(f"{path} is a {'folder' if path.is_dir() else 'file'}; --out must be "
                       f"a {kind}")
        if not os.access(path, os.W_OK):
            raise fail(f"{path} is not writable")
        return
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise fail(f"cannot create {path}: {ancestor} is not a writable folder")


def fail(message: str) -> typer.Exit:
    """Print a one-line error (never wrapped) and return the exit to raise (status 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def progress_bar(*fields: str) -> Progress:
    """A rich progress bar with extra text columns read from the task's fields."""
    columns = [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)
