"""The in-memory form every source returns: uint8 images, integer labels, class names.

`TrainingSplit` is what condensation needs of a training split, met both by `ImageSet` (decoded
in memory) and by the streaming `ImageFiles` (files on disk): code written against it works on
either without asking which one it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class TrainingSplit(Protocol):
    """Labels and class names up front, uint8 pixels of any indices on request."""

    labels: torch.Tensor  # int64 [N], values in [0, num_classes)
    class_names: list[str]

    def __len__(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def channels(self) -> int: ...

    def class_counts(self) -> torch.Tensor: ...

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 [*indices.shape, C, H, W]: the images at `indices`."""
        ...


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N], values in [0, len(class_names))
    class_names: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be one int per image")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 [*indices.shape, C, H, W]: already decoded, so a gather (the `TrainingSplit`
        call the streaming split answers by reading files)."""
        return self.images[indices]
