"""The one normaliser: uint8 pixels <-> network input <-> [0, 1]."""

from __future__ import annotations

import pytest
import torch

from dmcondense.data.normalise import Normaliser

CIFAR = Normaliser([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])


def every_pixel_value() -> torch.Tensor:
    """uint8 [1, 3, 16, 16]: each of the 256 values in every channel."""
    return torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(1, 3, 1, 1)


def test_to_input_is_the_per_channel_formula_and_round_trips_to_the_pixels() -> None:
    pixels = every_pixel_value()
    x = CIFAR.to_input(pixels)
    for c in range(3):
        expected = (pixels[0, c].double() / 255 - CIFAR.mean[c]) / CIFAR.std[c]
        assert torch.allclose(x[0, c].double(), expected, atol=1e-6)
    assert torch.equal(CIFAR.to_uint8(x), pixels)  # back to the very same pixels
    assert torch.allclose(CIFAR.to_unit(x), pixels.float() / 255, atol=1e-6)
    assert CIFAR.to_input(x) is x  # float input counts as normalised already


def test_the_fused_form_agrees_with_the_reference_form_to_rounding() -> None:
    pixels = every_pixel_value()
    fused, reference = CIFAR.to_input_fused(pixels), CIFAR.to_input(pixels)
    assert torch.allclose(fused, reference, atol=1e-6)
    assert torch.equal(CIFAR.to_uint8(fused), pixels)


def test_to_unit_clamps_and_mismatched_statistics_are_refused() -> None:
    far = torch.tensor([-100.0, 100.0]).view(2, 1, 1, 1).repeat(1, 3, 1, 1)
    assert torch.equal(CIFAR.to_unit(far)[:, 0].flatten(), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="3 channels but std has 1"):
        Normaliser([0.1, 0.2, 0.3], [0.5])
    assert Normaliser([0.5], [0.25]) == Normaliser((0.5,), (0.25,))
