"""M3D (Zhang et al., AAAI 2024): DM with the squared distance of means replaced by a kernel MMD.

    for each step t:
        psi   = a random embedding network, redrawn every `redraw_every` steps
        for each class c (all classes batched):
            omega_c = one DSA draw shared by real and synthetic
            R, S    = psi(A(real_c, omega_c)), psi(A(decode(S)_c, omega_c))
            h       = mean off-diagonal squared distance of R and S pooled (detached)
            loss   += mean K(S, S') - 2 mean K(S, R) + mean K(R, R')      (biased MMD^2)
        S <- clamp(S - lr_img * grad, 0, 1)        pixels learned in [0, 1], multi-formation

K(x, y) = sum over m in BANDWIDTH_MULTIPLIERS of exp(-||x - y||^2 / (m h)).
"""

from __future__ import annotations

import torch
from torch import nn

from dmcondense.errors import ConfigError
from dmcondense.methods.base import full_precision
from dmcondense.methods.dm import DistributionMatching

BANDWIDTH_MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched ||x_i - y_j||^2 for x [k, n, D], y [k, m, D] -> [k, n, m] (never below 0)."""
    xx = x.pow(2).sum(-1, keepdim=True)
    yy = y.pow(2).sum(-1, keepdim=True).transpose(1, 2)
    return (xx + yy - 2.0 * torch.bmm(x, y.transpose(1, 2))).clamp_min(0.0)


def pooled_bandwidth(distances: torch.Tensor) -> torch.Tensor:
    """Per class, the mean off-diagonal entry of a pooled [k, p, p] squared-distance matrix
    (its diagonal is 0), detached; floored so that equal features give a kernel of 1, not NaN."""
    p = distances.shape[-1]
    mean = distances.detach().sum(dim=(1, 2)) / (p * (p - 1))
    return mean.clamp_min(torch.finfo(distances.dtype).tiny).view(-1, 1, 1)


@full_precision
def kernel_mmd2(
    real: torch.Tensor,
    synthetic: torch.Tensor,
    multipliers: tuple[float, ...] = BANDWIDTH_MULTIPLIERS,
) -> torch.Tensor:
    """Biased MMD^2 per class under the multi-bandwidth Gaussian kernel: real [k, n, D],
    synthetic [k, m, D] -> [k]. The bandwidth comes from both sets pooled."""
    n = real.shape[1]
    pooled = torch.cat([real, synthetic], dim=1).float()
    distances = squared_distances(pooled, pooled)
    bandwidth = pooled_bandwidth(distances)
    kernel = sum(torch.exp(-distances / (m * bandwidth)) for m in multipliers)
    real_real = kernel[:, :n, :n].mean(dim=(1, 2))
    synthetic_real = kernel[:, n:, :n].mean(dim=(1, 2))
    synthetic_synthetic = kernel[:, n:, n:].mean(dim=(1, 2))
    return synthetic_synthetic - 2.0 * synthetic_real + real_real


class KernelMeanMatching(DistributionMatching):
    name = "m3d"

    def __init__(self, *args, redraw_every: int = 5, pixels: str = "unit", **kwargs) -> None:
        super().__init__(*args, pixels=pixels, **kwargs)
        if redraw_every < 1:
            raise ConfigError(f"method.redraw_every must be 1 or more, got {redraw_every}")
        self.redraw_every = redraw_every

    def network(self, step: int) -> nn.Module:
        """The same random network for `redraw_every` steps, keyed by the block of steps, so a
        resumed run draws what an uninterrupted one does."""
        return self.draw_network(step // self.redraw_every)

    def match(self, real_features: torch.Tensor, synthetic_features: torch.Tensor) -> torch.Tensor:
        return kernel_mmd2(real_features, synthetic_features).sum()
