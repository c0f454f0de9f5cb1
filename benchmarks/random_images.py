"""Seeded uint8 noise in a data set's shape, for benchmarks and device checks: timing needs
shapes, not content.

Imported as `random_images` by scripts run from a checkout: `python benchmarks/step_time.py`
finds it beside itself, scripts/device_check.py puts benchmarks/ on sys.path first.
"""

from __future__ import annotations

import torch

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.imageset import ImageSet
from dmcondense.rng import generator


class RandomImagesDataModule(ClassBatchDataModule):
    """`per_class` noise images of every class, drawn from a fixed seed per split."""

    def __init__(self, per_class: int, side: int = 32, channels: int = 3, **kwargs) -> None:
        super().__init__(source="random", data_dir="", **kwargs)
        self.per_class_images, self.side, self.channels = per_class, side, channels

    def load(self, split: str) -> ImageSet:
        n = self.num_classes * self.per_class_images
        g = generator(0, "random-images", split)
        shape = (n, self.channels, self.side, self.side)
        images = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        labels = torch.arange(self.num_classes).repeat_interleave(self.per_class_images)
        return ImageSet(images, labels, [str(c) for c in range(self.num_classes)])
