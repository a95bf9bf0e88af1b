"""`d3 pretrain` on a micro config: the loss falls, and a kill -9 loses nothing on resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from d3cli.pretrain import CHECKPOINT, ConfigMismatchError, PretrainConfig, Pretrainer, RunSchedule

MICRO = PretrainConfig(batch_size=8, hidden_size=32, intermediate_size=64, num_layers=1,
                       num_heads=2, warmup_steps=5, learning_rate=3e-3)
MICRO_FLAGS = ["--batch-size", "8", "--hidden-size", "32", "--intermediate-size", "64",
               "--layers", "1", "--heads", "2", "--warmup-steps", "5", "--learning-rate", "3e-3",
               "--device", "cpu", "--eval-prompts", "4"]


def micro_schedule(steps: int) -> RunSchedule:
    return RunSchedule(steps=steps, save_every=10, eval_every=10_000, eval_prompts=4)


def test_pretrain_lowers_the_loss(tmp_path):
    losses = [record["loss"] for record in Pretrainer(MICRO, tmp_path, micro_schedule(80)).run()]
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10


def test_pretrain_exports_a_loadable_model(tmp_path):
    from d3cli.checkpoints import load_model

    trainer = Pretrainer(MICRO, tmp_path, micro_schedule(3))
    list(trainer.run())
    loaded = load_model(str(tmp_path / "model"), device="cpu")
    assert loaded.spec.mask_token_id == trainer.tokenizer.mask_token_id
    assert loaded.spec.block_size == MICRO.block_size


def test_pretrain_resumes_after_kill_9_as_if_never_stopped(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "d3cli", "pretrain", "--out", str(out), "--save-every", "10",
               "--eval-every", "10000", *MICRO_FLAGS]
    process = subprocess.Popen([*command, "--steps", "100000"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved_step = torch.load(out / CHECKPOINT, weights_only=False)["step"]
    assert saved_step >= 10 and saved_step % 10 == 0, saved_step

    target = saved_step + 15  # past the kill point, and not on a checkpoint boundary
    subprocess.run([*command, "--steps", str(target)], check=True, capture_output=True)
    resumed = torch.load(out / CHECKPOINT, weights_only=False)
    assert resumed["step"] == target
    straight = Pretrainer(MICRO, tmp_path / "straight", micro_schedule(target))
    list(straight.run())
    for name, weight in straight.model.state_dict().items():
        torch.testing.assert_close(resumed["model"][name], weight, atol=1e-6, rtol=1e-5)


def test_sigterm_saves_the_current_step_and_exits_as_interrupted(tmp_path):
    command = [sys.executable, "-m", "d3cli", "pretrain", "--out", str(tmp_path),
               "--save-every", "1000", "--eval-every", "10000", "--steps", "100000",
               *MICRO_FLAGS]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    log = tmp_path / "train_log.jsonl"
    deadline = time.monotonic() + 120
    while not log.exists() and time.monotonic() < deadline:  # first log line: step 50
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    saved_step = torch.load(tmp_path / CHECKPOINT, weights_only=False)["step"]
    assert saved_step >= 50  # not a periodic save: those come every 1,000 steps
    assert f"saved step {saved_step}" in " ".join(stderr.split())


def test_resume_refuses_a_folder_trained_with_other_settings(tmp_path):
    list(Pretrainer(MICRO, tmp_path, micro_schedule(2)).run())
    other = PretrainConfig(**{**MICRO.__dict__, "hidden_size": 48})
    with pytest.raises(ConfigMismatchError, match="hidden_size"):
        Pretrainer(other, tmp_path, micro_schedule(4))


def test_pretrain_cli_reports_a_mismatch_in_one_line(tmp_path):
    list(Pretrainer(MICRO, Path(tmp_path), micro_schedule(2)).run())
    flags = [*MICRO_FLAGS]
    flags[flags.index("--hidden-size") + 1] = "48"
    result = subprocess.run([sys.executable, "-m", "d3cli", "pretrain", "--out", str(tmp_path),
                             "--steps", "4", *flags], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "hidden_size" in result.stderr
    assert "Traceback" not in result.stderr
