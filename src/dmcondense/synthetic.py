"""How stored synthetic pixels become training images.

A method learns the stored tensor; networks, pictures, exports and `load_synthetic` see the
decoded training images. Today the decoding is the identity: each stored image is one training
image. Multi-formation (IDC, IDM, M3D) will decode one stored image into factor^2 smaller ones
here, and nothing outside this module needs to change.
"""

from __future__ import annotations

from torch import Tensor


class SyntheticImages:
    """The decode of `num_classes * ipc` stored images, class-major."""

    def __init__(self, num_classes: int, ipc: int) -> None:
        self.num_classes, self.ipc = num_classes, ipc

    @property
    def decoded_per_class(self) -> int:
        """Training images per class after decoding (the identity: `ipc`)."""
        return self.ipc

    def decode(self, stored: Tensor) -> Tensor:
        """Stored [classes * ipc, C, H, W] -> training images [classes * decoded_per_class, ...]."""
        return stored

    def decode_labels(self, labels: Tensor) -> Tensor:
        """Labels of the stored images -> labels of the decoded images, in the same order."""
        return labels

    def per_class(self, images: Tensor) -> Tensor:
        """Class-major decoded images -> [classes, decoded_per_class, C, H, W] (a view)."""
        return images.view(self.num_classes, self.decoded_per_class, *images.shape[1:])

    @classmethod
    def from_record(cls, record: dict) -> SyntheticImages:
        """The decoder of a synthetic.pt record (see io.py)."""
        num_classes = len(record["class_names"])
        return cls(num_classes, int(record["ipc"]))
