"""A distillation run on transformers' `Trainer`: the recipe's loss per batch, the inputs'
checks, resume, and the exported student."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import PrinterCallback, TrainingArguments, set_seed

from ..checkpoints import (
    LoadedModel,
    ModelSpec,
    adapter_base_name,
    canonical_name,
    save_model,
    save_student,
)
from ..checkpoints.resolve import ADAPTER_CONFIG
from ..targets import Targets, join_targets
from ..tasks.data import first_line
from ..training import (
    CHECKPOINTS,
    JsonLog,
    KeyedNoiseTrainer,
    SaveAndStopOnSignal,
    check_run,
    last_complete_checkpoint,
)
from ..trajectories import TrajectoryFolderError, load_trajectories, read_card
from .recipe import (
    DistillConfig,
    DistillConfigError,
    TrajectoryBatch,
    collate,
    noise_floor,
    noisy_batch,
    recipe_loss,
    shifted,
    window_size,
)


class DistillTrainer(KeyedNoiseTrainer):
    """`Trainer` whose loss is the recipe's; CE, CE' and ENT are logged separately."""

    def __init__(self, *args: Any, distill: DistillConfig, spec: ModelSpec,
                 **kwargs: Any) -> None:
        super().__init__(*args, noise_seed=distill.seed, **kwargs)
        self.distill, self.spec = distill, spec
        # The loss terms, then the nominal mask ratio t and the fraction of each window
        # that its mask really covers (trajectory masks can be lighter or heavier than t).
        self.terms: dict[str, list[float]] = {
            name: [] for name in ("ce", "ce_complement", "entropy", "t", "mask_fraction",
                                  "window_size")}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        config, spec = self.distill, self.spec
        generator = self.generator()
        if config.mask_ratio is not None:
            t = config.mask_ratio
        else:
            floor = noise_floor(config, self.state.global_step, self.state.max_steps)
            t = floor + (config.t_max - floor) * float(torch.rand(1, generator=generator))
        size = window_size(config, self.state.epoch or 0.0)
        batch = TrajectoryBatch(**inputs)
        noisy = noisy_batch(config, batch.answer_ids.cpu(), batch.unmask_step.cpu(),
                            batch.answer_length.cpu(), t, size, spec.mask_token_id, generator)
        device = batch.answer_ids.device
        attention = torch.cat([batch.prompt_visible, torch.ones_like(batch.answer_ids,
                                                                     dtype=torch.bool)], 1)
        prompt_length = batch.prompt_ids.shape[1]

        def answer_logits(answers: Tensor) -> Tensor:
            sequence = torch.cat([batch.prompt_ids, answers.to(device)], 1)
            return shifted(model(sequence, attention_mask=attention), spec)[:, prompt_length:]

        logits = answer_logits(noisy.inputs)  # the primary pass first, then the complement
        complement = answer_logits(noisy.complement) if config.complementary else None
        loss, terms = recipe_loss(config, batch.answer_ids, noisy, logits, complement)
        for name, value in terms.items():
            self.terms[name].append(float(value.detach()))
        self.terms["t"].append(t)
        self.terms["window_size"].append(float(size or batch.answer_ids.shape[1]))
        return loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the means since the last log (over every process) of CE, CE', ENT, t, the
        window mask fraction and the window size to the training logs."""
        if "loss" in logs and self.terms["ce"]:
            means = torch.tensor([sum(values) / len(values) for values in self.terms.values()],
                                 device=self.args.device)
            means = self.accelerator.reduce(means, reduction="mean").tolist()
            for (name, values), mean in zip(self.terms.items(), means, strict=True):
                logs[name] = mean
                values.clear()
        super().log(logs, *args, **kwargs)


# --- a run: inputs, Trainer, resume, export ----------------------------------------------------

RUN_FILE = "distill.json"
LOG_FILE = "distill_log.jsonl"
CARD = "README.md"  # the student's card, written last
TERMS = (("loss", "loss"), ("CE", "ce"), ("CE'", "ce_complement"), ("ENT", "entropy"))


