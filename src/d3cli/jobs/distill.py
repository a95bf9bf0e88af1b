"""One `d3 distill` run: the request's switches over the teacher family's preset, the
teacher loaded and the Trainer built, all before any training (so bad input costs nothing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import DEFAULT_TEACHER, load_model, pick_device
from ..distill import DistillJob, DistillTrainer, load_config, preset_path
from ..targets import Targets
from .output import check_writable

# The switches that override the preset's setting of the same name when given.
OVERRIDES = ("lora", "masks", "noise_schedule", "complementary", "only_correct",
             "entropy_weight", "entropy_temperature", "epochs", "max_steps", "learning_rate",
             "batch_size", "save_steps", "seed")


@dataclass
class DistillRequest:
    """The options of `d3 distill` as the CLI fills them; None: the preset's (or device's) own."""

    trajectories: Path
    out: Path
    teacher: str
    recipe: str
    lora: bool | None
    merge: bool
    config: Path | None
    masks: str | None
    noise_schedule: bool | None
    window_schedule: str | None
    complementary: bool | None
    only_correct: bool | None
    entropy_weight: float | None
    entropy_temperature: float | None
    epochs: float | None
    max_steps: int | None
    learning_rate: float | None
    batch_size: int | None
    save_steps: int | None
    seed: int | None
    bf16: bool | None
    gradient_checkpointing: bool
    device: str
    targets: str | None = None
    target_question_field: str = "question"
    target_response_field: str = "llm_response"
    target_index_field: str = "sample_idx"
    target_length: int | None = None

    def overrides(self) -> dict[str, Any]:
        """The preset settings this request overrides (a window schedule as a list)."""
        values = {name: getattr(self, name) for name in OVERRIDES
                  if getattr(self, name) is not None}
        if self.window_schedule is not None:
            try:
                values["window_schedule"] = [int(size) for size in
                                             self.window_schedule.split(",") if size.strip()]
            except ValueError:
                raise ValueError(f"--window-schedule {self.window_schedule!r} is not a list "
                                 "of integers like 16,16,24") from None
        return values


def prepare_distill(request: DistillRequest) -> tuple[DistillJob, DistillTrainer | None]:
    """The job and its Trainer, ready to `run` (None: the student is already there); bf16
    defaults to on with CUDA."""
    check_writable(request.out, "folder")
    device = pick_device(request.device)
    overrides = request.overrides()
    bf16 = device.startswith("cuda") if request.bf16 is None else request.bf16
    loaded = load_model(request.teacher or DEFAULT_TEACHER, device, "float32")
    settings = load_config(request.config or preset_path(loaded.family), request.recipe,
                           overrides)
    if settings.lora and bf16:  # the frozen base may be bf16; PEFT keeps adapters fp32
        loaded.model.to(torch.bfloat16)
    targets = request.targets and Targets(
        request.targets, request.target_question_field, request.target_response_field,
        request.target_index_field, length=request.target_length)
    job = DistillJob(loaded, request.trajectories, settings, request.out, request.merge,
                     device, bf16, request.gradient_checkpointing, targets=targets)
    return job, job.prepare()
