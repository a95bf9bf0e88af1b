"""What every strategy gives the driver: a plan for the next forward, then its commits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from torch import Tensor

from .scoring import Certainty, Scores


@dataclass
class Plan:
    """One iteration's plan, as device tensors over every slot.

    `read` are the answer positions whose logits the strategy reads. Under a cache, a row
    recomputes the K/V of positions [fresh_from, fresh_to) and keeps its cached K/V
    elsewhere; `need_start` is the latest start of a suffix window that still covers what
    the row recomputes and reads, and `block_only` marks rows a window of just their block
    serves (the dual cache). Without a cache every forward is the whole canvas.
    `read_need` is set when `read` is every answer position: per row, the first column it
    needs (a block boundary); the driver may drop the columns no served row needs.
    """

    active: Tensor  # [slots] bool
    read: Tensor  # [slots, k]
    fresh_from: Tensor | None = None  # [slots] absolute positions
    fresh_to: Tensor | None = None  # [slots]
    need_start: Tensor | None = None  # [slots]
    block_only: Tensor | None = None  # [slots] bool
    read_need: Tensor | None = None  # [slots]

    def from_column(self, start: int) -> Plan:
        """The plan reading only columns `start:` of `read`."""
        return replace(self, read=self.read[:, start:])


class Strategy(Protocol):
    """A decoding method: which positions the next forward must give, which to commit."""

    uses_cache: bool
    # What `commit` reads from its scores (the driver computes only that). Dream's own
    # decoding ranks by the entropy of the proposal (after temperature and top-p), the
    # others by the raw logits' confidence or entropy (§3.6).
    certainty: Certainty

    def reset(self, slots: Tensor) -> None:
        """The rows in `slots` [slots] bool start a new prompt."""

    def plan(self) -> Plan:
        """The next forward's plan, from the current state (changes nothing)."""

    def commit(self, plan: Plan, scores: Scores, logits: Tensor, served: Tensor) -> None:
        """Commit tokens of the served rows from `scores` over `plan.read`; update state."""
