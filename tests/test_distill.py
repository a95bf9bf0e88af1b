"""Distillation on the shipped teacher and its own trajectories: inputs, loss, schedules,
LoRA, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from d3cli.canvas import first_stop
from d3cli.checkpoints import ModelLoadError, adapter_base_name, load_model, resolve_model_path
from d3cli.cli import app
from d3cli.distill import (
    DistillConfig,
    DistillJob,
    build_student,
    certainty_entropy,
    collate,
    load_config,
    noise_floor,
    noisy_batch,
    preset_path,
    window_size,
)
from d3cli.trajectories import load_trajectories

SHORT = ["--max-steps", "6", "--batch-size", "4", "--device", "cpu"]


def distill_cli(*arguments: str):
    return CliRunner().invoke(app, ["distill", *arguments])


def hand_built(answers, steps, start, end, t, mask_id):
    """§2.2 written out position by position for one row."""
    state = min(start + int((1 - t) * (end - start)), len(answers) - 1)
    noisy, complement, loss, complement_loss = [], [], [], []
    for position, (token, step) in enumerate(zip(answers, steps, strict=True)):
        inside = start <= position < end
        masked = inside and step > state
        noisy.append(mask_id if masked or position >= end else token)
        complement.append(mask_id if (inside and not masked) or position >= end else token)
        loss.append(masked)
        complement_loss.append(inside and not masked)
    return noisy, complement, loss, complement_loss


def legal_windows(length: int, canvas: int, size: int) -> list[tuple[int, int]]:
    last = min(length // size, (canvas - 1) // size)
    return [(j * size, canvas if j == last else j * size + size) for j in range(last + 1)]


def test_noisy_inputs_follow_the_trajectory_window_by_window(trajectories, teacher):
    records = load_trajectories(trajectories).to_list()[:6]
    batch = collate(records, teacher.spec)
    config, mask_id, seen = DistillConfig(window_schedule=(8,)), teacher.spec.mask_token_id, set()
    for seed in range(40):
        noisy = noisy_batch(config, batch["answer_ids"], batch["unmask_step"],
                            batch["answer_length"], 0.3, 8, mask_id,
                            torch.Generator().manual_seed(seed))
        for row, record in enumerate(records):
            window = int(noisy.window_start[row]), int(noisy.window_end[row])
            assert window in legal_windows(int(batch["answer_length"][row]), 64, 8)
            seen.add((row, window))
            expected = hand_built(record["answer_ids"], record["unmask_step"], *window, 0.3,
                                  mask_id)
            got = (noisy.inputs[row].tolist(), noisy.complement[row].tolist(),
                   noisy.loss_mask[row].tolist(), noisy.complement_loss_mask[row].tolist())
            assert got == expected
    assert len(seen) > 2 * len(records)  # windows are really drawn, not always the first


def test_the_trainer_feeds_the_model_exactly_those_inputs(trajectories, teacher, tmp_path):
    """Capture what the model receives inside `d3 distill`; each pass must be a prompt that
    is never masked followed by the hand-built x̃ (then x̃') of one legal window."""
    loaded = load_model("arith-teacher", device="cpu")
    captured = []
    loaded.model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.append((args[0].clone(),
                                                      kwargs["attention_mask"].clone())),
        with_kwargs=True)
    config = replace(load_config(preset_path("d3"), "d3", {}), mask_ratio=0.4, max_steps=2,
                     batch_size=4, save_steps=100)
    job = DistillJob(loaded, trajectories, config, tmp_path / "student")
    job.run(job.prepare())
    records = {tuple(r["prompt_ids"]): r for r in load_trajectories(trajectories).to_list()}
    mask_id = teacher.spec.mask_token_id
    assert len(captured) == 4  # two steps, primary and complementary pass each
    for (primary, visible), (complement, _) in zip(captured[::2], captured[1::2], strict=True):
        for row in range(primary.shape[0]):
            prompt_length = primary.shape[1] - 64
            prompt = tuple(primary[row, :prompt_length][visible[row, :prompt_length]].tolist())
            record = records[prompt]
            assert tuple(complement[row, :prompt_length][visible[row, :prompt_length]]
                         .tolist()) == prompt
            length = min(first_stop(record["answer_ids"], teacher.spec.stop_token_ids) + 1, 64)
            options = [hand_built(record["answer_ids"], record["unmask_step"], s, e, 0.4,
                                  mask_id)[:2] for s, e in legal_windows(length, 64, 8)]
            assert [primary[row, prompt_length:].tolist(),
                    complement[row, prompt_length:].tolist()] in [list(o) for o in options]