def check_trajectories(folder: Path, loaded: LoadedModel) -> tuple[Any, list[str]]:
    """The trajectory dataset in `folder`, after checking it was made for this teacher's
    tokenizer (vocabulary size and mask id) and holds at least one record, and what to warn
    of: trajectories made by another model of the same vocabulary."""
    card = read_card(folder)
    model_facts = {"vocab_size": loaded.model.config.vocab_size,
                   "mask_token_id": loaded.spec.mask_token_id}
    for name, value in model_facts.items():
        if card.get(name) != value:
            raise DistillConfigError(
                f"{folder} was made by {card.get('teacher')!r} with {name} {card.get(name)}, "
                f"but the teacher {loaded.name!r} has {value}: not its tokenizer")
    try:
        dataset = load_trajectories(folder)
    except TrajectoryFolderError:
        raise
    except Exception as error:  # pyarrow/datasets raise many kinds for a damaged file
        raise DistillConfigError(f"{folder}: cannot read the trajectories "
                                 f"({first_line(error)})") from error
    if len(dataset) == 0:
        raise DistillConfigError(f"{folder}: no trajectories")
    made_by = str(card.get("teacher"))
    if canonical_name(made_by) == loaded.name:
        return dataset, []
    return dataset, [f"{folder} was made by {made_by!r}, not by the teacher {loaded.name!r} "
                     "(same vocabulary): the student learns another model's answers"]


def training_arguments(config: DistillConfig, out: Path, device: str, bf16: bool = False,
                       gradient_checkpointing: bool = False) -> TrainingArguments:
    """The Trainer's settings. `bf16` trains in bfloat16 autocast over float32 master
    weights and optimizer state; `warmup_steps` below 1 is a ratio of the run's steps; the
    first step is logged, so the loss terms show from the start."""
    optional = {"gradient_checkpointing": True} if gradient_checkpointing else {}
    return TrainingArguments(bf16=bf16, **optional,
        output_dir=str(out / CHECKPOINTS), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm, num_train_epochs=config.epochs,
        max_steps=config.max_steps, save_steps=config.save_steps, save_total_limit=2,
        logging_steps=config.logging_steps, logging_first_step=True, seed=config.seed,
        data_seed=config.seed, remove_unused_columns=False, report_to="none", disable_tqdm=True,
        use_cpu=device == "cpu", dataloader_num_workers=0)


def build_student(loaded: LoadedModel, config: DistillConfig):
    """The model to train: the teacher itself (full fine-tune) or the teacher with LoRA."""
    model = loaded.model
    if not config.lora:
        return model
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [name for name in config.lora_targets if name not in present]
    if missing:
        raise DistillConfigError(f"LoRA target {missing[0]!r} is not a module of the teacher "
                                 f"(linear layers: q_proj, k_proj, v_proj, o_proj, gate_proj, "
                                 f"up_proj, down_proj)")
    student = get_peft_model(model, LoraConfig(
        r=config.lora_rank, lora_alpha=config.lora_alpha,
        target_modules=list(config.lora_targets), lora_dropout=0.0, bias="none"))
    # LoRA never resizes the embeddings, so every save (the Trainer's checkpoints too) skips
    # peft's check for that, which reads the teacher's config.json as d3's own config: for
    # a LLaDA or Dream teacher a warning about the model type (and Dream's rope_scaling).
    student.save_pretrained = partial(student.save_pretrained, save_embedding_layers=False)
    return student


