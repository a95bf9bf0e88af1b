"""What d3's two training commands (`pretrain`, `distill`) share on top of transformers'
`Trainer`: noise keyed by step, the run record a resume must match, the last whole
checkpoint, a JSON log, a progress bar, and a stop on Ctrl-C / SIGTERM that saves first."""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

CHECKPOINTS = "checkpoints"  # the Trainer's checkpoint-N folders, inside the run folder


class RunMismatchError(ValueError):
    """The output folder holds a run with other settings."""


class KeyedNoiseTrainer(Trainer):
    """A `Trainer` whose random draws in the loss come from `generator()`: a pure function of
    the seed, the optimizer step and the micro-batch's place in the step's global batch
    (micro-batch × processes + rank). A resumed run draws what the uninterrupted one did,
    and N processes with accumulation A draw what one process with N × A does (whose
    micro-batches are the same data, in that order)."""

    def __init__(self, *args: Any, noise_seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.noise_seed = noise_seed
        self.micro_step = (-1, 0)  # (global step, micro-batch within it)

    def generator(self) -> torch.Generator:
        step = self.state.global_step
        micro = self.micro_step[1] + 1 if self.micro_step[0] == step else 0
        self.micro_step = (step, micro)
        place = micro * self.args.world_size + self.args.process_index
        return torch.Generator().manual_seed(
            (self.noise_seed * 1009 * 1_000_003 + step) * 257 + place)


def check_run(path: Path, run: dict[str, Any]) -> None:
    """Record the run's settings in `path`, or check that a resumed run is the same one."""
    run = json.loads(json.dumps(run))  # tuples read back as lists
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(key for key in run if recorded.get(key) != run[key])
        if changed:
            raise RunMismatchError(f"{path.parent} holds a run with other settings "
                                   f"({', '.join(changed)}); use another --out")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")


def last_complete_checkpoint(folder: Path, required: Sequence[str] = ()) -> str | None:
    """The newest Trainer checkpoint written to the end (its trainer state is saved last,
    then any `required` file), so a kill during a save resumes from the one before."""
    complete = [path for path in folder.glob("checkpoint-*")
                if path.name.split("-")[-1].isdigit()
                and all((path / name).is_file() for name in ("trainer_state.json", *required))]
    return str(max(complete, key=lambda path: int(path.name.split("-")[-1]))) if complete else None


class JsonLog(TrainerCallback):
    """Every Trainer log record as one JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.write(state.global_step, logs)

    def write(self, step: int, record: dict[str, Any]) -> None:
        """Append one record (callers other than the Trainer's logging, e.g. evaluations)."""
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **record}) + "\n")


class RichProgress(TrainerCallback):
    """Drives a rich progress bar: optimizer steps, and the logged `terms` (label, key)."""

    def __init__(self, bar, job, terms: Sequence[tuple[str, str]] = (("loss", "loss"),)) -> None:
        self.bar, self.job, self.terms = bar, job, terms

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar.update(self.job, total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(self.job, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.bar.update(self.job, loss=" ".join(
                f"{label} {logs[key]:.3f}" for label, key in self.terms if key in logs))


class SaveAndStopOnSignal(TrainerCallback):
    """Ctrl-C or SIGTERM during training (one process) ends the current step, saves a
    checkpoint and stops; a second signal interrupts at once. With several processes the
    signal interrupts as usual (a save needs every rank at the same step), and a rerun
    resumes from the last periodic checkpoint."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if args.world_size == 1:
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self.request)

    def request(self, received: int, frame: Any) -> None:
        self.requested = True
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}
