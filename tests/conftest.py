"""Shared fixtures: the shipped embedded teacher, loaded once per session on CPU."""

from __future__ import annotations

import pytest
import torch

from d3cli.checkpoints import LoadedModel, load_model
from d3cli.tasks import get_task


@pytest.fixture(scope="session", autouse=True)
def _deterministic_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def teacher() -> LoadedModel:
    return load_model("arith-teacher", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def arith():
    return get_task("arith")
