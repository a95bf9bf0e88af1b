"""Targets from a dataset, masked in a trajectory's order: the join, response-relative
alignment, and the states past the teacher's canvas (LLaDA: MASK, Dream: EOS)."""

from __future__ import annotations

import json
import math
import random

import datasets
import pytest
import torch

from d3cli.checkpoints import encode_prompt, load_model
from d3cli.distill import DistillConfig, DistillJob, decode_order, noisy_batch
from d3cli.targets import Targets, TargetsError, join_targets
from d3cli.training import RunMismatchError
from d3cli.trajectories import (
    DECODED,
    NEVER,
    TrajectoryRun,
    features,
    prepare_folder,
    write_chunk,
)

CANVAS = 64  # the arith teacher's answer canvas


def trajectory(index: int, canvas: int, correct: bool = True, seed: int = 0) -> dict:
    """A one-token-per-step trajectory record of row `index` in a random order."""
    steps = list(range(canvas))
    random.Random(seed + index).shuffle(steps)
    return {"id": f"set-{index}", "task": "set", "teacher": "t", "prompt_ids": [4, 5],
            "answer_ids": [6] * canvas, "unmask_step": steps, "block_size": 8,
            "num_forwards": canvas, "correct": correct, "text": "", "attempt": None,
            "temperature": None}


def trajectory_set(records: list[dict]):
    return datasets.Dataset.from_list(records, features=features())


