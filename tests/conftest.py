"""Shared fixtures: the shipped embedded teacher, loaded once per session on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from d3cli.checkpoints import LoadedModel, load_model, resolve_model_path
from d3cli.tasks import get_task
from d3cli.trajectories import TrajectoryRun, teacher_rollouts


@pytest.fixture(scope="session", autouse=True)
def _deterministic_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """For tiny tensors: one thread keeps the shared machine free."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def teacher() -> LoadedModel:
    return load_model("arith-teacher", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def arith():
    return get_task("arith")


@pytest.fixture(scope="session")
def rollouts(teacher, arith) -> list[dict]:
    """Greedy trajectory records of five training prompts (64-token answers)."""
    run = TrajectoryRun(teacher="arith-teacher", source="arith", num_prompts=0, gen_length=64,
                        block_size=teacher.spec.block_size, attempts=1, keep_incorrect=True,
                        chunk_size=8, seed=0, vocab_size=teacher.model.config.vocab_size,
                        mask_token_id=teacher.spec.mask_token_id)
    return teacher_rollouts(teacher, arith, arith.train_examples(5), run, 5)


@pytest.fixture(scope="session")
def trajectories(tmp_path_factory) -> Path:
    """`d3 trajectories` of the shipped teacher on 12 training prompts (read-only: copy it
    to change it)."""
    from typer.testing import CliRunner

    from d3cli.cli import app

    folder = tmp_path_factory.mktemp("trajectories")
    result = CliRunner().invoke(app, ["trajectories", "--out", str(folder), "--num", "12",
                                      "--attempts", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def model_without_mask_token(tmp_path: Path) -> Path:
    """A copy of the shipped teacher whose tokenizer and config name no mask token."""
    folder = tmp_path / "no-mask"
    shutil.copytree(resolve_model_path("arith-teacher"), folder)
    for name in ("tokenizer_config.json", "config.json"):
        settings = json.loads((folder / name).read_text())
        settings.pop("mask_token", None)
        settings["mask_token_id"] = None
        (folder / name).write_text(json.dumps(settings))
    return folder
