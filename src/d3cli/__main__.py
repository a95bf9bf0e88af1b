"""`python -m d3cli` runs the `d3` command line."""

from .cli import app

app()
