"""Random resized crops, drawn for a whole batch at once from a named generator.

torchvision's `RandomResizedCrop` draws a box per image (ten tries at an area share in `scale`
and a log-uniform aspect ratio in `ratio`, the first that fits wins, else a centre crop of the
image's ratio clamped into `ratio`) and resizes it; it draws from the global RNG one image at a
time. Here the same procedure is vectorised over every image (all ten tries drawn at once) from
the generator the caller passes, and the boxes are resized by one `grid_sample` (bilinear,
border padding): the crop of a box equals `F.interpolate(box, size, bilinear)` up to its border
pixels, where `grid_sample` reads the pixel beyond the box edge instead of repeating the edge,
and without antialiasing when a box shrinks (none on CIFAR and MNIST at factor 1, where every
box is enlarged).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

TRIES = 10  # torchvision's attempts before the centre-crop fallback


def crop_uniforms(count: int, generator: torch.Generator) -> Tensor:
    """The uniforms [count, TRIES, 4] that `boxes_from` turns into `count` boxes."""
    return torch.rand(count, TRIES, 4, generator=generator, device=generator.device)


def crop_boxes(
    count: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """`count` boxes [count, 4] (top, left, box height, box width; long, on the generator's
    device) drawn as torchvision's RandomResizedCrop.get_params draws them."""
    return boxes_from(crop_uniforms(count, generator), height, width, scale, ratio)


def boxes_from(
    u: Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> Tensor:
    """Boxes [count, 4] from uniforms [count, TRIES, 4]: try t takes an area share and a
    log-uniform aspect ratio from u[:, t, :2]; the first try that fits places its box by
    u[:, t, 2:]; an image with no fitting try gets torchvision's centred fallback."""
    device = u.device
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    low, high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(low + (high - low) * u[..., 1])
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits
    found = fits.any(dim=1)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]
    top = torch.floor(u[..., 2].gather(1, first)[:, 0] * (height - h + 1)).long()
    left = torch.floor(u[..., 3].gather(1, first)[:, 0] * (width - w + 1)).long()
    # torchvision's fallback: the whole image at its ratio clamped into `ratio`, centred.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], device=device)
    boxes = torch.stack([top, left, h, w], dim=1)
    return torch.where(found[:, None], boxes, fallback)


def resized_crops(images: Tensor, boxes: Tensor, size: int) -> Tensor:
    """The box of each image [N, C, H, W] (boxes [N, 4] as `crop_boxes`) resized to size x size,
    in one batched `grid_sample`."""
    n, _, height, width = images.shape
    boxes = boxes.to(images.device, torch.float32)
    top, left, h, w = boxes.unbind(dim=1)
    steps = (torch.arange(size, device=images.device, dtype=torch.float32) + 0.5) / size
    # Pixel centres of the output in input pixels, then grid_sample's [-1, 1] (align_corners=False).
    ys = (top[:, None] + steps[None] * h[:, None]) / height * 2 - 1
    xs = (left[:, None] + steps[None] * w[:, None]) / width * 2 - 1
    grid = torch.stack(
        [xs[:, None, :].expand(n, size, size), ys[:, :, None].expand(n, size, size)], dim=-1
    )
    return F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def default_crop_factor(image_size: int) -> int:
    """RDED's factor: 1 on CIFAR-sized images (32 and below), 2 on larger ones."""
    return 1 if image_size <= 32 else 2


def shuffle_strips(x: Tensor, keys: Tensor, dim: int) -> Tensor:
    """Cut each image of x [N, C, H, W] into len(keys[i]) equal strips along `dim` (2: rows,
    3: columns) and put them in the order that sorts keys [N, f] (a random permutation)."""
    f = keys.shape[1]
    if f == 1:
        return x
    n, c, height, width = x.shape
    order = keys.argsort(dim=1)
    if dim == 3:
        strips = x.reshape(n, c, height, f, width // f)
        index = order.view(n, 1, 1, f, 1).expand_as(strips)
        return strips.gather(3, index).reshape(n, c, height, width)
    strips = x.reshape(n, c, f, height // f, width)
    index = order.view(n, 1, f, 1, 1).expand_as(strips)
    return strips.gather(2, index).reshape(n, c, height, width)


class PatchShuffleCrop:
    """RDED's training augmentation (their validation/main.py), per image: the stored mosaic's
    column strips and then its row strips shuffled (`ShufflePatches(factor)`), a random
    resized crop back to full size (area share in (1 / factor, 1), aspect ratio in (3/4, 4/3)),
    a horizontal flip with probability 0.5. DSA's interface (`sample`, `apply`), so the
    evaluation trainers run it as they run DSA; every draw from the generator given."""

    def __init__(self, factor: int = 1) -> None:
        if factor < 1:
            raise ValueError(f"factor must be 1 or more, got {factor}")
        self.factor = factor
        self.scale = (1.0 / factor, 1.0)
        self.ratio = (3.0 / 4.0, 4.0 / 3.0)

    def __repr__(self) -> str:
        return f"PatchShuffleCrop(factor={self.factor})"

    def sample(
        self, n: int, generator: torch.Generator, one_family: bool = False
    ) -> dict[str, Tensor]:
        """`n` images' draws; `one_family` is DSA's and means nothing here."""
        device = generator.device
        f = self.factor
        return {
            "columns": torch.rand(n, f, generator=generator, device=device),
            "rows": torch.rand(n, f, generator=generator, device=device),
            "crop": crop_uniforms(n, generator),
            "flip": torch.rand(n, generator=generator, device=device),
        }

    def apply(self, x: Tensor, params: dict[str, Tensor], index: Tensor | None = None) -> Tensor:
        if index is not None:
            params = {key: value[index] for key, value in params.items()}
        height, width = x.shape[-2:]
        if height % self.factor or width % self.factor:
            raise ValueError(f"factor {self.factor} does not cut {height}x{width} into strips")
        x = shuffle_strips(x, params["columns"].to(x.device), dim=3)
        x = shuffle_strips(x, params["rows"].to(x.device), dim=2)
        boxes = boxes_from(params["crop"], height, width, self.scale, self.ratio)
        if height != width:
            raise ValueError("PatchShuffleCrop resizes to square images only")
        x = resized_crops(x, boxes, height)
        flip = (params["flip"] < 0.5).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)
