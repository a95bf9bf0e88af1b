"""`d3 pretrain` on a micro config: the loss falls, and a kill -9 loses nothing on resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from d3cli.cli import app
from d3cli.pretrain import EMA_FILE, LOG, PretrainConfig, Pretrainer, RunSchedule
from d3cli.training import CHECKPOINTS, RunMismatchError, last_complete_checkpoint

MICRO = PretrainConfig(batch_size=8, hidden_size=32, intermediate_size=64, num_layers=1,
                       num_heads=2, warmup_steps=5, learning_rate=3e-3)
MICRO_FLAGS = ["--batch-size", "8", "--hidden-size", "32", "--intermediate-size", "64",
               "--layers", "1", "--heads", "2", "--warmup-steps", "5", "--learning-rate", "3e-3",
               "--device", "cpu", "--eval-prompts", "4"]


def micro_schedule(steps: int) -> RunSchedule:
    return RunSchedule(steps=steps, save_every=10, eval_every=10_000, eval_prompts=4,
                       log_every=1)


def logged_losses(out: Path) -> list[float]:
    records = [json.loads(line) for line in (out / LOG).read_text().splitlines()]
    return [record["loss"] for record in records if "loss" in record]


def last_checkpoint(out: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """Step and weights of the run's last whole checkpoint."""
    folder = Path(last_complete_checkpoint(out / CHECKPOINTS, [EMA_FILE]))
    return int(folder.name.split("-")[-1]), load_file(folder / "model.safetensors")


def test_pretrain_lowers_the_loss(tmp_path):
    Pretrainer(MICRO, tmp_path, micro_schedule(80)).run()
    losses = logged_losses(tmp_path)
    assert len(losses) == 80
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


@pytest.fixture(scope="module")
def short_run(tmp_path_factory) -> Pretrainer:
    """A finished 3-step run of MICRO (its folder is only read by the tests below)."""
    run = Pretrainer(MICRO, tmp_path_factory.mktemp("short"), micro_schedule(3))
    run.run()
    return run


def test_pretrain_exports_a_loadable_model(short_run):
    from d3cli.checkpoints import load_model

    model = short_run.out / "model"
    loaded = load_model(str(model), device="cpu")
    assert loaded.spec.mask_token_id == short_run.tokenizer.mask_token_id
    umask = os.umask(0)
    os.umask(umask)
    for path in model.iterdir():  # as readable as any file the user makes
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert loaded.spec.block_size == MICRO.block_size


def test_pretrain_resumes_after_kill_9_as_if_never_stopped(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "d3cli", "pretrain", "--out", str(out), "--save-every", "10",
               "--eval-every", "10000", *MICRO_FLAGS]
    process = subprocess.Popen([*command, "--steps", "100000"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not last_complete_checkpoint(out / CHECKPOINTS, [EMA_FILE]) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved_step, _ = last_checkpoint(out)
    assert saved_step >= 10 and saved_step % 10 == 0, saved_step

    target = saved_step + 15  # past the kill point, and not on a checkpoint boundary
    subprocess.run([*command, "--steps", str(target)], check=True, capture_output=True)
    resumed_step, resumed = last_checkpoint(out)
    assert resumed_step == target
    straight = Pretrainer(MICRO, tmp_path / "straight", micro_schedule(target))
    straight.run()
    for name, weight in straight.model.state_dict().items():
        torch.testing.assert_close(resumed[name], weight, atol=1e-6, rtol=1e-5)
    exported, ema = (load_file(folder / "model.safetensors") for folder in
                     (out / "model", tmp_path / "straight" / "model"))
    for name, weight in ema.items():  # the EMA went through the resume too
        torch.testing.assert_close(exported[name], weight, atol=1e-6, rtol=1e-5)


def test_sigterm_saves_the_current_step_and_exits_as_interrupted(tmp_path):
    command = [sys.executable, "-m", "d3cli", "pretrain", "--out", str(tmp_path),
               "--save-every", "1000", "--eval-every", "10000", "--steps", "100000",
               *MICRO_FLAGS]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    log = tmp_path / LOG
    deadline = time.monotonic() + 120
    while not log.exists() and time.monotonic() < deadline:  # first log line: step 50
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    saved_step, _ = last_checkpoint(tmp_path)
    assert saved_step >= 50  # not a periodic save: those come every 1,000 steps
    assert f"saved step {saved_step}" in " ".join(stderr.split())


def test_resume_refuses_a_folder_trained_with_other_settings(short_run):
    other = PretrainConfig(**{**MICRO.__dict__, "hidden_size": 48})
    with pytest.raises(RunMismatchError, match="hidden_size"):
        Pretrainer(other, short_run.out, micro_schedule(4))


def test_pretrain_cli_reports_a_mismatch_in_one_line(short_run):
    flags = [*MICRO_FLAGS]
    flags[flags.index("--hidden-size") + 1] = "48"
    result = CliRunner().invoke(app, ["pretrain", "--out", str(short_run.out), "--steps", "4",
                                      *flags])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0 and "hidden_size" in result.stderr
    assert "Traceback" not in result.stderr
