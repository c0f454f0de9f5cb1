"""How stored synthetic pixels become training images.

A method learns the stored tensor; networks, pictures, exports and `load_synthetic` see the
decoded training images. With `factor` 1 the decoding is the identity. With multi-formation
(IDC, used by IDM and M3D) `factor` f cuts each stored H x W image into f x f tiles of
H/f x W/f and upsamples each tile back to H x W (bilinear): f^2 training images a stored image,
all with its label. The stored pixel budget stays `ipc` images a class.

Decoded order is class-major, then stored image, then tile in row-major order (top-left,
top-right, ..., bottom-right), so a class's decoded images stay contiguous.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

# How the init downsamples a real image into its tile: bilinear (IDM) | nearest (IDC and M3D,
# F.interpolate's default there).
INIT_RESIZES = ("bilinear", "nearest")


class SyntheticImages:
    """The decode of `num_classes * ipc` stored images, class-major."""

    def __init__(self, num_classes: int, ipc: int, factor: int = 1) -> None:
        if factor < 1:
            raise ValueError(f"synthetic.factor must be 1 or more, got {factor}")
        self.num_classes, self.ipc, self.factor = num_classes, ipc, factor

    @property
    def tiles(self) -> int:
        """Training images a stored image decodes into (factor^2)."""
        return self.factor**2

    @property
    def decoded_per_class(self) -> int:
        """Training images per class after decoding: ipc * factor^2."""
        return self.ipc * self.tiles

    def tile_shape(self, height: int, width: int) -> tuple[int, int]:
        if height % self.factor or width % self.factor:
            raise ValueError(f"factor {self.factor} does not cut {height}x{width} into tiles")
        return height // self.factor, width // self.factor

    def decode(self, stored: Tensor) -> Tensor:
        """Stored [classes * ipc, C, H, W] -> training images [classes * decoded_per_class, ...]."""
        if self.factor == 1:
            return stored
        n, c, height, width = stored.shape
        (h, w), f = self.tile_shape(height, width), self.factor
        tiles = stored.reshape(n, c, f, h, f, w).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.reshape(n * f * f, c, h, w)
        return F.interpolate(tiles, size=(height, width), mode="bilinear", align_corners=False)

    def encode(self, images: Tensor, resize: str = "bilinear") -> Tensor:
        """Pack full-size images [classes * decoded_per_class, C, H, W] (in decoded order) into
        stored images: each is downsampled (`resize`: bilinear | nearest) into its tile. The init
        of multi-formation: decoding the result gives back blurred copies of `images`."""
        if resize not in INIT_RESIZES:
            raise ValueError(
                f"unknown synthetic.init_resize '{resize}'; choose one of {', '.join(INIT_RESIZES)}"
            )
        if self.factor == 1:
            return images
        m, c, height, width = images.shape
        (h, w), f = self.tile_shape(height, width), self.factor
        if resize == "nearest":
            small = F.interpolate(images, size=(h, w), mode="nearest")
        else:
            small = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)
        stored = small.reshape(m // (f * f), f, f, c, h, w).permute(0, 3, 1, 4, 2, 5)
        return stored.reshape(m // (f * f), c, height, width)

    def decode_labels(self, labels: Tensor) -> Tensor:
        """Labels of the stored images -> labels of the decoded images, in the same order."""
        return labels if self.factor == 1 else labels.repeat_interleave(self.tiles)

    def per_class(self, images: Tensor) -> Tensor:
        """Class-major decoded images -> [classes, decoded_per_class, C, H, W] (a view)."""
        return images.view(self.num_classes, self.decoded_per_class, *images.shape[1:])

    @classmethod
    def from_record(cls, record: dict) -> SyntheticImages:
        """The decoder of a synthetic.pt record (see io.py); records without a factor are 1."""
        num_classes = len(record["class_names"])
        return cls(num_classes, int(record["ipc"]), int(record.get("factor", 1)))
