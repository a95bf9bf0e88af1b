"""`d3 pretrain`: train a small dLLM from scratch on a synthetic task (LLaDA's objective).

Objective (LLaDA): per sequence t ~ U(ε, 1]; each answer token (EOS padding included) is
masked with probability t; the prompt is never masked; cross-entropy on the masked tokens,
weighted by 1/t, summed and divided by batch × answer length. AdamW with linear warm-up,
EMA of the weights (the EMA is what gets exported), atomic checkpoints, resume after kill -9.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .canvas import eos_padded, left_pad
from .checkpoints import LoadedModel, spec_for
from .decode import DecodeOptions
from .model import D3Config, D3Model
from .runner import decode_examples
from .tasks import get_task
from .tokenization import build_word_tokenizer

CHECKPOINT = "checkpoint.pt"
EXPORT = "model"
LOG = "train_log.jsonl"


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that defines a pretraining run; a resumed run must match it."""

    task: str = "arith"
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    min_mask_ratio: float = 1e-3
    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 6
    block_size: int = 16
    learned_positions: bool = True
    seed: int = 0


@dataclass(frozen=True)
class RunSchedule:
    """How long to train and how often to log, checkpoint and evaluate; free to change
    between resumes (the learning rate is constant after warm-up, so `steps` can grow)."""

    steps: int = 40000
    log_every: int = 50
    save_every: int = 500
    eval_every: int = 2000
    eval_prompts: int = 200
    device: str = "cpu"


class ConfigMismatchError(ValueError):
    """The output folder holds a run with a different configuration."""


def masked_diffusion_loss(model: D3Model, prompt_ids: torch.Tensor, prompt_visible: torch.Tensor,
                          answers: torch.Tensor, mask_id: int, min_mask_ratio: float,
                          generator: torch.Generator) -> torch.Tensor:
    """LLaDA's 1/t-weighted masked cross-entropy on the answer canvas (prompt never masked)."""
    batch, answer_length = answers.shape
    device = answers.device
    mask_ratio = min_mask_ratio + (1 - min_mask_ratio) * torch.rand(
        batch, 1, generator=generator, device=device)
    masked = torch.rand(batch, answer_length, generator=generator, device=device) < mask_ratio
    noisy_answers = answers.masked_fill(masked, mask_id)
    inputs = torch.cat([prompt_ids, noisy_answers], 1)
    attention_mask = torch.cat([prompt_visible, torch.ones_like(masked)], 1)
    logits = model(inputs, attention_mask=attention_mask)[:, prompt_ids.shape[1]:]
    token_loss = F.cross_entropy(logits[masked], answers[masked], reduction="none")
    weights = (1 / mask_ratio).expand_as(masked)[masked]
    return (token_loss * weights).sum() / (batch * answer_length)


class Pretrainer:
    """One pretraining run in an output folder: build or resume, train, checkpoint, export."""

    def __init__(self, config: PretrainConfig, out: Path, schedule: RunSchedule) -> None:
        self.config, self.out, self.schedule = config, out, schedule
        self.task = get_task(config.task)
        self.tokenizer = build_word_tokenizer(self.task.words)
        self.device = torch.device(schedule.device)
        model_config = D3Config(
            vocab_size=len(self.tokenizer), hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, block_size=config.block_size,
            mask_token_id=self.tokenizer.mask_token_id, eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id, max_position_embeddings=512,
            learned_positions=512 if config.learned_positions else 0)
        torch.manual_seed(config.seed)
        self.model = D3Model(model_config).to(self.device)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate,
                                           betas=(0.9, 0.98), weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps))
        self.step = 0
        self._resume()

    def _resume(self) -> None:
        path = self.out / CHECKPOINT
        if not path.is_file():
            return
        state = torch.load(path, map_location=self.device, weights_only=False)
        changed = sorted(key for key, value in asdict(self.config).items()
                         if state["config"].get(key) != value)
        if changed:
            raise ConfigMismatchError(f"{path} was trained with other settings "
                                      f"({', '.join(changed)}); use another --out")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]

    def save_checkpoint(self) -> None:
        """Write the full training state atomically (temp file + rename)."""
        self.out.mkdir(parents=True, exist_ok=True)
        state = {"config": asdict(self.config), "step": self.step,
                 "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        temporary = self.out / (CHECKPOINT + ".tmp")
        torch.save(state, temporary)
        os.replace(temporary, self.out / CHECKPOINT)

    def export(self) -> Path:
        """Save the EMA weights and the tokenizer as a plain transformers folder."""
        folder = self.out / EXPORT
        self.ema.module.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The training batch of `step`: a pure function of (seed, step), so resumes replay it."""
        pairs = self.task.training_pairs(random.Random(f"{self.config.seed}-{step}"))
        prompts, answers = zip(*(next(pairs) for _ in range(self.config.batch_size)), strict=True)
        encode = self.tokenizer
        prompt_ids, visible = left_pad(encode(list(prompts)).input_ids, encode.pad_token_id)
        answer_ids = eos_padded(encode(list(answers)).input_ids, self.task.gen_length,
                                encode.eos_token_id)
        return prompt_ids.to(self.device), visible.to(self.device), answer_ids.to(self.device)

    def train_step(self) -> float:
        self.model.train()
        prompt_ids, visible, answers = self.batch(self.step)
        generator = torch.Generator(device=self.device).manual_seed(
            self.config.seed * 1_000_003 + self.step)
        loss = masked_diffusion_loss(self.model, prompt_ids, visible, answers,
                                     self.tokenizer.mask_token_id, self.config.min_mask_ratio,
                                     generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update_parameters(self.model)
        self.step += 1
        return loss.item()

    def evaluate(self) -> float:
        """Accuracy (percent) of the EMA weights, one token per forward, on held-out prompts."""
        model = self.ema.module.eval()
        loaded = LoadedModel("ema", model, self.tokenizer, spec_for(model, self.tokenizer))
        options = DecodeOptions(gen_length=self.task.gen_length, block_size=self.config.block_size)
        examples = self.task.eval_examples(self.schedule.eval_prompts)
        results = list(decode_examples(loaded, self.task, examples, "vanilla", options, 256))
        return 100.0 * sum(result.correct for result in results) / len(results)

    def log(self, record: dict) -> None:
        with (self.out / LOG).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def run(self) -> Iterator[dict]:
        """Train to `schedule.steps`, yielding a progress record after every step."""
        self.out.mkdir(parents=True, exist_ok=True)
        schedule, started, window = self.schedule, time.perf_counter(), []
        while self.step < schedule.steps:
            window.append(self.train_step())
            record: dict = {"step": self.step, "loss": sum(window) / len(window)}
            if self.step % schedule.log_every == 0:
                self.log({**record, "lr": self.scheduler.get_last_lr()[0],
                          "seconds": round(time.perf_counter() - started, 1)})
                window = []
            if self.step % schedule.save_every == 0 or self.step == schedule.steps:
                self.save_checkpoint()
            if self.step % schedule.eval_every == 0 or self.step == schedule.steps:
                record["accuracy"] = self.evaluate()
                self.export()
                self.log({"step": self.step, "eval_accuracy": record["accuracy"]})
            yield record
