"""Counting the eager work around the model: the aten operators dispatched outside its
forward calls (eager decoding) or outside the compiled decoding steps (`--compile`), each
one kernel launch on a GPU (a few µs apiece whatever its size).

The count pauses while the watched forward or step runs, so that it runs untouched and
torch.compile still compiles it. Used by the tests and the benchmarks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from . import driver


class EagerOps(TorchDispatchMode):
    """aten operators by name (`counts`) while active, and the running total at each forward's
    start and end."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.total = 0
        self.at_start: list[int] = []
        self.at_end: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        self.total += 1
        return func(*args, **(kwargs or {}))

    def pause(self) -> None:
        self.at_start.append(self.total)
        self.__exit__(None, None, None)

    def resume(self) -> None:
        self.__enter__()
        self.at_end.append(self.total)

    @property
    def forwards(self) -> int:
        return len(self.at_start)

    @property
    def gaps(self) -> list[int]:
        """Operators between each forward (or step) and the next."""
        return [start - end for start, end in zip(self.at_start[1:], self.at_end, strict=False)]

    @property
    def per_iteration(self) -> float:
        """Operators between the end of one forward and the start of the next, on average
        over the gaps between forwards (0 with fewer than two forwards)."""
        if self.forwards < 2:
            return 0.0
        return (self.at_start[-1] - self.at_end[0]) / (self.forwards - 1)


@contextmanager
def counting_eager_ops(forward: nn.Module) -> Iterator[EagerOps]:
    """Count the operators dispatched outside `forward`'s calls while the block runs. The
    count pauses before any other pre-hook and resumes after every other hook, so what a
    hook does belongs to the forward."""
    counter = EagerOps()

    def pause(module: nn.Module, args: tuple, kwargs: dict) -> None:
        counter.pause()

    def resume(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        counter.resume()

    handles = [forward.register_forward_pre_hook(pause, prepend=True, with_kwargs=True),
               forward.register_forward_hook(resume, with_kwargs=True, always_call=True)]
    try:
        with counter:
            yield counter
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def counting_eager_ops_outside_steps() -> Iterator[EagerOps]:
    """Count the operators dispatched outside the compiled decoding steps of every `--compile`
    decode started while the block runs (`forwards` counts the steps)."""
    counter = EagerOps()
    build = driver.compiled_step

    def watched(step: Callable[..., None], device: torch.device) -> Callable[..., None]:
        compiled = build(step, device)

        def run(*args: object) -> None:
            counter.pause()
            try:
                compiled(*args)
            finally:
                counter.resume()
        return run

    with mock.patch.object(driver, "compiled_step", watched), counter:
        yield counter
