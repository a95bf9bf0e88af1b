"""Distilling a teacher dLLM into a student that commits many tokens per forward (§2).

Two recipes share one loss: `d3` (pseudo-trajectory distillation, d3LLM §2.2-2.4) masks
each training window the way the teacher's own decoding order left it, with progressive
noise and window curricula; `dparallel` (certainty forcing, §2.6) masks Bernoulli(0.5)
inside one block. Both add a complementary-mask pass and an entropy term that makes correct
predictions confident. Every term is a field of `DistillConfig`, so each can be ablated.
Training runs in transformers' `Trainer` (accelerate, DeepSpeed and FSDP launch unchanged).
"""

from .recipe import (
    EPSILON,
    MASKS,
    PRESETS,
    RECIPES,
    DistillConfig,
    DistillConfigError,
    NoisyBatch,
    TrajectoryBatch,
    certainty_entropy,
    collate,
    decode_order,
    draw_windows,
    load_config,
    masked_cross_entropy,
    noise_floor,
    noisy_batch,
    preset_path,
    recipe_loss,
    shifted,
    window_mask_fraction,
    window_size,
)
from .run import (
    LOG_FILE,
    RUN_FILE,
    TERMS,
    DistillJob,
    DistillTrainer,
    build_student,
    check_trajectories,
    export_student,
    training_arguments,
)

__all__ = ["EPSILON", "LOG_FILE", "MASKS", "PRESETS", "RECIPES", "RUN_FILE", "TERMS",
           "DistillConfig", "DistillConfigError", "DistillJob", "DistillTrainer", "NoisyBatch",
           "TrajectoryBatch", "build_student", "certainty_entropy", "check_trajectories",
           "collate", "decode_order", "draw_windows", "export_student", "load_config",
           "masked_cross_entropy", "noise_floor", "noisy_batch", "preset_path", "recipe_loss",
           "shifted", "training_arguments", "window_mask_fraction", "window_size"]