def test_entropy_term_is_zero_without_correct_predictions_and_local_in_its_gradient():
    targets = torch.tensor([[1, 2, 3, 0]])
    where = torch.tensor([[True, True, False, True]])
    logits = torch.randn(1, 4, 5)
    logits[0, :, 4] = 10  # every argmax is token 4: nothing is predicted correctly
    assert certainty_entropy(logits, targets, where, 0.5).item() == 0
    logits = torch.randn(1, 4, 5)
    logits[0, 0, 1] = logits[0, 2, 3] = 10  # correct at 0 (masked) and 2 (not in `where`)
    logits[0, 1, 0] = logits[0, 3, 1] = 10  # wrong at 1 and 3
    logits.requires_grad_(True)
    value = certainty_entropy(logits, targets, where, 0.5)
    value.backward()
    assert value.item() > 0
    touched = logits.grad.abs().sum(-1)[0] > 0
    assert touched.tolist() == [True, False, False, False]


def test_schedules_give_the_values_of_the_spec():
    config = DistillConfig()
    assert [noise_floor(config, step, 100) for step in (0, 50, 100)] == pytest.approx(
        [0.0, 0.4, 0.8])
    assert noise_floor(replace(config, noise_schedule=False), 50, 100) == 0.0
    llada = {0: 16, 0.5: 16, 1: 16, 1.5: 20, 2.5: 24, 3.5: 28, 4.2: 32, 5.9: 32, 7: 32}
    assert {epoch: window_size(config, epoch) for epoch in llada} == llada
    dream = replace(config, window_schedule=(16, 24, 32))
    assert [window_size(dream, epoch) for epoch in (0, 0.5, 1.25, 2.5)] == [16, 20, 26, 32]
    assert window_size(replace(config, window_schedule=()), 1.0) is None


def test_presets_hold_the_papers_settings():
    llada = load_config(preset_path("LLaDA"), "d3", {})
    assert (llada.lora_rank, llada.learning_rate, llada.entropy_weight, llada.loss_scale) == (
        256, 2e-5, 2.0, 0.25)
    dream = load_config(preset_path("Dream"), "dparallel", {})
    assert (dream.window_schedule, dream.mask_ratio, dream.lora_rank) == ((), 0.5, 32)
    assert load_config(preset_path("d3"), "dparallel", {"masks": "trajectory"}).masks == (
        "trajectory")


def test_lora_merged_logits_equal_the_adapter_logits():
    """In float64, so that what is compared is the merge and not float32 rounding (which
    reaches 2e-4 on logits of magnitude 26 through four layers)."""
    loaded = load_model("arith-teacher", device="cpu")
    loaded.model.double()
    config = DistillConfig(lora_rank=4, lora_alpha=8)
    student = build_student(loaded, config)
    torch.manual_seed(0)
    for name, parameter in student.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.005)  # lora_B starts at zero: make the adapter act
    ids = torch.randint(0, 21, (2, 40))
    with torch.no_grad():
        adapter = student(ids)
        merged = student.merge_and_unload()(ids)
        base = load_model("arith-teacher", device="cpu").model.double()(ids)
    assert (adapter - base).abs().max() > 1e-3
    torch.testing.assert_close(merged, adapter, atol=1e-5, rtol=0)


def test_cli_writes_a_student_that_decode_loads(trajectories, tmp_path):
    student = tmp_path / "student"
    result = distill_cli("--trajectories", str(trajectories), "--out", str(student), *SHORT)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (student / "distill_log.jsonl").read_text().splitlines()]
    assert {"ce", "ce_complement", "entropy", "loss"} <= set(log[0])
    out = tmp_path / "r.jsonl"
    decoded = CliRunner().invoke(app, ["decode", "--model", str(student), "--limit", "2",
                                       "--out", str(out), "--device", "cpu"])
    assert decoded.exit_code == 0, decoded.output
    assert len(out.read_text().splitlines()) == 2


