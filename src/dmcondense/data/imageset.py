"""The in-memory form every source returns: uint8 images, integer labels, class names.

`TrainingSplit` is what condensation needs of a training split, met both by `ImageSet` (decoded
in memory) and by the streaming `ImageFiles` (files on disk): code written against it works on
either without asking which one it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    def subset(
        self, indices: torch.Tensor, labels: torch.Tensor, class_names: list[str]
    ) -> TrainingSplit:
        """The images at `indices` alone, relabelled `labels`, of the classes `class_names`."""
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

    def subset(
        self, indices: torch.Tensor, labels: torch.Tensor, class_names: list[str]
    ) -> ImageSet:
        """A copy holding the images at `indices` only (indexing with a tensor copies, so the
        whole split can be freed)."""
        return ImageSet(self.images[indices], labels, list(class_names))


def keep_classes(
    split: TrainingSplit, classes: Sequence[int]
) -> tuple[TrainingSplit, torch.Tensor]:
    """The images of `classes` alone, relabelled by their position in `classes` (class
    `classes[j]` becomes label j), in the split's order; and their indices in `split`.

    A class-incremental step condenses its own classes from this: it holds only their images.
    """
    wanted = torch.as_tensor(list(classes), dtype=torch.long)
    if wanted.numel() == 0 or len(set(wanted.tolist())) != wanted.numel():
        raise ValueError(f"classes must be distinct and not empty, got {list(classes)}")
    if int(wanted.min()) < 0 or int(wanted.max()) >= split.num_classes:
        raise ValueError(f"classes must lie in [0, {split.num_classes}), got {list(classes)}")
    position = torch.full((split.num_classes,), -1, dtype=torch.long)
    position[wanted] = torch.arange(wanted.numel())
    source_indices = torch.nonzero(position[split.labels] >= 0).squeeze(1)
    labels = position[split.labels[source_indices]]
    names = [split.class_names[c] for c in wanted.tolist()]
    return split.subset(source_indices, labels, names), source_indices
