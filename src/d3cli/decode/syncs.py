"""Counting the calls that would make the host wait for an accelerator, on any device.

On a CPU nothing waits, so the count is of the calls themselves: reading values on the
host (`.item()`, `.tolist()`, `.cpu()`, `.numpy()`, `bool()`/`int()`/`float()` of a tensor),
operations whose output size depends on values (`nonzero`, one-argument `where`,
`masked_select`, `unique`, boolean-mask indexing) and host-to-device copies (tensors built
from Python data, indexing with Python lists). Used by the tests and the GPU benchmark.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

Tensor = torch.Tensor
READS = {Tensor.item, Tensor.tolist, Tensor.cpu, Tensor.numpy, Tensor.__bool__, Tensor.__int__,
         Tensor.__float__, Tensor.__index__}
VALUE_SHAPED = {Tensor.nonzero, torch.nonzero, Tensor.argwhere, torch.argwhere,
                Tensor.masked_select, torch.masked_select, Tensor.unique, torch.unique,
                torch.unique_consecutive, Tensor.nonzero_static}
FROM_HOST = {torch.tensor, torch.as_tensor, torch.from_numpy, Tensor.new_tensor}
INDEXING = {Tensor.__getitem__, Tensor.__setitem__}


def _host_index(index: Any) -> bool:
    """An index that needs a value-dependent shape (bool tensor) or a host copy (list)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(part, list)
               or (isinstance(part, Tensor) and part.dtype == torch.bool) for part in parts)


class HostSyncCounter(TorchFunctionMode):
    """Counts would-be host synchronisations by kind while active (`counts`, `total`)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if func in READS or func in VALUE_SHAPED or func in FROM_HOST:
            self.counts[name] += 1
        elif func is torch.where and len(args) + len(kwargs) == 1:
            self.counts["where"] += 1
        elif func in INDEXING and len(args) > 1 and _host_index(args[1]):
            self.counts[f"{name} (host index)"] += 1
        elif func in (Tensor.to, Tensor.cuda, Tensor.copy_) and _host_to_device(func, args,
                                                                              kwargs):
            self.counts["host to device"] += 1
        return func(*args, **kwargs)


def _host_to_device(func, args: tuple, kwargs: dict) -> bool:
    """A copy from a CPU tensor onto another device."""
    if func is Tensor.copy_:
        return args[0].device.type != "cpu" and args[1].device.type == "cpu"
    target = kwargs.get("device") or next((a for a in args[1:] if isinstance(
        a, (str, torch.device))), None)
    if func is Tensor.cuda:
        target = "cuda"
    return target is not None and args[0].device.type == "cpu" and \
        torch.device(target).type != "cpu"
