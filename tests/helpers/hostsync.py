"""Host-device syncs and host-to-device copies, found on the CPU.

On the CPU every tensor is on "the device", so a sync cannot be seen directly. `HostSyncs`
tracks which tensors would live on the GPU in a GPU run: every tensor alive when it starts
(the module's pixels and networks, the data store, the batch; not an optimiser's step count)
and everything computed from one, made with an explicit `device=`, or moved with
`.to(device)`. Tensors made without a device
(`torch.randperm(n, generator=g)`) are host tensors. It then records:

  sync   a device tensor read by the host: `.item()`, `float(t)`, `int(t)`, `bool(t)`,
         `.tolist()`, `.numpy()`, `.cpu()` (aten._local_scalar_dense or a copy back)
  copy   a host tensor copied to the device without `non_blocking=True` (`.to(device)`,
         `.cuda()`, `copy_` into a device tensor, `torch.tensor(..., device=...)`): PyTorch waits
         for the stream after such a copy
  index  a device tensor indexed by a host index tensor (the index is copied over first)

A `.to(device, non_blocking=True)` of a host tensor is no sync (Lightning moves each batch so).
"""

from __future__ import annotations

import gc
import sys
import warnings
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

READS = {
    torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__,
    torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
}  # fmt: skip
MOVES = {torch.Tensor.to, torch.Tensor.cuda}
FACTORIES_FROM_DATA = {torch.tensor, torch.as_tensor}
INDEXING = {torch.Tensor.__getitem__, torch.Tensor.index_select, torch.index_select}


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _names_device(args: tuple, kwargs: dict) -> bool:
    if kwargs.get("device") is not None:
        return True
    return any(isinstance(a, torch.device) or (isinstance(a, str) and a.split(":")[0] in
               ("cpu", "cuda")) for a in args)  # fmt: skip


def _caller() -> str:
    """The innermost frame outside torch and this module: file:line."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/torch/" not in name and not name.endswith("hostsync.py"):
            return f"{name.rsplit('/', 2)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


@dataclass
class HostSyncs(TorchFunctionMode):
    """Inside `with HostSyncs() as found:`, `found.events` lists (kind, function) per event."""

    events: list[tuple[str, str]] = field(default_factory=list)
    places: list[str] = field(default_factory=list)  # where each event was, for the message

    def __post_init__(self) -> None:
        super().__init__()
        self.device_tensors = WeakIdKeyDictionary()

    def __enter__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gc walks deprecated torch names
            tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
            optimizers = [o for o in gc.get_objects() if isinstance(o, torch.optim.Optimizer)]
        for t in tensors:
            self.device_tensors[t] = True
        # torch's Adam, AdamW and SGD keep their step counts on the host (unless capturable or
        # fused) so that reading them is no sync.
        for optimizer in optimizers:
            for state in optimizer.state.values():
                step = state.get("step")
                if isinstance(step, torch.Tensor) and step in self.device_tensors:
                    del self.device_tensors[step]
        return super().__enter__()

    def on_device(self, t: torch.Tensor) -> bool:
        return t in self.device_tensors

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _tensors(args) + _tensors(kwargs)
        name = getattr(func, "__qualname__", getattr(func, "__name__", repr(func)))
        from_device = any(self.on_device(t) for t in inputs)
        moved = (func in MOVES and _names_device(args[1:], kwargs)) or func is torch.Tensor.cuda
        if func in READS and inputs and self.on_device(inputs[0]):
            self.events.append(("sync", name))
        elif moved and inputs and not self.on_device(inputs[0]):
            if not kwargs.get("non_blocking", False):
                self.events.append(("copy", name))
        elif func is torch.Tensor.copy_ and self.on_device(args[0]) and not self.on_device(args[1]):
            if not (len(args) > 2 and args[2]) and not kwargs.get("non_blocking", False):
                self.events.append(("copy", name))
        elif func in FACTORIES_FROM_DATA and kwargs.get("device") is not None:
            self.events.append(("copy", name))
        elif func in INDEXING and inputs and self.on_device(inputs[0]):
            hosts = [t for t in inputs[1:] if not self.on_device(t) and t.numel() > 1]
            if hosts:
                self.events.append(("index", name))
        if len(self.places) < len(self.events):
            self.places.append(_caller())
        out = func(*args, **kwargs)
        made_on_device = kwargs.get("device") is not None or moved
        if (from_device or made_on_device) and func not in READS:
            for t in _tensors(out):
                self.device_tensors[t] = True
        return out
