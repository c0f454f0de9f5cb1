"""ZCA whitening of a data set (`dataset.zca=true`), as MTT's authors whiten CIFAR with kornia's
`ZCAWhitening(eps=0.1)`: images in [0, 1], flattened to D = C H W values; the mean image and the
(unbiased) covariance of the training split; with U diag(S) U^T its eigendecomposition,

    whiten(x)   = (x - mean) U diag(1 / sqrt(S + eps)) U^T
    unwhiten(z) = z U diag(sqrt(S + eps)) U^T + mean

The fit accumulates the covariance in float64 batch by batch (kornia takes an SVD of a float32
covariance; the two agree to rounding). `ZCANormaliser` puts it where the per-channel normaliser
sits, so everything that turns pixels into network input or back into pictures (condensation,
evaluation, synthetic.png, export) whitens or unwhitens the same way. Its state (mean,
eigenvectors, eigenvalues, eps) travels in synthetic.pt, so a set is scored and exported without
refitting.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError

FIT_BATCH = 4096  # images a batch while accumulating the covariance


class ZCA:
    """A fitted ZCA whitening of images of shape `shape` (C, H, W)."""

    def __init__(
        self, mean: Tensor, eigvecs: Tensor, eigvals: Tensor, eps: float, shape: Sequence[int]
    ) -> None:
        # Rounded to the float32 that synthetic.pt keeps, so a fitted whitening and one read back
        # from a saved set are the same matrices to the bit (train and evaluate agree).
        self.mean = mean.float().double()
        self.eigvecs, self.eigvals = eigvecs.float().double(), eigvals.float().double()
        self.eps, self.shape = float(eps), tuple(int(s) for s in shape)
        scale = (self.eigvals.clamp_min(0.0) + self.eps).sqrt()
        # float32 on the device of use, made once per device
        self._whiten = ((self.eigvecs / scale) @ self.eigvecs.T).float()
        self._unwhiten = ((self.eigvecs * scale) @ self.eigvecs.T).float()
        self._mean = self.mean.float()
        self._on: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    @classmethod
    def fit(cls, images: Tensor, eps: float = 0.1) -> ZCA:
        """Fit on `images` [N, C, H, W]: uint8 pixels, or floats in [0, 1]."""
        n = images.shape[0]
        if n < 2:
            raise ValueError("ZCA needs at least two images to fit")
        flat = images.reshape(n, -1)
        total = torch.zeros(flat.shape[1], dtype=torch.float64)
        for start in range(0, n, FIT_BATCH):
            total += unit(flat[start : start + FIT_BATCH]).double().sum(0)
        mean = total / n
        cov = torch.zeros(flat.shape[1], flat.shape[1], dtype=torch.float64)
        for start in range(0, n, FIT_BATCH):
            centred = unit(flat[start : start + FIT_BATCH]).double() - mean
            cov += centred.T @ centred
        cov /= n - 1
        eigvals, eigvecs = torch.linalg.eigh(cov)
        return cls(mean, eigvecs, eigvals, eps, images.shape[1:])

    def state_dict(self) -> dict:
        return {
            "eps": self.eps,
            "shape": list(self.shape),
            "mean": self.mean.float(),
            "eigvecs": self.eigvecs.float(),
            "eigvals": self.eigvals.float(),
        }

    @classmethod
    def from_state(cls, state: dict) -> ZCA:
        return cls(state["mean"], state["eigvecs"], state["eigvals"], state["eps"], state["shape"])

    def _tensors(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if device not in self._on:
            self._on[device] = tuple(
                t.to(device) for t in (self._mean, self._whiten, self._unwhiten)
            )
        return self._on[device]

    def whiten(self, images: Tensor) -> Tensor:
        """[N, C, H, W] in [0, 1] (float) -> whitened float32, same shape."""
        mean, whiten, _ = self._tensors(images.device)
        flat = images.reshape(images.shape[0], -1).float() - mean
        return (flat @ whiten).reshape(images.shape)

    def unwhiten(self, images: Tensor) -> Tensor:
        """Whitened [N, C, H, W] -> [0, 1] images (unclamped), float32."""
        mean, _, unwhiten = self._tensors(images.device)
        flat = images.reshape(images.shape[0], -1).float() @ unwhiten + mean
        return flat.reshape(images.shape)


def unit(images: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [0, 1]; float images are taken as [0, 1] already."""
    return images.float().div(255.0) if images.dtype == torch.uint8 else images.float()


class ZCANormaliser(Normaliser):
    """Network input = ZCA-whitened [0, 1] pixels (MTT's pipeline: no per-channel mean and std
    under ZCA). `mean` and `std` are kept for the record only."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], zca: ZCA) -> None:
        super().__init__(mean, std)
        self.zca = zca

    def __repr__(self) -> str:
        return f"ZCANormaliser(eps={self.zca.eps}, shape={self.zca.shape})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZCANormaliser) and other.zca is self.zca

    def __hash__(self) -> int:
        return id(self.zca)

    def constants(self, device: torch.device | str) -> dict[str, Tensor]:
        raise ConfigError(
            "ZCA-whitened input is not a per-channel normalisation; method.pixels=unit and "
            "dataset.zca=true do not go together"
        )

    def to_input(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8:
            return images
        return self.zca.whiten(unit(images))

    def to_input_fused(self, images: Tensor) -> Tensor:
        return self.zca.whiten(unit(images))

    def to_unit(self, images: Tensor) -> Tensor:
        return self.zca.unwhiten(images).clamp(0, 1).to(images.dtype)


def normaliser_of(mean: Sequence[float], std: Sequence[float], zca: dict | None) -> Normaliser:
    """The normaliser a synthetic.pt record names: per channel, or ZCA when it holds one."""
    if zca is None:
        return Normaliser(mean, std)
    return ZCANormaliser(mean, std, ZCA.from_state(zca))