def test_a_finished_run_shows_its_terms_keeps_no_checkpoints_and_reruns_as_a_no_op(
        trajectories, tmp_path):
    """CE, CE' and ENT show from the first step (before `logging_steps`); the checkpoints
    (optimizer state) go once the student is written; a rerun touches nothing."""
    student = tmp_path / "student"
    arguments = ["--trajectories", str(trajectories), "--out", str(student), "--max-steps",
                 "2", "--save-steps", "1", "--batch-size", "4", "--device", "cpu"]
    result = distill_cli(*arguments)
    assert result.exit_code == 0, result.output
    assert all(f"{term} " in result.output for term in ("CE", "CE'", "ENT"))
    assert json.loads((student / "distill_log.jsonl").read_text().splitlines()[0])["step"] == 1
    assert not (student / "checkpoints").exists()
    written = {path.name: path.read_bytes() for path in student.iterdir()}
    again = distill_cli(*arguments)
    assert again.exit_code == 0, again.output
    assert "already in" in again.output and "distill (d3)" not in again.output
    assert {path.name: path.read_bytes() for path in student.iterdir()} == written


def test_lora_adapter_folder_loads_as_the_merged_student(trajectories, tmp_path):
    common = ["--trajectories", str(trajectories), "--lora", "--max-steps", "2",
              "--batch-size", "4", "--device", "cpu", "--learning-rate", "0.01"]
    assert distill_cli(*common, "--out", str(tmp_path / "adapter")).exit_code == 0
    assert distill_cli(*common, "--merge", "--out", str(tmp_path / "merged")).exit_code == 0
    ids = torch.randint(0, 21, (1, 30))
    with torch.no_grad():
        adapter = load_model(str(tmp_path / "adapter"), device="cpu").model(ids)
        merged = load_model(str(tmp_path / "merged"), device="cpu").model(ids)
    torch.testing.assert_close(adapter, merged, atol=1e-5, rtol=0)


