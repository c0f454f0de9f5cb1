"""Seeded generators keyed by (seed, *keys): every random draw in the project starts here.

Keys name the stream ("net", "real", "augment", ...) and the step, never the rank or the
clock, so a run repeats exactly and the layout of DDP ranks cannot change what is drawn.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed that depends on `seed` and every key, stable across processes."""
    text = repr((int(seed), *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(seed: int, *keys: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` on `device`, seeded by `derive_seed(seed, *keys)`."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g


def to_device(host: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A small host draw (an order, a pairing) moved to `device` without a host-device sync:
    through pinned memory, non-blocking, on a GPU. Drawn on the host, it is the same draw on
    every device and every GPU model."""
    device = torch.device(device)
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True)
