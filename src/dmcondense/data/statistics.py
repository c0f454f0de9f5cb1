"""Per-channel mean and std of a training split, for data sets whose config leaves them null.

They are estimated from a fixed-seed sample of at most `SAMPLE_SIZE` images (all of them when the
split is smaller): a streamed split is never decoded whole, and the in-memory and streaming paths
pick the same images, so both give the same constants.
"""

from __future__ import annotations

import torch

from dmcondense.data.imageset import TrainingSplit
from dmcondense.rng import generator

SAMPLE_SIZE = 2000
CHUNK = 256  # images converted to float at a time: bounds the float copy


def sample_indices(count: int, limit: int = SAMPLE_SIZE) -> torch.Tensor:
    """All of range(count) when it has at most `limit` items, else `limit` of them drawn with a
    fixed seed (sorted: files are then read in listing order)."""
    if count <= limit:
        return torch.arange(count)
    return torch.randperm(count, generator=generator(0, "statistics"))[:limit].sort().values


def statistics_sample(train: TrainingSplit, limit: int = SAMPLE_SIZE) -> torch.Tensor:
    """uint8 [n, C, H, W]: the images the statistics are computed from."""
    return train.decode(sample_indices(len(train), limit))


def channel_statistics(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and (unbiased) std of each channel of uint8 [N, C, H, W] images, in [0, 1] units."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), CHUNK):  # a loop over chunks, not over images
        chunk = images[start : start + CHUNK].to(torch.float64).div_(255)
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.numel() // channels
    mean = total / count
    var = (squares - count * mean.square()) / max(count - 1, 1)
    return mean.tolist(), var.clamp_(min=0).sqrt().tolist()
