"""The recipes (§2.2-2.6): settings and presets, schedules, masks and the loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from ..canvas import first_stop, left_pad
from ..checkpoints import ModelSpec
from ..trajectories import DECODED, NEVER

RECIPES = ("d3", "dparallel")
MASKS = ("trajectory", "random")
PRESETS = {"d3": "embedded.yaml", "LLaDA": "llada.yaml", "Dream": "dream.yaml"}
EPSILON = 1e-3  # smallest mask probability of a random mask (§2.2 step 3)


class DistillConfigError(ValueError):
    """A recipe setting that cannot be used; the message says which, on one line."""


@dataclass(frozen=True)
class DistillConfig:
    """One recipe's settings (§2.3-2.6); the presets in `presets/*.yaml` fill them."""

    recipe: str = "d3"
    masks: str = "trajectory"  # trajectory: the teacher's order (§2.2); random: Bernoulli(t)
    noise_schedule: bool = True  # t ~ U(r(step), t_max) with r rising t_min → t_max (§2.3)
    t_min: float = 0.0
    t_max: float = 0.8
    mask_ratio: float | None = None  # a fixed t (dParallel: 0.5) instead of a drawn one
    window_schedule: tuple[int, ...] = (16, 16, 24, 24, 32, 32)  # per epoch; () = whole answer
    window_span: str = "answer"  # windows over the answer + EOS (d3) or the canvas (dParallel)
    complementary: bool = True  # second pass on the complementary mask (CE')
    entropy_weight: float = 2.0  # β
    entropy_temperature: float = 0.5  # τ of softmax(z / τ)
    entropy_on_complement: bool = False  # ENT' too (Dream, dParallel)
    loss_scale: float = 0.25  # d3LLM divides by 4; dParallel does not
    only_correct: bool = True  # train on the teacher's correct answers only
    epochs: float = 6.0
    max_steps: int = -1  # > 0 stops early (short runs, tests)
    learning_rate: float = 2e-5
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    batch_size: int = 4
    gradient_accumulation: int = 4
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    lora: bool = True
    lora_rank: int = 256
    lora_alpha: int = 256
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                     "up_proj", "down_proj")
    save_steps: int = 500
    logging_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name, allowed in (("recipe", RECIPES), ("masks", MASKS),
                              ("window_span", ("answer", "canvas"))):
            if getattr(self, name) not in allowed:
                raise DistillConfigError(f"unknown {name} {getattr(self, name)!r}; "
                                         f"choose from {', '.join(allowed)}")
        if any(size < 1 for size in self.window_schedule):
            raise DistillConfigError(f"window sizes must be positive: {self.window_schedule}")
        if self.entropy_temperature <= 0:
            raise DistillConfigError(f"entropy temperature must be above 0, got "
                                     f"{self.entropy_temperature}")
        if not 0 <= self.t_min <= self.t_max <= 1:
            raise DistillConfigError(f"need 0 <= t_min <= t_max <= 1, got {self.t_min}, "
                                     f"{self.t_max}")


def preset_path(family: str) -> Path:
    """The shipped preset file of a model family (d3's embedded models, LLaDA, Dream)."""
    return Path(str(resources.files("d3cli") / "presets" / PRESETS.get(family, "embedded.yaml")))


