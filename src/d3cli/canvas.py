"""Batch layout shared by training and decoding: left-padded prompts, then the answer canvas."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Stack token lists right-aligned: (ids [batch, longest], visible [batch, longest] bool)."""
    longest = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    visible = torch.zeros((len(sequences), longest), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, longest - len(sequence):] = torch.tensor(list(sequence), dtype=torch.long)
            visible[row, longest - len(sequence):] = True
    return ids, visible


def eos_padded(answers: Sequence[Sequence[int]], length: int, eos_id: int) -> Tensor:
    """Answers right-padded with EOS to `length` tokens (LLaDA's canvas); longer ones are cut."""
    canvas = torch.full((len(answers), length), eos_id, dtype=torch.long)
    for row, answer in enumerate(answers):
        answer = list(answer)[:length]
        canvas[row, :len(answer)] = torch.tensor(answer, dtype=torch.long)
    return canvas


def first_stop(tokens: Sequence[int], stop_ids: Sequence[int]) -> int:
    """Index of the first stop token (EOS/end-of-turn) in `tokens`, or len(tokens)."""
    stops = set(stop_ids)
    return next((index for index, token in enumerate(tokens) if token in stops), len(tokens))
