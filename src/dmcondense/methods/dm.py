"""Distribution Matching (Zhao & Bilen, WACV 2023), Algorithm 1.

    for each step t:
        psi   = a fresh randomly initialised embedding network          generator(seed, "net", t)
        for each class c (all classes in one batched call per side):
            omega_c = one DSA draw, shared by real and synthetic (Siamese)
            loss   += || mean psi(A(real_c, omega_c)) - mean psi(A(S_c, omega_c)) ||^2
        S <- S - lr_img * grad_S loss   (SGD with momentum, on the base)

The loss is the squared distance of class-wise mean embeddings (a linear-kernel MMD). The
methods that keep DM's shape (M3D, IDM) subclass it and change `network` or `match`.
"""

from __future__ import annotations

import torch
from torch import nn

from dmcondense.methods.base import CondensationMethod, full_precision
from dmcondense.rng import generator


def class_means(features: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-major [classes * n, D] features -> [classes, D] per-class means."""
    return features.reshape(num_classes, -1, features.shape[-1]).mean(dim=1)


@full_precision
def matching_loss(real_means: torch.Tensor, synthetic_means: torch.Tensor) -> torch.Tensor:
    """sum over classes of ||mean real_c - mean synthetic_c||^2, both [classes, D]."""
    return (real_means.float() - synthetic_means.float()).pow(2).sum()


class DistributionMatching(CondensationMethod):
    name = "dm"

    def step_loss(self, step: int, classes: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        net = self.network(step)
        real_features, synthetic_features = self.class_features(net, step, classes, real)
        return self.match(real_features, synthetic_features)

    def network(self, step: int) -> nn.Module:
        """The embedding network of `step`: DM draws a fresh one every step."""
        return self.draw_network(step)

    def class_features(
        self, net: nn.Module, step: int, classes: torch.Tensor, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the Siamese-augmented real images [k, n, D] (no grad) and of the
        decoded synthetic images of the same `classes` [k, m, D], for uint8 real [k, n, C, H, W].
        """
        omega, real_features = self.real_features(net, step, classes, real)
        k = real.shape[0]
        synthetic = self.synthetic_images.per_class(self.training_images())[classes]
        m = synthetic.shape[1]
        synthetic_x = self.augment.apply(
            synthetic.flatten(0, 1), omega, classes.repeat_interleave(m)
        )
        synthetic_features = self.embed(net, synthetic_x)
        return real_features, synthetic_features.view(k, m, -1)

    def real_features(
        self, net: nn.Module, step: int, classes: torch.Tensor, real: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's DSA draw (one a class, shared with the synthetic images) and the
        embeddings of the augmented uint8 real images [k, n, C, H, W]: [k, n, D], no grad."""
        omega = self.augment.sample(
            self.num_classes, generator(self.seed, "augment", step, device=self.device)
        )
        k, n = real.shape[:2]
        with torch.no_grad():
            real_x = self.augment.apply(
                self.normalise(real.flatten(0, 1)), omega, classes.repeat_interleave(n)
            )
            return omega, self.embed(net, real_x).view(k, n, -1)

    def match(self, real_features: torch.Tensor, synthetic_features: torch.Tensor) -> torch.Tensor:
        """DM: squared distance of the class means, summed over classes."""
        k = real_features.shape[0]
        return matching_loss(
            class_means(real_features.flatten(0, 1), k),
            class_means(synthetic_features.flatten(0, 1), k),
        )