def export_student(model, loaded: LoadedModel, config: DistillConfig, merge: bool,
                   out: Path, trajectories: Path) -> None:
    """A folder `d3 decode --model` loads, with a card saying how it was made: full or
    merged weights (`save_student`: in the teacher's own format when it is a LLaDA or Dream
    folder), or a LoRA adapter with the teacher's tokenizer, whose base is the teacher,
    named as `adapter_base_name` says."""
    if config.lora and not merge:
        save_model(model, out)
        loaded.tokenizer.save_pretrained(out)
        adapter = out / ADAPTER_CONFIG  # a base that resolves the same from any folder
        settings = json.loads(adapter.read_text(encoding="utf-8"))
        settings["base_model_name_or_path"] = adapter_base_name(loaded.name, out)
        adapter.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    else:
        save_student(model.merge_and_unload() if config.lora else model, loaded, out)
    kind = ("LoRA adapter" if config.lora and not merge else
            "LoRA, merged" if config.lora else "full fine-tune")
    (out / CARD).write_text(
        f"# Student of {loaded.name}\n\nMade by `d3 distill --recipe {config.recipe}` "
        f"({kind}) from the teacher `{loaded.name}` on the trajectories in "
        f"`{trajectories}`. Every setting is in `{RUN_FILE}`, the loss terms per logging "
        f"step in `{LOG_FILE}`.\n", encoding="utf-8")


@dataclass
class DistillJob:
    """One `d3 distill` run: `prepare` checks the inputs and builds the Trainer (fast, so
    bad input fails before any progress is drawn); `run` trains, resuming from the last
    checkpoint in `out/checkpoints` (optimizer, scheduler, RNG, data position), and exports;
    the checkpoints go once the student is written."""

    loaded: LoadedModel
    trajectories: Path
    config: DistillConfig
    out: Path
    merge: bool = False
    device: str = "cpu"
    bf16: bool = False
    gradient_checkpointing: bool = False
    targets: Targets | None = None  # answers from a dataset, masks from the trajectories
    stop: SaveAndStopOnSignal = field(default_factory=SaveAndStopOnSignal)
    notices: list[str] = field(default_factory=list)  # what `prepare` found to warn of

    def prepare(self) -> DistillTrainer | None:
        """The Trainer, after checking the inputs; None when the student is already there."""
        config, loaded = self.config, self.loaded
        dataset, self.notices = check_trajectories(self.trajectories, loaded)
        if self.targets is not None:
            dataset = join_targets(self.targets, dataset, loaded, config.only_correct)
        elif config.only_correct:
            dataset = dataset.filter(lambda record: record["correct"])
            if len(dataset) == 0:
                raise DistillConfigError(f"{self.trajectories}: no correct trajectory to "
                                         "train on (pass --all-answers to use them all)")
        canvas = len(dataset[0]["answer_ids"])
        largest = max(config.window_schedule, default=0)
        if largest > canvas:
            raise DistillConfigError(f"window size {largest} is larger than the answer length "
                                     f"{canvas} of {self.trajectories}")
        check_run(self.out / RUN_FILE, {"teacher": loaded.name, "merge": self.merge,
                                        "trajectories": str(self.trajectories.resolve()),
                                        "targets": self.targets and asdict(self.targets),
                                        **asdict(config)})
        if self.finished:
            return None
        set_seed(config.seed)  # LoRA's initial A matrices come from the global RNG
        trainer = DistillTrainer(
            model=build_student(loaded, config),
            args=training_arguments(config, self.out, self.device, self.bf16,
                                    self.gradient_checkpointing), train_dataset=dataset,
            data_collator=partial(collate, spec=loaded.spec), distill=config,
            spec=loaded.spec, callbacks=[JsonLog(self.out / LOG_FILE), self.stop])
        trainer.remove_callback(PrinterCallback)  # the progress bar and the JSON log report
        return trainer

    @property
    def finished(self) -> bool:
        """Whether the student is already written (its card is the export's last file)."""
        return (self.out / CARD).is_file()

    def run(self, trainer: DistillTrainer | None) -> Path | None:
        """Train and export, then delete the checkpoints (optimizer state included); None
        when a signal stopped the run (its step is saved). A finished run (no `trainer`, see
        `prepare`) does nothing."""
        if trainer is None:
            return self.out
        trainer.train(resume_from_checkpoint=last_complete_checkpoint(self.out / CHECKPOINTS))
        if self.stop.requested:
            return None
        if trainer.is_world_process_zero():
            export_student(trainer.model, self.loaded, self.config, self.merge, self.out,
                           self.trajectories)
            shutil.rmtree(self.out / CHECKPOINTS, ignore_errors=True)
        return self.out
