"""The DM objective: class-wise squared distance of mean embeddings (linear-kernel MMD)."""

from __future__ import annotations

import torch


def class_means(features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-major [classes * n, D] features -> [classes, D] per-class means."""
    return features.reshape(num_classes, -1, features.shape[-1]).mean(dim=1)


def matching_loss(real_means: torch.Tensor, synthetic_means: torch.Tensor) -> torch.Tensor:
    """sum over classes of ||mean real_c - mean synthetic_c||^2, both [classes, D]."""
    return (real_means.float() - synthetic_means.float()).pow(2).sum()