def load_config(path: Path, recipe: str, overrides: dict[str, Any]) -> DistillConfig:
    """`recipe`'s section of a preset file, with `overrides` (CLI switches) on top."""
    if recipe not in RECIPES:
        raise DistillConfigError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    try:
        sections = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DistillConfigError(f"{path}: cannot read the config ({error})") from None
    if not isinstance(sections, dict) or not isinstance(sections.get(recipe), dict):
        raise DistillConfigError(f"{path}: no '{recipe}:' section")
    values = {**sections[recipe], **overrides, "recipe": recipe}
    known = {field.name for field in fields(DistillConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise DistillConfigError(f"{path}: unknown setting {unknown[0]!r} in '{recipe}:'")
    for name in ("window_schedule", "lora_targets"):
        if name in values:
            values[name] = tuple(values[name] or ())
    return DistillConfig(**values)


# --- schedules (§2.3) -------------------------------------------------------------------------


def noise_floor(config: DistillConfig, step: int, max_steps: int) -> float:
    """r(step): the lower end of t's range, rising linearly from t_min to t_max."""
    if not config.noise_schedule:
        return config.t_min
    return config.t_min + (step / max(max_steps, 1)) * (config.t_max - config.t_min)


def window_size(config: DistillConfig, epoch: float) -> int | None:
    """The window at fractional `epoch`: the per-epoch list, interpolated within an epoch and
    truncated to an integer; the last entry holds after the list. None: the whole answer."""
    schedule = config.window_schedule
    if not schedule:
        return None
    index = int(epoch)
    if index + 1 >= len(schedule):
        return schedule[-1]
    return int(schedule[index] + (epoch - index) * (schedule[index + 1] - schedule[index]))


# --- data --------------------------------------------------------------------------------------


@dataclass
class TrajectoryBatch:
    """Left-padded prompts, answer canvases, and the teacher's unmask steps."""

    prompt_ids: Tensor  # [B, P]
    prompt_visible: Tensor  # [B, P] bool
    answer_ids: Tensor  # [B, G]
    unmask_step: Tensor  # [B, G]
    answer_length: Tensor  # [B]: tokens before the first stop, plus that stop (≤ G)


def collate(records: Sequence[dict], spec: ModelSpec) -> dict[str, Tensor]:
    """Trainer collator: trajectory records → the tensors of a `TrajectoryBatch`."""
    prompt_ids, visible = left_pad([record["prompt_ids"] for record in records],
                                   spec.pad_token_id)
    answers = torch.tensor([record["answer_ids"] for record in records])
    lengths = [min(first_stop(record["answer_ids"], spec.stop_token_ids) + 1, answers.shape[1])
               for record in records]
    return {"prompt_ids": prompt_ids, "prompt_visible": visible, "answer_ids": answers,
            "unmask_step": torch.tensor([record["unmask_step"] for record in records]),
            "answer_length": torch.tensor(lengths)}


@dataclass
class NoisyBatch:
    """The two inputs of §2.2 and where each carries loss (answer-relative masks)."""

    inputs: Tensor  # [B, G] answer canvas with masks (x̃)
    complement: Tensor  # [B, G] (x̃')
    loss_mask: Tensor  # [B, G] bool: M
    complement_loss_mask: Tensor  # [B, G] bool: M'
    window_start: Tensor  # [B]
    window_end: Tensor  # [B]


def draw_windows(config: DistillConfig, answer_length: Tensor, canvas: int, size: int | None,
                 generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """§2.2 step 1, answer-relative: j ~ U{0..R//k}, window [j·k, j·k + k), the last one
    running to the canvas end. R is clamped to the canvas (A12), and j so that the window
    is never empty; no window size: the whole canvas."""
    batch = answer_length.shape[0]
    if size is None:
        return torch.zeros(batch, dtype=torch.long), torch.full((batch,), canvas)
    span = answer_length if config.window_span == "answer" else torch.full((batch,), canvas)
    last = torch.minimum(span.clamp_max(canvas) // size, torch.tensor((canvas - 1) // size))
    index = (torch.rand(batch, generator=generator) * (last + 1)).long().clamp_max(last)
    starts = index * size
    ends = torch.where(index == last, canvas, starts + size)
    return starts, ends


def decode_order(unmask_step: Tensor) -> Tensor:
    """Each answer position's rank in the decoding order, ties broken left to right.

    For a teacher that commits one token per forward this is `unmask_step` itself; for a
    decoder that commits several per forward (a student's own multi-block rollout) it is the
    one-token-per-step trajectory that §2.2's state index counts in. Positions decoded before
    the first step (`DECODED`) rank -1 and take no place in the order; positions never
    decoded (`NEVER`) rank `NEVER`, masked in every state.
    """
    canvas = unmask_step.shape[-1]
    steps = unmask_step.long()
    keys = steps * canvas + torch.arange(canvas, device=unmask_step.device)
    ranks = keys.argsort(-1).argsort(-1) - (steps == DECODED).sum(-1, keepdim=True)
    return torch.where(steps == DECODED, -1, torch.where(steps >= NEVER, NEVER, ranks))


def window_mask_fraction(noisy: NoisyBatch) -> Tensor:
    """[B]: the fraction of each sample's window that is masked in the primary input (the
    realised mask ratio, against the nominal t)."""
    return noisy.loss_mask.sum(1) / (noisy.window_end - noisy.window_start).clamp_min(1)


def noisy_batch(config: DistillConfig, answers: Tensor, unmask_step: Tensor,
                answer_length: Tensor, t: float, size: int | None, mask_id: int,
                generator: torch.Generator) -> NoisyBatch:
    """§2.2 steps 1-6 for a batch at mask ratio `t` and window size `size`."""
    canvas = answers.shape[1]
    starts, ends = draw_windows(config, answer_length, canvas, size, generator)
    position = torch.arange(canvas)[None, :]
    in_window = (position >= starts[:, None]) & (position < ends[:, None])
    if config.masks == "trajectory":  # step 2: the teacher's state with ≈ t of the window masked
        state = starts + torch.floor((1 - t) * (ends - starts)).long()
        state = state.clamp_max(canvas - 1)
        masked = decode_order(unmask_step) > state[:, None]
    else:
        masked = torch.rand(answers.shape, generator=generator) < (1 - EPSILON) * t + EPSILON
    masked &= in_window
    after = position >= ends[:, None]
    complement_masked = in_window & ~masked
    return NoisyBatch(answers.masked_fill(masked | after, mask_id),
                      answers.masked_fill(complement_masked | after, mask_id),
                      masked, complement_masked, starts, ends)


# --- loss (§2.4, §2.6) -------------------------------------------------------------------------


def masked_cross_entropy(logits: Tensor, targets: Tensor, where: Tensor) -> Tensor:
    """Mean CE over the `where` positions of the whole batch (0 when there are none)."""
    if not where.any():
        return logits.sum() * 0
    return F.cross_entropy(logits[where].float(), targets[where])


def certainty_entropy(logits: Tensor, targets: Tensor, where: Tensor,
                      temperature: float) -> Tensor:
    """Mean entropy of softmax(z / τ) over the `where` positions predicted correctly (the
    selection is not differentiated); 0 when none is."""
    correct = where & (logits.argmax(-1) == targets)
    if not correct.any():
        return logits.sum() * 0
    log_probs = (logits[correct].float() / temperature).log_softmax(-1)
    return -(log_probs.exp() * log_probs).sum(-1).mean()


def shifted(logits: Tensor, spec: ModelSpec) -> Tensor:
    """Logits aligned so position i predicts token i (Dream's outputs predict i + 1, §6.2)."""
    return torch.cat([logits[:, :1], logits[:, :-1]], 1) if spec.logit_shift else logits


def recipe_loss(config: DistillConfig, targets: Tensor, noisy: NoisyBatch, logits: Tensor,
                complement_logits: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
    """§2.4/§2.6: scale · (CE + CE' + β · ENT), CE over M, CE' over M' (with the
    complementary pass), ENT over M's correct predictions (and M''s with
    `entropy_on_complement`). Returns the loss and its terms (CE, CE', ENT, mask fraction)."""
    loss_mask = noisy.loss_mask.to(logits.device)
    ce = masked_cross_entropy(logits, targets, loss_mask)
    entropy = certainty_entropy(logits, targets, loss_mask, config.entropy_temperature)
    ce_complement = torch.zeros((), device=logits.device)
    if complement_logits is not None:
        complement_mask = noisy.complement_loss_mask.to(logits.device)
        ce_complement = masked_cross_entropy(complement_logits, targets, complement_mask)
        if config.entropy_on_complement:
            entropy = entropy + certainty_entropy(complement_logits, targets, complement_mask,
                                                  config.entropy_temperature)
    loss = config.loss_scale * (ce + ce_complement + config.entropy_weight * entropy)
    return loss, {"ce": ce, "ce_complement": ce_complement, "entropy": entropy,
                  "mask_fraction": window_mask_fraction(noisy).mean()}
