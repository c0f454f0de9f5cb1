"""One normaliser: uint8 pixels <-> network input <-> [0, 1], per channel with a data set's
mean and std. Everything that turns pixels into network input, or back into pictures, uses it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class Normaliser:
    """network input = (pixels / 255 - mean) / std, channel by channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} channels but std has {len(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._constants: dict[torch.device, dict[str, Tensor]] = {}

    def __repr__(self) -> str:
        return f"Normaliser(mean={list(self.mean)}, std={list(self.std)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Normaliser) and (self.mean, self.std) == (other.mean, other.std)

    def __hash__(self) -> int:
        return hash((self.mean, self.std))

    def constants(self, device: torch.device | str) -> dict[str, Tensor]:
        """float32 [1, C, 1, 1] tensors on `device`, made once per device: mean, std, and the
        fused form's scale 1 / (255 std) and shift mean / std."""
        device = torch.device(device)
        if device not in self._constants:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(self.mean, dtype=torch.float32).view(shape)
            std = torch.tensor(self.std, dtype=torch.float32).view(shape)
            made = {"mean": mean, "std": std, "scale": 1.0 / (255.0 * std), "shift": mean / std}
            self._constants[device] = {k: v.to(device) for k, v in made.items()}
        return self._constants[device]

    def to_input(self, images: Tensor) -> Tensor:
        """uint8 [N, C, H, W] -> normalised float32; float images are taken as normalised."""
        if images.dtype != torch.uint8:
            return images
        c = self.constants(images.device)
        return (images.float().div_(255.0) - c["mean"]) / c["std"]

    def to_input_fused(self, images: Tensor) -> Tensor:
        """uint8 -> normalised float32 as pixels * scale - shift: two in-place passes, for the
        condensation step's hot path. It rounds differently from `to_input` in the last bit, so
        each caller keeps the form it has always used (results stay bit for bit the same)."""
        c = self.constants(images.device)
        return images.float().mul_(c["scale"]).sub_(c["shift"])

    def to_unit(self, images: Tensor) -> Tensor:
        """Normalised float -> pixels in [0, 1] (clamped), for pictures and exports."""
        mean = torch.as_tensor(self.mean, dtype=images.dtype, device=images.device)
        std = torch.as_tensor(self.std, dtype=images.dtype, device=images.device)
        shape = (1, -1, 1, 1)
        return (images * std.view(shape) + mean.view(shape)).clamp(0, 1)

    def to_uint8(self, images: Tensor) -> Tensor:
        """Normalised float -> uint8 pixels, round(to_unit * 255)."""
        return self.to_unit(images.detach().float().cpu()).mul(255).round().to(torch.uint8)
