"""M3D's loss: the biased kernel MMD^2 with the pooled multi-bandwidth Gaussian kernel."""

from __future__ import annotations

import math

import torch

from dmcondense.augment import NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.methods.m3d import KernelMeanMatching, kernel_mmd2
from dmcondense.models.registry import build_model


def kernel(squared_distance: float, bandwidth: float) -> float:
    return sum(math.exp(-squared_distance / (m * bandwidth)) for m in (0.25, 0.5, 1, 2, 4))


def test_kernel_mmd_equals_a_hand_computation() -> None:
    real = torch.tensor([[[0.0], [1.0]]])  # one class, two real features in 1-D
    synthetic = torch.tensor([[[0.5]]])  # and one synthetic feature
    # Pooled {0, 1, 0.5}: squared distances 1, 0.25, 0.25; off-diagonal mean 0.5.
    h = 0.5
    k_ss = kernel(0.0, h)
    k_sr = (kernel(0.25, h) + kernel(0.25, h)) / 2
    k_rr = (2 * kernel(0.0, h) + 2 * kernel(1.0, h)) / 4
    expected = k_ss - 2 * k_sr + k_rr
    assert math.isclose(kernel_mmd2(real, synthetic).item(), expected, rel_tol=1e-6)


def test_two_classes_are_scored_separately() -> None:
    g = torch.Generator().manual_seed(0)
    real, synthetic = torch.randn(2, 5, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    both = kernel_mmd2(real, synthetic)
    assert torch.allclose(both[1], kernel_mmd2(real[1:], synthetic[1:])[0])
    assert torch.allclose(both[0], kernel_mmd2(real[:1], synthetic[:1])[0])


def test_identical_sets_score_zero_and_the_mmd_is_symmetric() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 6, 8, generator=g), torch.randn(3, 6, 8, generator=g)
    assert torch.allclose(kernel_mmd2(a, a.clone()), torch.zeros(3), atol=1e-6)
    assert torch.allclose(kernel_mmd2(a, b), kernel_mmd2(b, a), atol=1e-6)
    assert (kernel_mmd2(a, b) > 1e-3).all()


def test_equal_features_give_a_zero_bandwidth_and_no_nan() -> None:
    same = torch.ones(1, 4, 5, requires_grad=True)
    loss = kernel_mmd2(torch.ones(1, 3, 5), same).sum()
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(same.grad).all()


def test_pixels_are_learned_in_unit_range() -> None:
    """(The clamp after each step is tested for every method in test_methods.py.)"""
    normaliser = Normaliser([0.5], [0.25])
    init = torch.tensor([-2.0, 0.0, 2.0]).view(3, 1, 1, 1).expand(3, 1, 4, 4).contiguous()
    module = KernelMeanMatching(build_model("convnet", 1, 3, 4, width=4, depth=1), NoAugment(),
                                init, 3, normaliser, lr_img=1.0)  # fmt: skip
    # normalised -2, 0, 2 are pixels 0, 0.5, 1
    assert module.pixels == "unit"
    assert module.synthetic[:, 0, 0, 0].tolist() == [0.0, 0.5, 1.0]
    assert torch.allclose(module.decoded()[0], init)
