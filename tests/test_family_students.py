"""Students of LLaDA- and Dream-format teachers: saved in the teacher's own format (its
config.json, its parameter names and shapes, its code and tokenizer files; d3 decodes the
saved folder exactly as the student it trained), and made without alarming messages."""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from family_folders import read_shards, write_dream, write_llada
from safetensors.torch import load_file
from typer.testing import CliRunner

from d3cli.checkpoints import load_model
from d3cli.cli import app
from d3cli.decode import DecodeOptions
from d3cli.distill import DistillJob, load_config, preset_path
from d3cli.families import DREAM, LLADA
from d3cli.runner import decode_examples
from d3cli.tasks import get_task

WRITERS = {"llada": write_llada, "dream": write_dream}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each family's tiny teacher folder and 4 of its arith trajectories."""
    root = tmp_path_factory.mktemp("teachers")
    folders = {}
    for family, write in WRITERS.items():
        write(root / family)
        trajectories = root / f"{family}-trajectories"
        result = CliRunner().invoke(app, ["trajectories", "--model", str(root / family),
                                          "--out", str(trajectories), "--num", "4",
                                          "--attempts", "1", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        folders[family] = root / family, trajectories
    return folders


def checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    return read_shards(folder)


@pytest.mark.parametrize(("family", "lora"), [("llada", False), ("dream", True)])
def test_a_student_is_saved_in_its_teachers_format(teachers, tmp_path, family, lora):
    """LLaDA: a full fine-tune; Dream: LoRA merged (--merge)."""
    teacher, trajectories = teachers[family]
    loaded = load_model(str(teacher), device="cpu")
    config = replace(load_config(preset_path(loaded.family), "d3", {}), lora=lora,
                     lora_rank=4, lora_alpha=8, max_steps=1, batch_size=2,
                     only_correct=False, learning_rate=1e-2, warmup_ratio=0.0,
                     save_steps=100)
    out = tmp_path / "student"
    job = DistillJob(loaded, trajectories, config, out, merge=True)
    trainer = job.prepare()
    assert job.run(trainer) == out
    trained = trainer.model.merge_and_unload() if lora else trainer.model
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (teacher / "config.json").read_text())
    saved, original = checkpoint_tensors(out), read_shards(teacher)
    assert {name: tensor.shape for name, tensor in saved.items()} == {
        name: tensor.shape for name, tensor in original.items()}
    assert any(not torch.equal(saved[name], original[name]) for name in saved)  # trained
    code = sorted(path.name for path in teacher.glob("*.py"))
    assert code and sorted(path.name for path in out.glob("*.py")) == code
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                 "special_tokens_map.json", "generation_config.json"):
        if (teacher / name).is_file():
            assert (out / name).read_bytes() == (teacher / name).read_bytes(), name
    assert (out / "distill.json").is_file() and (out / "README.md").is_file()
    student = load_model(str(out), device="cpu")
    assert student.family == loaded.family
    task = get_task("arith")
    options = DecodeOptions(gen_length=32, block_size=32, threshold=0.5)
    examples = task.eval_examples(3)
    in_memory = replace(loaded, model=trained.eval())
    assert [r.output for r in decode_examples(student, task, examples, "threshold", options)] \
        == [r.output for r in decode_examples(in_memory, task, examples, "threshold", options)]


@pytest.mark.parametrize("family", [LLADA, DREAM])
def test_checkpoint_names_invert_the_weight_name_mapping(family):
    from family_folders import dream_shapes, llada_shapes

    names = (llada_shapes({"d_model": 32, "mlp_hidden_size": 48, "embedding_size": 320,
                           "n_heads": 4, "n_kv_heads": 4, "weight_tying": False,
                           "n_layers": 2}) if family is LLADA else
             dream_shapes({"hidden_size": 32, "intermediate_size": 48, "vocab_size": 320,
                           "num_attention_heads": 4, "num_key_value_heads": 2,
                           "num_hidden_layers": 2}))
    for name in names:
        assert family.checkpoint_name(family.rename(name)) == name


# Known-harmless messages that LLaDA and Dream runs used to print (transformers, peft).
ALARMS = ("to instantiate a model of type", "rope_scaling", "generation flags are not valid")


@contextmanager
def messages():
    """Everything transformers logs and every warning raised inside the block."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    library = logging.getLogger("transformers")
    library.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            yield seen
    finally:
        library.removeHandler(handler)
    seen.extend(str(warning.message) for warning in raised)


@pytest.mark.parametrize("family", sorted(WRITERS))
def test_a_lora_distill_of_each_family_prints_no_alarm(teachers, tmp_path, capfd, family):
    """Loading the teacher and a LoRA run that saves a checkpoint and the adapter."""
    teacher, trajectories = teachers[family]
    with messages() as seen:
        loaded = load_model(str(teacher), device="cpu")
        config = replace(load_config(preset_path(loaded.family), "d3", {}), lora_rank=4,
                         lora_alpha=8, max_steps=1, save_steps=1, batch_size=2,
                         only_correct=False)
        job = DistillJob(loaded, trajectories, config, tmp_path / "student")
        assert job.run(job.prepare()) == tmp_path / "student"
    printed = [*seen, *capfd.readouterr().err.splitlines()]
    assert not [line for line in printed if any(alarm in line for alarm in ALARMS)]
