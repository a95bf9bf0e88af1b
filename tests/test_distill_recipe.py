"""The d3 recipe clause by clause (docs/algorithms.md, "Distillation"), each on a hand-made
example whose expectation is worked out by hand in the test."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from d3cli.checkpoints import load_model
from d3cli.distill import (
    DistillConfig,
    DistillJob,
    NoisyBatch,
    collate,
    decode_order,
    draw_windows,
    load_config,
    noise_floor,
    noisy_batch,
    preset_path,
    recipe_loss,
    window_mask_fraction,
)

MASK = 9
ANSWER = torch.tensor([[10, 11, 12, 13, 14, 15, 16, 17]])
# The teacher decoded position 1 first, then 3, 5, 0, 4, 2, 7, 6.
STEPS = torch.tensor([[3, 0, 5, 1, 4, 2, 7, 6]])


def trajectory_masks(t: float, size: int, start: int) -> NoisyBatch:
    """noisy_batch with the window forced to start at `start` (one legal draw)."""
    config = DistillConfig(window_span="canvas")
    for seed in range(200):
        noisy = noisy_batch(config, ANSWER, STEPS, torch.tensor([8]), t, size, MASK,
                            torch.Generator().manual_seed(seed))
        if int(noisy.window_start[0]) == start:
            return noisy
    raise AssertionError(f"no draw starts a window at {start}")


def test_the_state_masks_what_the_teacher_decodes_last_in_the_window():
    # Window [4, 8) at t = 0.5: state 4 + floor(0.5 · 4) = 6, so positions decoded after
    # step 6 are masked: only position 6 (step 7). A quarter of the window, not a half.
    noisy = trajectory_masks(0.5, 4, 4)
    assert noisy.loss_mask[0].tolist() == [False] * 6 + [True, False]
    assert noisy.inputs[0].tolist() == [10, 11, 12, 13, 14, 15, MASK, 17]
    assert window_mask_fraction(noisy).tolist() == [0.25]
    # t = 0.8: state 4 + floor(0.2 · 4) = 4; the window's steps are 4, 2, 7, 6, so
    # positions 6 and 7 are masked.
    noisy = trajectory_masks(0.8, 4, 4)
    assert noisy.loss_mask[0].tolist() == [False] * 6 + [True, True]
    # Window [0, 4) at t = 0.5: state 0 + 2 = 2; masked: positions 0 (step 3), 2 (step 5).
    noisy = trajectory_masks(0.5, 4, 0)
    assert noisy.loss_mask[0].tolist() == [True, False, True, False] + [False] * 4
    assert noisy.inputs[0].tolist() == [MASK, 11, MASK, 13] + [MASK] * 4  # after: all masked
    assert noisy.complement[0].tolist() == [10, MASK, 12, MASK] + [MASK] * 4


def test_a_state_past_the_last_is_the_last():
    # t = 0 at window [4, 8): state 4 + 4 = 8 > 7, clamped to the last state (all decoded).
    noisy = trajectory_masks(0.0, 4, 4)
    assert not noisy.loss_mask.any()
    assert noisy.complement_loss_mask[0].tolist() == [False] * 4 + [True] * 4


def test_several_commits_per_forward_become_a_one_token_order():
    steps = torch.tensor([[1, 0, 1, 0, 2, 2]])
    assert decode_order(steps).tolist() == [[2, 0, 3, 1, 4, 5]]
    assert decode_order(STEPS).tolist() == STEPS.tolist()  # one per forward: unchanged


def test_positions_are_answer_relative_whatever_the_prompt_length(teacher):
    records = [{"prompt_ids": list(range(3, 3 + length)), "answer_ids": ANSWER[0].tolist(),
                "unmask_step": STEPS[0].tolist()} for length in (3, 7)]
    batch = collate(records, teacher.spec)
    assert batch["prompt_ids"].shape == (2, 7)
    assert batch["prompt_visible"].sum(1).tolist() == [3, 7]  # left-padded, not shifted
    config = DistillConfig(window_schedule=())
    noisy = noisy_batch(config, batch["answer_ids"], batch["unmask_step"],
                        batch["answer_length"], 0.5, None, MASK, torch.Generator())
    # The whole canvas is the window: state floor(0.5 · 8) = 4 masks steps 5, 6, 7 in both rows.
    assert noisy.loss_mask.tolist() == [[False, False, True, False, False, False, True, True]] * 2


def test_windows_start_at_multiples_of_k_and_the_last_runs_to_the_end():
    config = DistillConfig()
    seen = set()
    for seed in range(300):
        starts, ends = draw_windows(config, torch.tensor([16, 64, 20]), 64, 8,
                                    torch.Generator().manual_seed(seed))
        seen.update(zip(range(3), starts.tolist(), ends.tolist(), strict=True))
    # Answer of 16 (stop included): j in 0..2; j = 2 is the last window, [16, 64): only the
    # padding after the answer (the reference's inclusive draw, §2.2 step 1).
    assert {(s, e) for row, s, e in seen if row == 0} == {(0, 8), (8, 16), (16, 64)}
    # 64 = the canvas: j = 8 would be empty, so the last window is [56, 64) (A12).
    assert {(s, e) for row, s, e in seen if row == 1} == {(j * 8, j * 8 + 8) for j in range(8)}
    assert max(e for row, s, e in seen if row == 2) == 64
    assert {s for row, s, e in seen if row == 2} == {0, 8, 16}
    canvas = replace(config, window_span="canvas")  # dParallel: blocks over the whole canvas
    starts, _ = draw_windows(canvas, torch.tensor([16]), 64, 32, torch.Generator())
    assert int(starts[0]) in (0, 32)


def test_the_loss_covers_m_then_m_prime_and_is_scaled():
    # Two positions, vocabulary 2. Position 0 is in M, position 1 in M'.
    noisy = NoisyBatch(inputs=torch.zeros(1, 2), complement=torch.zeros(1, 2),
                       loss_mask=torch.tensor([[True, False]]),
                       complement_loss_mask=torch.tensor([[False, True]]),
                       window_start=torch.tensor([0]), window_end=torch.tensor([2]))
    targets = torch.tensor([[0, 1]])
    log3 = math.log(3)
    logits = torch.tensor([[[log3, 0.0], [5.0, 0.0]]])  # p(0) = 3/4 at position 0: correct
    complement_logits = torch.tensor([[[0.0, 0.0], [0.0, log3]]])  # p(1) = 3/4: correct
    config = DistillConfig(entropy_weight=2.0, entropy_temperature=0.5, loss_scale=0.25)
    loss, terms = recipe_loss(config, targets, noisy, logits, complement_logits)
    ce = -math.log(3 / 4)
    # softmax(z / 0.5) at position 0: weights 9 and 1, so q = (0.9, 0.1).
    entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert terms["ce"].item() == pytest.approx(ce)
    assert terms["ce_complement"].item() == pytest.approx(ce)
    assert terms["entropy"].item() == pytest.approx(entropy)
    assert loss.item() == pytest.approx(0.25 * (ce + ce + 2.0 * entropy))
    both = replace(config, entropy_on_complement=True, loss_scale=1.0)
    loss, terms = recipe_loss(both, targets, noisy, logits, complement_logits)
    assert terms["entropy"].item() == pytest.approx(2 * entropy)  # ENT + ENT'
    assert loss.item() == pytest.approx(ce + ce + 2.0 * 2 * entropy)
    alone, terms = recipe_loss(config, targets, noisy, logits, None)  # no complementary pass
    assert terms["ce_complement"].item() == 0
    assert alone.item() == pytest.approx(0.25 * (ce + 2.0 * entropy))


def test_each_step_receives_the_rising_t_and_the_growing_window(trajectories, tmp_path):
    config = replace(load_config(preset_path("d3"), "d3", {}), epochs=2, batch_size=4,
                     window_schedule=(8, 16), logging_steps=100, save_steps=100)
    job = DistillJob(load_model("arith-teacher", device="cpu"), trajectories, config,
                     tmp_path / "student")
    trainer = job.prepare()
    trainer.args.logging_first_step = False  # no log: `terms` keeps every step's values
    job.run(trainer)
    # 12 trajectories in batches of 4: three steps an epoch, six in all. Step i runs at
    # epoch i / 3: window 8, 8 + 8/3, 8 + 16/3 (truncated), then 16.
    assert trainer.terms["window_size"] == [8, 10, 13, 16, 16, 16]
    floors = [noise_floor(config, step, 6) for step in range(6)]
    assert floors == pytest.approx([0.8 * step / 6 for step in range(6)])
    assert all(floor <= t <= 0.8 for floor, t in zip(floors, trainer.terms["t"], strict=True))
    assert len(set(trainer.terms["t"])) == 6  # drawn afresh each step
    assert all(0 <= fraction <= 1 for fraction in trainer.terms["mask_fraction"])
