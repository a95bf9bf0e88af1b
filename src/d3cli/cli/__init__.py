"""The `d3` command line: one module per command, each its options, one call into its job
(`d3cli.jobs`) and the rendering of what came back; this module builds the app. Usage
errors and the commands' own errors are one line (`error: ...`, exit 2)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import aup, decode, distill, models, pretrain, tasks, trajectories
from .shared import OneLineErrors

HELP = """Make diffusion language models (LLaDA, Dream and d3's embedded models) decode
many tokens per forward without losing accuracy.

\b
  d3 decode        decode a task's prompts; one JSON line per sample
  d3 aup           Accuracy Under Parallelism of decode results
  d3 trajectories  record a teacher's decoding order (training data)
  d3 distill       train a student that decodes in parallel
  d3 pretrain      train a small dLLM from scratch
  d3 models, d3 tasks   what is built in

Every command defaults to the embedded models; `d3 COMMAND --help` has the details."""

app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None, help=HELP)


def show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"d3 {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads for torch (default: torch's; under a launcher, the cores "
                    "shared among the node's processes).")] = None,
    version: Annotated[bool, typer.Option(
        "--version", callback=show_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    import os
    import signal

    import torch
    from transformers.utils import logging as transformers_logging

    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if threads is None and local_processes > 1:
        threads = max(1, (os.cpu_count() or 1) // local_processes)
    if threads is not None:
        torch.set_num_threads(threads)

    transformers_logging.disable_progress_bar()  # d3 draws its own progress
    # `kill` (SIGTERM) stops a command as Ctrl-C does, so long runs save what they have
    # (a background job ignores SIGINT, which leaves SIGTERM as the way to stop it).
    signal.signal(signal.SIGTERM, signal.default_int_handler)


app.callback()(main)
for command in (pretrain.pretrain, decode.decode, trajectories.trajectories, distill.distill,
                aup.aup, models.models, tasks.tasks):
    app.command()(command)
