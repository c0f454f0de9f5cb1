"""CutMix for the evaluation protocols of IDC, M3D and NCFM, drawn from a named generator.

With probability `p` a training batch is mixed: a box of the images is replaced by the same box
of a partner image (a random permutation of the batch), and each image's label becomes
(1 - pasted fraction) x its own + pasted fraction x its partner's, the fraction being the
box's actual area (after clipping at the border) over the image's. The box: lam ~ U(0, 1)
(Beta(1, 1), the authors' beta), sides int(H sqrt(1 - lam)) and int(W sqrt(1 - lam)), centred
on a uniform pixel and clipped, one box for the whole batch, as the authors' training loops do.

Not torchvision's `transforms.v2.CutMix`: it draws lam, the box and the pairing from the global
RNG (no generator argument), so a network's draws would depend on what ran before it and the
sequential and batched trainers could not draw the same numbers. Here every draw comes from the
generator the caller passes (generator(seed, "eval-cutmix", i, epoch), protocol.py), on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dmcondense.rng import to_device


@dataclass(frozen=True)
class CutMixDraw:
    """One batch's CutMix: whether it applies, the box rows [top, bottom) and columns
    [left, right), and each image's partner (CPU, long)."""

    apply: bool
    top: int
    bottom: int
    left: int
    right: int
    partner: Tensor

    def pasted_fraction(self, height: int, width: int) -> float:
        """The share of each image that comes from its partner (0 when not applied)."""
        if not self.apply:
            return 0.0
        return (self.bottom - self.top) * (self.right - self.left) / (height * width)


def draw_cutmix(
    batch_size: int, height: int, width: int, probability: float, generator: torch.Generator
) -> CutMixDraw:
    """One batch's draw. Always consumes the same numbers, applied or not, so a network's later
    draws do not depend on earlier outcomes."""
    apply_u, lam = torch.rand(2, generator=generator).tolist()
    centre_row = int(torch.randint(height, (1,), generator=generator))
    centre_col = int(torch.randint(width, (1,), generator=generator))
    partner = torch.randperm(batch_size, generator=generator)
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    return CutMixDraw(
        apply=apply_u < probability,
        top=min(max(centre_row - cut_h // 2, 0), height),
        bottom=min(max(centre_row + cut_h // 2, 0), height),
        left=min(max(centre_col - cut_w // 2, 0), width),
        right=min(max(centre_col + cut_w // 2, 0), width),
        partner=partner,
    )


def paste(images: Tensor, draw: CutMixDraw) -> Tensor:
    """Images [B, C, H, W] with the draw's box pasted from the partners (unchanged when the
    draw does not apply)."""
    if not draw.apply:
        return images
    partner = to_device(draw.partner, images.device)
    mixed = images.clone()
    box = (..., slice(draw.top, draw.bottom), slice(draw.left, draw.right))
    mixed[box] = images[partner][box]
    return mixed


def mixed_targets(
    labels: Tensor, draw: CutMixDraw, num_classes: int, height: int, width: int
) -> Tensor:
    """Soft targets [B, num_classes]: (1 - pasted fraction) x one-hot of the own label +
    pasted fraction x one-hot of the partner's. Cross-entropy against them equals the authors'
    (1 - f) CE(own) + f CE(partner). `labels` may already be probabilities [B, num_classes]
    (a teacher's), mixed the same way."""
    own = labels.float() if labels.dim() == 2 else F.one_hot(labels, num_classes).float()
    if not draw.apply:
        return own
    pasted = draw.pasted_fraction(height, width)
    return (1.0 - pasted) * own + pasted * own[to_device(draw.partner, labels.device)]


def cutmix(
    images: Tensor, labels: Tensor, num_classes: int, draw: CutMixDraw
) -> tuple[Tensor, Tensor]:
    """`paste` and `mixed_targets` together: mixed images [B, C, H, W], soft targets [B, K]."""
    height, width = images.shape[-2:]
    return paste(images, draw), mixed_targets(labels, draw, num_classes, height, width)