def write_rows(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


ROWS = [{"question": "1 + 2 ?", "llm_response": "3 #### 3"},
        {"question": "2 + 2 ?", "llm_response": "4"},
        {"question": "5 + 5 ?", "llm_response": "1 0"},
        {"question": "9 - 9 ?", "llm_response": "0 ; 0"}]


def test_each_row_takes_the_trajectory_of_its_index(teacher, tmp_path):
    records = [trajectory(index, CANVAS, correct=index != 2) for index in (0, 2, 3)]
    targets = Targets(write_rows(tmp_path / "distill.jsonl", ROWS))
    joined = join_targets(targets, trajectory_set(records), teacher, only_correct=False)
    assert len(joined) == 3 and joined.unmatched == 1  # row 1 has no trajectory
    eos = teacher.tokenizer.eos_token_id
    for got, row, record in zip(joined, [ROWS[0], ROWS[2], ROWS[3]], records, strict=True):
        response = teacher.tokenizer(row["llm_response"], add_special_tokens=False).input_ids
        assert got["prompt_ids"] == encode_prompt(teacher, row["question"])
        assert got["answer_ids"] == response + [eos] * (CANVAS - len(response))
        assert got["unmask_step"] == record["unmask_step"]  # response-relative, whole
        assert got["correct"] == record["correct"]
    correct_only = join_targets(targets, trajectory_set(records), teacher, only_correct=True)
    assert [got["id"] for got in correct_only] == ["set-0", "set-3"]


def test_an_index_field_names_the_trajectory(teacher, tmp_path):
    rows = [dict(row, sample_idx=7 - position) for position, row in enumerate(ROWS)]
    targets = Targets(write_rows(tmp_path / "distill.jsonl", rows), length=4)
    joined = join_targets(targets, trajectory_set([trajectory(5, CANVAS)]), teacher, True)
    assert len(joined) == 1 and joined[0]["id"] == "set-5"
    ten = teacher.tokenizer("1 0", add_special_tokens=False).input_ids
    assert joined[0]["answer_ids"][:2] == ten
    assert len(joined[0]["answer_ids"]) == len(joined[0]["unmask_step"]) == 4  # cut


def test_targets_without_any_trajectory_are_refused(teacher, tmp_path):
    targets = Targets(write_rows(tmp_path / "distill.jsonl", ROWS))
    with pytest.raises(TargetsError, match="no row of .* has a trajectory"):
        join_targets(targets, trajectory_set([trajectory(9, CANVAS)]), teacher, False)
    with pytest.raises(TargetsError, match="two trajectories are of row 1"):
        join_targets(targets, trajectory_set([trajectory(1, CANVAS)] * 2), teacher, False)
    with pytest.raises(ValueError, match="lacks the field 'answer'"):
        join_targets(Targets(targets.dataset, response_field="answer"),
                     trajectory_set([trajectory(1, CANVAS)]), teacher, False)


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    import family_folders

    folder = tmp_path_factory.mktemp("families")
    family_folders.write_llada(folder / "llada")
    family_folders.write_dream(folder / "dream")
    return {name: load_model(str(folder / name), device="cpu") for name in ("llada", "dream")}


@pytest.mark.parametrize("family, past", [("llada", NEVER), ("dream", DECODED)])
def test_past_the_teachers_canvas_llada_stays_masked_and_dream_is_decoded(
        family_models, tmp_path, family, past):
    loaded = family_models[family]
    rows = [{"question": "add", "llm_response": "a long answer that runs past eight tokens"}]
    targets = Targets(write_rows(tmp_path / "distill.jsonl", rows), length=12)
    record = trajectory(0, 8)
    got = join_targets(targets, trajectory_set([record]), loaded, True)[0]
    response = loaded.tokenizer(rows[0]["llm_response"], add_special_tokens=False).input_ids
    assert len(response) > 12
    assert got["prompt_ids"] == encode_prompt(loaded, "add")  # under the chat template
    assert got["answer_ids"] == response[:12]
    assert got["unmask_step"] == record["unmask_step"] + [past] * 4


def test_special_steps_take_no_place_in_the_decoding_order():
    steps = torch.tensor([[2, DECODED, 0, NEVER, 1, DECODED]])
    assert decode_order(steps).tolist() == [[2, -1, 0, NEVER, 1, -1]]


def reference_mask(steps: list[int], past: str, canvas: int, start: int, end: int,
                   t: float) -> list[bool]:
    """The reference trainer's window mask: the teacher states padded to `canvas` (LLaDA
    with MASK, Dream with EOS), state min(start + ⌊(1 − t)·(end − start)⌋, n − 1), read at
    [start, end) response-relative."""
    index = min(start + math.floor((1 - t) * (end - start)), len(steps) - 1)
    state = [step > index for step in steps] + [past == "mask"] * (canvas - len(steps))
    return state[start:end]


@pytest.mark.parametrize("family, past", [("mask", NEVER), ("eos", DECODED)])
def test_windows_past_the_teacher_canvas_mask_as_the_reference_pads(family, past):
    teacher_canvas, canvas, config = 8, 12, DistillConfig(window_schedule=(4,))
    order = list(range(teacher_canvas))
    random.Random(1).shuffle(order)
    steps = torch.tensor([order + [past] * (canvas - teacher_canvas)])
    answers = torch.arange(canvas)[None] + 10
    windows = set()
    for seed in range(30):
        for t in (0.0, 0.3, 0.8):
            noisy = noisy_batch(config, answers, steps, torch.tensor([canvas]), t, 4, 99,
                                torch.Generator().manual_seed(seed))
            start, end = int(noisy.window_start[0]), int(noisy.window_end[0])
            windows.add(start)
            expected = reference_mask(order, family, canvas, start, end, t)
            assert noisy.loss_mask[0, start:end].tolist() == expected
    assert windows == {0, 4, 8}


def hand_made_folder(folder, teacher, indices) -> None:
    prepare_folder(folder, TrajectoryRun(
        teacher="arith-teacher", source="set", num_prompts=len(indices), gen_length=CANVAS,
        block_size=16, attempts=1, keep_incorrect=True, chunk_size=len(indices), seed=0,
        vocab_size=teacher.model.config.vocab_size, mask_token_id=teacher.spec.mask_token_id))
    write_chunk(folder, (0, len(indices)), [trajectory(index, CANVAS) for index in indices])


def test_distill_trains_on_the_targets_and_resumes_only_with_them(tmp_path):
    loaded = load_model("arith-teacher", device="cpu")
    hand_made_folder(tmp_path / "trajectories", loaded, [0, 1, 2, 3])
    targets = Targets(write_rows(tmp_path / "distill.jsonl", ROWS))
    config = DistillConfig(window_schedule=(8,), max_steps=1, batch_size=2,
                           gradient_accumulation=1, lora=False, save_steps=100)
    job = DistillJob(loaded, tmp_path / "trajectories", config, tmp_path / "student",
                     targets=targets)
    trainer = job.prepare()
    assert len(trainer.train_dataset) == 4
    assert job.run(trainer) == tmp_path / "student"
    recorded = json.loads((tmp_path / "student" / "distill.json").read_text())
    assert recorded["targets"]["dataset"] == targets.dataset
    with pytest.raises(RunMismatchError, match="targets"):
        DistillJob(loaded, tmp_path / "trajectories", config, tmp_path / "student").prepare()