def test_a_lora_student_of_a_relative_teacher_loads_from_any_folder(trajectories, tmp_path,
                                                                   monkeypatch):
    """The adapter names a teacher beside it as ../NAME and loading resolves that against
    the adapter folder: from another folder (one with a different `teacher` in it too) the
    student is the same; a teacher that is gone is a one-line error naming the adapter."""
    shutil.copytree(resolve_model_path("arith-teacher"), tmp_path / "teacher")
    monkeypatch.chdir(tmp_path)
    result = distill_cli("--trajectories", str(trajectories), "--teacher", "teacher", "--lora",
                         "--max-steps", "1", "--batch-size", "4", "--device", "cpu",
                         "--learning-rate", "0.01", "--out", "student")
    assert result.exit_code == 0, result.output
    adapter = json.loads((tmp_path / "student" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "../teacher"
    ids = torch.randint(0, 21, (1, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        here = load_model("student", device="cpu").model(ids)
        elsewhere = tmp_path / "elsewhere"
        shutil.copytree(resolve_model_path("arith-d3"), elsewhere / "teacher")
        monkeypatch.chdir(elsewhere)
        torch.testing.assert_close(load_model(str(tmp_path / "student")).model(ids), here)
    decoded = CliRunner().invoke(app, ["decode", "--model", str(tmp_path / "student"),
                                       "--limit", "1", "--device", "cpu"])
    assert decoded.exit_code == 0, decoded.output
    (tmp_path / "teacher").rename(tmp_path / "moved")
    with pytest.raises(ModelLoadError, match=r"student/adapter_config.json: its base model "
                                             r"'../teacher' does not load") as error:
        load_model(str(tmp_path / "student"))
    assert "\n" not in str(error.value)


def test_an_adapter_names_its_base_so_it_resolves_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llada").mkdir()
    assert adapter_base_name("llada", tmp_path / "student") == "../llada"
    assert adapter_base_name("./llada", Path("runs/student")) == str(tmp_path / "llada")
    assert adapter_base_name("arith-teacher", tmp_path / "student") == "arith-teacher"
    assert adapter_base_name("GSAI-ML/LLaDA-8B-Instruct", tmp_path) == "GSAI-ML/LLaDA-8B-Instruct"


def distill_command(trajectories, out) -> list[str]:
    return [sys.executable, "-m", "d3cli", "distill", "--trajectories", str(trajectories),
            "--out", str(out), "--max-steps", "8", "--save-steps", "2", "--batch-size", "4",
            "--device", "cpu"]


def test_kill_and_resume_gives_the_uninterrupted_weights(trajectories, tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    subprocess.run(distill_command(trajectories, whole), env=environment, check=True,
                   capture_output=True)
    process = subprocess.Popen(distill_command(trajectories, resumed), env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (resumed / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists():
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint-4"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (resumed / "model.safetensors").exists(), "the kill came after the end"
    subprocess.run(distill_command(trajectories, resumed), env=environment, check=True,
                   capture_output=True)
    expected, got = (load_file(folder / "model.safetensors") for folder in (whole, resumed))
    assert expected.keys() == got.keys()
    for name in expected:  # same operations in the same order: equal to float rounding
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0)


def test_accelerate_launch_completes_a_few_steps(trajectories, tmp_path):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes",
              "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "d3cli", *distill_command(trajectories, tmp_path / "s")[3:]]
    result = subprocess.run(launch, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "s" / "model.safetensors").exists()


@pytest.mark.parametrize("change,message", [
    ("vocab", "with vocab_size 99, but the teacher 'arith-teacher' has 21"),
    ("empty", "no README.md: not a d3 trajectory folder"),
    ("corrupt", "cannot read the trajectories"),
    ("window", "window size 128 is larger than the answer length 64"),
    ("recipe", "unknown recipe 'd4'"),
])
def test_bad_input_is_one_line(trajectories, tmp_path, change, message):
    import shutil

    folder = tmp_path / "trajectories"
    shutil.copytree(trajectories, folder)
    arguments = ["--trajectories", str(folder), "--out", str(tmp_path / "s"), *SHORT]
    card = folder / "README.md"
    if change == "vocab":
        card.write_text(card.read_text().replace("vocab_size: 21", "vocab_size: 99"))
    elif change == "empty":
        shutil.rmtree(folder)
        folder.mkdir()
    elif change == "corrupt":
        next(folder.glob("*.parquet")).write_bytes(b"not parquet")
    elif change == "window":
        arguments += ["--window-schedule", "16,128"]
    else:
        arguments += ["--recipe", "d4"]
    result = distill_cli(*arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0
    assert "Traceback" not in result.output


def test_trajectories_of_another_teacher_are_named_in_a_warning(trajectories, tmp_path):
    """Same vocabulary, so the run can go on; but the student learns arith-teacher's
    answers while starting from arith-d3."""
    config = replace(load_config(preset_path("d3"), "d3", {}), max_steps=1)
    job = DistillJob(load_model("arith-d3", device="cpu"), trajectories, config, tmp_path / "s")
    job.prepare()
    assert job.notices == [f"{trajectories} was made by 'arith-teacher', not by the teacher "
                           "'arith-d3' (same vocabulary): the student learns another model's "
                           "answers"]
    same = DistillJob(load_model("arith-teacher", device="cpu"), trajectories, config,
                      tmp_path / "t")
    same.prepare()
    assert same.notices == []


def test_bf16_autocast_trains_float32_master_weights_and_the_loss_falls(trajectories,
                                                                        tmp_path):
    loaded = load_model("arith-teacher", device="cpu", dtype="float32")
    seen = []
    loaded.model.lm_head.register_forward_hook(
        lambda module, args, output: seen.append(output.dtype))
    config = replace(load_config(preset_path("d3"), "d3", {}), lora=False, max_steps=16,
                     batch_size=4, gradient_accumulation=1, learning_rate=3e-4,
                     logging_steps=1, save_steps=100)
    job = DistillJob(loaded, trajectories, config, tmp_path / "student", bf16=True)
    trainer = job.prepare()
    job.run(trainer)
    assert set(seen) == {torch.bfloat16}, "the forward did not run under bf16 autocast"
    assert {parameter.dtype for parameter in trainer.model.parameters()} == {torch.float32}
    moments = [state["exp_avg"].dtype for state in trainer.optimizer.state.values()]
    assert moments and set(moments) == {torch.float32}
    saved = load_file(tmp_path / "student" / "model.safetensors")
    assert {tensor.dtype for tensor in saved.values()} == {torch.float32}
    losses = [json.loads(line)["loss"] for line in
              (tmp_path / "student" / "distill_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 16 and sum(losses[-4:]) < sum(losses[:4])


def test_gradient_checkpointing_recomputes_layers_and_keeps_the_gradients():
    model = load_model("arith-teacher", device="cpu").model.train()
    calls = []
    model.layers[0].mlp.register_forward_pre_hook(lambda module, args: calls.append(1))
    ids = torch.randint(0, 21, (2, 24), generator=torch.Generator().manual_seed(0))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(ids).logsumexp(-1).mean().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    assert len(calls) == 1
    model.gradient_checkpointing_enable()
    checkpointed = gradients()
    assert len(calls) == 3, "the layer was not recomputed in the backward pass"
    for name, gradient in plain.items():
        torch.testing.assert_close(checkpointed[name], gradient, atol=1e-6, rtol=1e-5)


def test_a_warmup_ratio_reaches_the_scheduler(trajectories, tmp_path):
    """transformers >= 5 reads `warmup_steps` below 1 as a ratio (the floor in pyproject)."""
    loaded = load_model("arith-teacher", device="cpu")
    config = replace(load_config(preset_path("d3"), "d3", {}), max_steps=20,
                     lr_scheduler="cosine", warmup_ratio=0.25, learning_rate=1e-3)
    trainer = DistillJob(loaded, trajectories, config, tmp_path / "student").prepare()
    trainer.create_optimizer_and_scheduler(num_training_steps=20)
    rates = []
    for _ in range(8):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert rates[0] == 0.0 and rates[5] == pytest.approx(1e-3)
    assert rates[:6] == sorted(rates[:6]) and rates[7] < rates[6]


def test_lora_on_two_processes_equals_one_process_with_their_accumulation(tmp_path):
    """LLaDA-format teacher; 2 processes × accumulation 2 read the same micro-batches and
    draw the same noise as 1 process × accumulation 4, and average the same way."""
    from family_folders import write_llada

    teacher = tmp_path / "LLaDA-8B-Instruct"
    write_llada(teacher)
    trajectories = tmp_path / "trajectories"
    result = CliRunner().invoke(app, ["trajectories", "--model", str(teacher), "--out",
                                      str(trajectories), "--num", "40", "--attempts", "1",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    preset = load_config(preset_path("LLaDA"), "d3", {})
    arguments = ["--teacher", str(teacher), "--trajectories", str(trajectories),
                 "--all-answers", "--max-steps", "3", "--batch-size", "2",
                 "--learning-rate", "1e-3", "--device", "cpu"]
    students, logs = {}, {}
    for processes, accumulation in ((1, 4), (2, 2)):
        config = tmp_path / f"accumulation{accumulation}.yaml"
        settings = asdict(replace(preset, gradient_accumulation=accumulation, logging_steps=1))
        settings = {key: list(value) if isinstance(value, tuple) else value
                    for key, value in settings.items() if key != "recipe"}
        config.write_text(yaml.safe_dump({"d3": settings}))
        out = tmp_path / f"student{processes}"
        command = ["-m", "d3cli", "distill", *arguments, "--config", str(config), "--out",
                   str(out)]
        if processes > 1:  # accelerate launch --cpu starts one process; torchrun starts 2
            command = ["-m", "torch.distributed.run", "--nproc-per-node", "2",
                       "--master-port", str(29600 + os.getpid() % 1000), *command]
        run = subprocess.run([sys.executable, *command], capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert run.returncode == 0, run.stderr[-3000:]
        students[processes] = load_file(out / "adapter_model.safetensors")
        logs[processes] = [json.loads(line) for line in
                           (out / "distill_log.jsonl").read_text().splitlines()]
    assert students[1].keys() == students[2].keys()
    for one, two in zip(logs[1], logs[2], strict=True):  # CE, CE', ENT over every process
        for key in ("loss", "ce", "ce_complement", "entropy"):
            if key in one:
                assert two[key] == pytest.approx(one[key], rel=1e-5), key
    trained = [weight for name, weight in students[1].items() if "lora_B" in name]
    assert trained and all(weight.abs().max() > 1e-4 for weight in trained)  # B starts at 0
    for name, weight in students[1].items():  # equal up to the order of float sums
        torch.testing.assert_close(students[2][name], weight, atol=1e-5, rtol=1e-4)
