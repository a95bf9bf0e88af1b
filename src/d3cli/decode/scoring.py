"""Scoring the model's proposals, and the selection rules the strategies share.

Section marks (§3.1 ...) follow the d3LLM decoding specification the strategies implement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from ..checkpoints import ModelSpec

UINT32 = 0xFFFFFFFF


# What a strategy ranks positions by: the proposal's probability, the entropy of the raw
# logits, or the entropy of the proposal distribution (after temperature and top-p).
Certainty = Literal["confidence", "entropy", "proposal_entropy"]


@dataclass
class Scores:
    """Per-position proposal and the certainty its strategy ranks by (the other is None):
    confidence, or entropy in nats."""

    tokens: Tensor
    confidence: Tensor | None = None
    entropy: Tensor | None = None


def pcg_hash(values: Tensor) -> Tensor:
    """A 32-bit PCG hash of int64 values below 2**32, computed in int64 without overflow."""
    state = (values * 747796405 + 2891336453) & UINT32
    word = (((state >> ((state >> 28) + 4)) ^ state) * 277803737) & UINT32
    return (word >> 22) ^ word


def token_hashes(vocab_size: int, device: torch.device) -> Tensor:
    """Each token id's hash [V], the part of `gumbel_noise` that never changes."""
    return pcg_hash(torch.arange(vocab_size, device=device))


def gumbel_noise(keys: Tensor, forwards: Tensor, positions: Tensor, tokens: Tensor,
                 dtype: torch.dtype) -> Tensor:
    """Gumbel(0, 1) noise [rows, k, V], a pure function of each row's key (seed and prompt
    id), its forward count, the answer position and the token (`tokens`: `token_hashes`):
    a row's draws never depend on the batch it shares or the slot it sits in."""
    row = pcg_hash((pcg_hash(keys) + forwards) & UINT32)
    cell = pcg_hash(row[:, None] ^ pcg_hash(positions))
    uniform = (pcg_hash(cell[:, :, None] ^ tokens).to(torch.float64) + 0.5) / (UINT32 + 1)
    return (-torch.log(-torch.log(uniform))).to(dtype)


def nucleus(logits: Tensor, top_p: float) -> Tensor:
    """`logits` with every token outside the top-p nucleus at the lowest finite number: the
    smallest set of most likely tokens whose probability reaches `top_p` (the first token
    always stays)."""
    ordered, order = logits.sort(-1, descending=True)
    beyond = ordered.softmax(-1).cumsum(-1) > top_p
    beyond[..., 1:] = beyond[..., :-1].clone()
    beyond[..., 0] = False
    drop = torch.zeros_like(beyond).scatter_(-1, order, beyond)
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def entropy_of(logits: Tensor) -> Tensor:
    """Entropy (nats) of softmax(`logits`) over the last axis: one batched dot product of the
    fused softmax and log-softmax (no [rows, k, V] product tensor)."""
    vocab = logits.shape[-1]
    dot = torch.bmm(logits.softmax(-1).view(-1, 1, vocab),
                    logits.log_softmax(-1).view(-1, vocab, 1))
    return dot.view(logits.shape[:-1]).neg()


def score(logits: Tensor, mask_id: int, temperature: float, noise: Tensor | None,
          dtype: torch.dtype, top_p: float = 1.0,
          certainty: Certainty = "entropy") -> Scores:
    """Proposed tokens with the `certainty` their strategy ranks by, computed in `dtype`;
    `logits` are consumed (changed in place when already in `dtype`).

    The proposal distribution is softmax(logits / T) cut to its top-p nucleus (T = 0: no
    scaling). T = 0 takes its argmax; T > 0 takes Gumbel-max over it (`noise` is the Gumbel
    draw), which samples it. Confidence (probability of the proposal) comes from the softmax
    of the raw logits, and so does the entropy unless `certainty` asks for the proposal
    distribution's (Dream's own decoding). The mask token is never proposed: its logit
    becomes the lowest finite number, so its probability and its p·log p are exactly 0.
    Only what the strategy reads is computed: confidence takes one softmax over the
    vocabulary, entropy a softmax and a log-softmax. Both come from the fused kernels (a
    separate `exp` over very negative log-probabilities is several times slower on CPU).
    """
    logits = logits.to(dtype)
    logits.select(-1, mask_id).fill_(torch.finfo(dtype).min)
    proposal = logits / temperature if temperature > 0 else logits
    if top_p < 1:
        proposal = nucleus(proposal, top_p)
    tokens = (proposal + noise).argmax(-1) if temperature > 0 else proposal.argmax(-1)
    if certainty == "confidence":
        confidence = logits.softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
        return Scores(tokens, confidence=confidence)
    return Scores(tokens, entropy=entropy_of(proposal if certainty == "proposal_entropy"
                                             else logits))


def one_hot_best(values: Tensor, lowest: bool = False) -> Tensor:
    """Boolean mask of each row's highest (or lowest) value."""
    index = (values.argmin if lowest else values.argmax)(1, keepdim=True)
    return torch.zeros_like(values, dtype=torch.bool).scatter_(1, index, True)


def top_k_per_row(values: Tensor, counts: Tensor) -> Tensor:
    """Boolean mask of the `counts[row]` highest values of each row."""
    ranks = values.argsort(dim=-1, descending=True).argsort(dim=-1)
    return ranks < counts[:, None]


def entropy_selection(entropy: Tensor, candidates: Tensor, gamma: float,
                      spec: ModelSpec) -> Tensor:
    """§3.1 step 9: candidates under the entropy threshold, plus (LLaDA rule) the lowest one.

    LLaDA: `H ≤ γ` and the global lowest-entropy candidate always; Dream: `H < γ` only.
    """
    below = entropy < gamma if spec.strict_entropy_threshold else entropy <= gamma
    selected = below & candidates
    if spec.commit_lowest_entropy:
        lowest = one_hot_best(entropy.masked_fill(~candidates, math.inf), lowest=True)
        selected |= lowest & candidates.any(1, keepdim=True)
    return selected
