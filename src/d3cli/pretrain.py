"""`d3 pretrain`: train a small dLLM from scratch on a synthetic task (LLaDA's objective), in
transformers' `Trainer` (so `accelerate launch`, mixed precision and resume work as in
`d3 distill`).

Objective (LLaDA): per sequence t ~ U(ε, 1]; each answer token (EOS padding included) is
masked with probability t; the prompt is never masked; cross-entropy on the masked tokens,
weighted by 1/t, summed and divided by batch × answer length. AdamW with linear warm-up,
an EMA of the weights kept by a callback (the EMA is what gets exported and evaluated).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset, SequentialSampler
from transformers import PrinterCallback, TrainerCallback, TrainingArguments

from .canvas import eos_padded, left_pad
from .checkpoints import LoadedModel, save_model, spec_for
from .decode import DecodeOptions
from .model import D3Config, D3Model
from .runner import decode_examples
from .tasks import get_task
from .tokenization import build_word_tokenizer
from .training import (
    CHECKPOINTS,
    JsonLog,
    KeyedNoiseTrainer,
    SaveAndStopOnSignal,
    check_run,
    last_complete_checkpoint,
)

RUN_FILE = "pretrain.json"
EMA_FILE = "ema.safetensors"  # in each checkpoint folder, written after the Trainer's files
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
    bf16: bool = False  # bfloat16 autocast over float32 weights


def masked_diffusion_loss(model: D3Model, prompt_ids: torch.Tensor, prompt_visible: torch.Tensor,
                          answers: torch.Tensor, mask_id: int, min_mask_ratio: float,
                          generator: torch.Generator) -> torch.Tensor:
    """LLaDA's 1/t-weighted masked cross-entropy on the answer canvas (prompt never masked)."""
    batch, answer_length = answers.shape
    mask_ratio = min_mask_ratio + (1 - min_mask_ratio) * torch.rand(
        batch, 1, generator=generator).to(answers.device)
    masked = torch.rand(batch, answer_length, generator=generator).to(answers.device) < mask_ratio
    noisy_answers = answers.masked_fill(masked, mask_id)
    inputs = torch.cat([prompt_ids, noisy_answers], 1)
    attention_mask = torch.cat([prompt_visible, torch.ones_like(masked)], 1)
    logits = model(inputs, attention_mask=attention_mask)[:, prompt_ids.shape[1]:]
    token_loss = F.cross_entropy(logits[masked], answers[masked], reduction="none")
    weights = (1 / mask_ratio).expand_as(masked)[masked]
    return (token_loss * weights).sum() / (batch * answer_length)


class TaskPairs(Dataset):
    """The task's (prompt, answer) training pairs; pair i is a pure function of (seed, i), so
    a resumed run reads the same data. Read in order (each pair is already random)."""

    LENGTH = 2**40  # more than any run reads

    def __init__(self, task, seed: int) -> None:
        self.task, self.seed = task, seed

    def __len__(self) -> int:
        return self.LENGTH

    def __getitem__(self, index: int) -> tuple[str, str]:
        return next(self.task.training_pairs(random.Random(f"{self.seed}-{index}")))


