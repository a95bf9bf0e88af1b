"""What the commands share: option types, checks, the one error path, progress and output.

An input error of the library (a `ValueError`: bad option values together, a file, a task
or a model that cannot be used) is one line on stderr, `error: ...`, exit 2, as a usage
error is; an interrupted run says what it kept and exits 130.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

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

Result = TypeVar("Result")

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


def fail(message: str) -> typer.Exit:
    """Print a one-line error (never wrapped) and return the exit to raise (status 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def warn(message: str) -> None:
    """Print a one-line warning (never wrapped): the run goes on, but not quite as asked."""
    typer.echo(f"warning: {message}", err=True)


def checked(make: Callable[..., Result], *args: Any) -> Result:
    """`make(*args)`, the step that checks a command's inputs before any work; its input
    errors (`ValueError` and its kinds) become the one-line error."""
    try:
        return make(*args)
    except ValueError as error:
        raise fail(str(error)) from None


def interrupted(message: str) -> typer.Exit:
    """Print `interrupted: message` (what the run kept) and return the exit to raise (130)."""
    console.print(f"interrupted: {message}")
    return typer.Exit(130)


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


DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.",
                                        callback=device_option)]
DtypeOpt = Annotated[str, typer.Option(callback=one_of(*DTYPES),
                                       help="float32, bfloat16, float16 or auto.")]
SeedOpt = Annotated[int, typer.Option()]
BlockSizeOpt = Annotated[int | None, typer.Option(min=1, help="Default: the model's.")]
GenLengthOpt = Annotated[int | None, typer.Option(min=1, help="Default: the task's.")]


def listing_entry(name: str, text: str) -> str:
    """One entry of `d3 models` or `d3 tasks`: `name: text`, whole, wrapped at 80 columns
    with its later lines indented."""
    return textwrap.fill(f"{name}: {' '.join(text.split())}", width=80,
                         subsequent_indent="  ", break_on_hyphens=False)


def progress_bar(*fields: str) -> Progress:
    """A rich progress bar with extra text columns read from the task's fields."""
    columns = [TextColumn(f"{{task.fields[{name}]}}") for name in fields]
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    *columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console)


def train(trainer: Any, description: str, total: int | None, run: Callable[[], Result],
          terms: Sequence[tuple[str, str]] = (("loss", "loss"),)) -> Result | None:
    """`run()` a Trainer under a progress bar of its steps and logged `terms`; None when
    Ctrl-C interrupts it."""
    from ..training import RichProgress

    try:
        with progress_bar("loss") as bar:
            job = bar.add_task(description, total=total, loss="")
            trainer.add_callback(RichProgress(bar, job, terms))
            return run()
    except KeyboardInterrupt:
        return None

