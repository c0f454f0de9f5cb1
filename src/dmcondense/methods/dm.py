"""Distribution Matching (Zhao & Bilen, WACV 2023), Algorithm 1.

    for each step t:
        psi   = a fresh randomly initialised embedding network          generator(seed, "net", t)
        for each class c (all classes in one batched call per side):
            omega_c = one DSA draw, shared by real and synthetic (Siamese)
            loss   += || mean psi(A(real_c, omega_c)) - mean psi(A(S_c, omega_c)) ||^2
        S <- S - lr_img * grad_S loss   (SGD with momentum, on the base)

The loss is the squared distance of class-wise mean embeddings (a linear-kernel MMD).
"""

from __future__ import annotations

import torch

from dmcondense.methods.base import CondensationMethod
from dmcondense.rng import generator


def class_means(features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-major [classes * n, D] features -> [classes, D] per-class means."""
    return features.reshape(num_classes, -1, features.shape[-1]).mean(dim=1)


def matching_loss(real_means: torch.Tensor, synthetic_means: torch.Tensor) -> torch.Tensor:
    """sum over classes of ||mean real_c - mean synthetic_c||^2, both [classes, D]."""
    return (real_means.float() - synthetic_means.float()).pow(2).sum()


class DistributionMatching(CondensationMethod):
    name = "dm"

    def step_loss(self, step: int, classes: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        net = self.draw_network(step)
        omega = self.augment.sample(
            self.num_classes, generator(self.seed, "augment", step, device=self.device)
        )
        k, n = real.shape[:2]
        with torch.no_grad():
            real_x = self.augment.apply(
                self.normalise(real.flatten(0, 1)), omega, classes.repeat_interleave(n)
            )
            real_means = class_means(self.embed(net, real_x), k)
        synthetic = self.synthetic_images.per_class(self.training_images())[classes]
        m = synthetic.shape[1]
        synthetic_x = self.augment.apply(
            synthetic.flatten(0, 1), omega, classes.repeat_interleave(m)
        )
        synthetic_means = class_means(self.embed(net, synthetic_x), k)
        return matching_loss(real_means, synthetic_means)