class PretrainTrainer(KeyedNoiseTrainer):
    """`Trainer` with LLaDA's objective, reading `TaskPairs` in order."""

    def __init__(self, *args: Any, mask_id: int, min_mask_ratio: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mask_id, self.min_mask_ratio = mask_id, min_mask_ratio

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> SequentialSampler:
        return SequentialSampler(self.train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return masked_diffusion_loss(model, inputs["prompt_ids"], inputs["prompt_visible"],
                                     inputs["answers"], self.mask_id, self.min_mask_ratio,
                                     self.generator())


class Ema(TrainerCallback):
    """An exponential moving average of the weights, updated after every optimizer step,
    saved into each checkpoint (last, so a checkpoint holding it is whole) and restored on
    resume."""

    def __init__(self, model: D3Model, decay: float) -> None:
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.average.update_parameters(model)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            temporary = folder / (EMA_FILE + ".tmp")
            save_file({name: tensor.contiguous() for name, tensor in
                       self.average.state_dict().items()}, temporary)
            temporary.replace(folder / EMA_FILE)

    def restore(self, checkpoint: str) -> None:
        state = load_file(Path(checkpoint) / EMA_FILE)
        self.average.load_state_dict({name: tensor.to(self.average.n_averaged.device)
                                      for name, tensor in state.items()})


@dataclass
class Pretrainer:
    """One pretraining run in an output folder: build or resume, train, checkpoint, export."""

    config: PretrainConfig
    out: Path
    schedule: RunSchedule
    stop: SaveAndStopOnSignal = field(default_factory=SaveAndStopOnSignal)
    accuracy: float | None = None  # the EMA's last eval accuracy (percent)

    def __post_init__(self) -> None:
        config = self.config
        self.task = get_task(config.task)
        if config.hidden_size % config.num_heads:
            raise ValueError(f"--heads {config.num_heads} does not divide --hidden-size "
                             f"{config.hidden_size}")
        check_run(self.out / RUN_FILE, asdict(config))
        self.tokenizer = build_word_tokenizer(self.task.words)
        model_config = D3Config(
            vocab_size=len(self.tokenizer), hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, block_size=config.block_size,
            mask_token_id=self.tokenizer.mask_token_id, eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id, max_position_embeddings=512,
            learned_positions=512 if config.learned_positions else 0)
        torch.manual_seed(config.seed)
        self.model = D3Model(model_config).to(self.schedule.device)
        self.ema = Ema(self.model, config.ema_decay)
        self.log = JsonLog(self.out / LOG)
        self.trainer = PretrainTrainer(
            model=self.model, args=self.arguments(), train_dataset=TaskPairs(self.task,
                                                                              config.seed),
            data_collator=self.collate, noise_seed=config.seed,
            mask_id=self.tokenizer.mask_token_id, min_mask_ratio=config.min_mask_ratio,
            callbacks=[self.ema, self.log, Evaluate(self), self.stop])
        self.trainer.remove_callback(PrinterCallback)

    def arguments(self) -> TrainingArguments:
        config, schedule = self.config, self.schedule
        return TrainingArguments(
            output_dir=str(self.out / CHECKPOINTS), per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate, lr_scheduler_type="constant_with_warmup",
            warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
            adam_beta2=0.98, max_grad_norm=1.0, max_steps=schedule.steps,
            save_steps=schedule.save_every, save_total_limit=2,
            logging_steps=schedule.log_every, seed=config.seed, remove_unused_columns=False,
            report_to="none", disable_tqdm=True, use_cpu=schedule.device == "cpu",
            bf16=schedule.bf16, dataloader_num_workers=0)

    def collate(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        prompts, answers = zip(*pairs, strict=True)
        encode = self.tokenizer
        prompt_ids, visible = left_pad(encode(list(prompts)).input_ids, encode.pad_token_id)
        answer_ids = eos_padded(encode(list(answers)).input_ids, self.task.gen_length,
                                encode.eos_token_id)
        return {"prompt_ids": prompt_ids, "prompt_visible": visible, "answers": answer_ids}

    @property
    def step(self) -> int:
        return self.trainer.state.global_step

    def run(self) -> Path | None:
        """Train to `schedule.steps` (resuming from the last whole checkpoint) and export;
        None when a signal stopped the run (its step is saved)."""
        checkpoint = last_complete_checkpoint(self.out / CHECKPOINTS, [EMA_FILE])
        if checkpoint:
            self.ema.restore(checkpoint)
        self.trainer.train(resume_from_checkpoint=checkpoint)
        return None if self.stop.requested else self.export()

    def evaluate(self) -> float:
        """Accuracy (percent) of the EMA weights, one token per forward, on held-out prompts."""
        model = self.ema.average.module.eval()
        loaded = LoadedModel("ema", model, self.tokenizer, spec_for(model, self.tokenizer))
        options = DecodeOptions(gen_length=self.task.gen_length, block_size=self.config.block_size)
        examples = self.task.eval_examples(self.schedule.eval_prompts)
        results = list(decode_examples(loaded, self.task, examples, "vanilla", options, 256))
        model.train()
        return 100.0 * sum(result.correct for result in results) / len(results)

    def export(self) -> Path:
        """Save the EMA weights and the tokenizer as a plain transformers folder."""
        folder = self.out / EXPORT
        if self.trainer.is_world_process_zero():
            save_model(self.ema.average.module, folder)
            self.tokenizer.save_pretrained(folder)
        return folder


class Evaluate(TrainerCallback):
    """Every `eval_every` steps and at the end: the EMA's accuracy into the log, and an
    export of the EMA weights."""

    def __init__(self, run: Pretrainer) -> None:
        self.run = run

    def on_step_end(self, args, state, control, **kwargs):
        step, schedule = state.global_step, self.run.schedule
        if state.is_world_process_zero and (step % schedule.eval_every == 0
                                            or step == state.max_steps):
            self.run.accuracy = self.run.evaluate()
            self.run.export()
            self.run.log.write(step, {"eval_accuracy": self.run.accuracy})
