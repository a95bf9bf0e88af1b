"""The decoding slots: every row's state on the decoding device, and the queue of prompts
that refills a slot when its row finishes (so the batch keeps its shape)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..canvas import left_pad
from ..checkpoints import ModelSpec

SAFETY_CAP_FORWARDS = 10_000  # §3.1 step 11: a row stops after this many forwards


def noise_key(seed: int, prompt_id: str) -> int:
    """A row's sampling key: a 32-bit hash of the run's seed and the prompt's id."""
    return zlib.crc32(f"{seed}\0{prompt_id}".encode())


@dataclass
class PromptQueue:
    """Every prompt of a run, left-padded to the longest, on the device (one upload)."""

    ids: Tensor  # [prompts, prompt_length]
    visible: Tensor  # [prompts, prompt_length] bool: False on padding
    keys: Tensor  # [prompts] sampling keys
    padded: bool  # some prompt is shorter than the longest (attention needs a mask)

    @classmethod
    def upload(cls, prompts: Sequence[Sequence[int]], keys: Sequence[int], pad_id: int,
               device: torch.device) -> PromptQueue:
        if any(len(prompt) == 0 for prompt in prompts):
            raise ValueError("empty prompt")
        ids, visible = left_pad(prompts, pad_id)
        padded = len({len(prompt) for prompt in prompts}) > 1
        return cls(ids.to(device), visible.to(device),
                   torch.tensor(list(keys), dtype=torch.long).to(device), padded)

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def prompt_length(self) -> int:
        return self.ids.shape[1]


@dataclass
class Rows:
    """Per-slot decoding state, all on the device: the canvas (left-padded prompt, then the
    answer), forwards used, the forward that committed each answer position (when asked for),
    the sampling key and the queue index of the prompt in the slot (-1: empty)."""

    canvas: Tensor  # [slots, prompt_length + gen_length]
    visible: Tensor  # [slots, same] bool
    prompt_length: int
    mask_id: int
    forwards: Tensor  # [slots]
    commit_step: Tensor | None  # [slots, gen_length], -1 where not committed
    keys: Tensor  # [slots]
    prompt: Tensor  # [slots]

    @classmethod
    def empty(cls, slots: int, queue: PromptQueue, gen_length: int, spec: ModelSpec,
              commit_steps: bool = False) -> Rows:
        device, length = queue.ids.device, queue.prompt_length + gen_length
        steps = torch.full((slots, gen_length), -1, device=device) if commit_steps else None
        return cls(canvas=torch.full((slots, length), spec.mask_token_id, device=device),
                   visible=torch.ones(slots, length, dtype=torch.bool, device=device),
                   prompt_length=queue.prompt_length, mask_id=spec.mask_token_id,
                   forwards=torch.zeros(slots, dtype=torch.long, device=device),
                   commit_step=steps,
                   keys=torch.zeros(slots, dtype=torch.long, device=device),
                   prompt=torch.full((slots,), -1, device=device))

    @property
    def slots(self) -> int:
        return self.canvas.shape[0]

    @property
    def length(self) -> int:
        return self.canvas.shape[1]

    @property
    def generation(self) -> Tensor:
        return self.canvas[:, self.prompt_length:]

    def masked(self) -> Tensor:
        return self.generation == self.mask_id

    def active(self, masked: Tensor) -> Tensor:
        """Slots holding a prompt that still has masks and forwards left."""
        return (self.prompt >= 0) & masked.any(1) & (self.forwards < SAFETY_CAP_FORWARDS)

    def refill(self, queue: PromptQueue, free: Tensor, first: int) -> Tensor:
        """Give the free slots (in slot order) the queued prompts from `first` on, as many as
        are left; slots that get none are emptied. Returns the refilled slots' mask."""
        rank = free.long().cumsum(0) - 1
        index = first + rank
        taken = free & (index < len(queue))
        index = index.clamp(0, len(queue) - 1)
        answer = torch.full_like(self.generation, self.mask_id)
        prompt = torch.cat([queue.ids[index], answer], 1)
        visible = torch.cat([queue.visible[index], torch.ones_like(answer, dtype=torch.bool)], 1)
        self.canvas.copy_(torch.where(taken[:, None], prompt, self.canvas))
        self.visible.copy_(torch.where(taken[:, None], visible, self.visible))
        self.forwards.masked_fill_(taken, 0)
        if self.commit_step is not None:
            self.commit_step.masked_fill_(taken[:, None], -1)
        self.keys.copy_(torch.where(taken, queue.keys[index], self.keys))
        self.prompt.copy_(torch.where(taken, index, torch.where(free, -1, self.prompt)))
        return taken

    def commit(self, served: Tensor, positions: Tensor, tokens: Tensor,
               chosen: Tensor) -> None:
        """Write `tokens` where `chosen` at answer `positions` [slots, k] of served slots,
        stamping those positions with the forward that committed them (the row's last)."""
        chosen = chosen & served[:, None]
        answer = self.generation
        answer.scatter_(1, positions, torch.where(chosen, tokens, answer.gather(1, positions)))
        if self.commit_step is not None:
            step = (self.forwards - 1)[:, None]
            self.commit_step.scatter_(1, positions, torch.where(
                chosen, step, self.commit_step.gather(1, positions)))
