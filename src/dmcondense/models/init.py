"""Seeded re-initialisation: PyTorch's default init distributions, drawn from a given generator.

DM draws a fresh random embedding network every step; re-initialising one network in place from
`generator(seed, step)` makes that draw repeatable without touching the global RNG.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Their default init is deterministic (weight 1, bias 0, running stats reset): reuse it.
_DETERMINISTIC_INIT = (
    *(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm),
    *(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
    *(nn.GroupNorm, nn.LayerNorm, nn.RMSNorm),
)


def _fill_kaiming_uniform(weight: torch.Tensor, generator: torch.Generator) -> None:
    # Draw in contiguous order so the values do not depend on the memory format (channels_last).
    target = (
        weight
        if weight.is_contiguous()
        else torch.empty_like(weight, memory_format=torch.contiguous_format)
    )
    nn.init.kaiming_uniform_(target, a=math.sqrt(5), generator=generator)
    if target is not weight:
        weight.copy_(target)


def _reset_conv_or_linear(module: nn.Module, generator: torch.Generator) -> None:
    """Same as `_ConvNd.reset_parameters` / `Linear.reset_parameters`, drawn from `generator`."""
    _fill_kaiming_uniform(module.weight, generator)
    if module.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(module.bias, -bound, bound, generator=generator)


def reset_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every parameter (and norm running statistics) of `module` in place.

    Modules are visited in `named_modules` order, weight before bias, so one generator state
    yields one network. Raises TypeError on a parameterised module type without a known init.
    """
    with torch.no_grad():
        for name, child in module.named_modules():
            own_parameters = list(child.parameters(recurse=False))
            if any(isinstance(p, nn.parameter.UninitializedParameter) for p in own_parameters):
                raise TypeError(f"module {name or '<root>'!r} has uninitialised (lazy) parameters")
            if isinstance(child, (nn.modules.conv._ConvNd, nn.Linear)):
                _reset_conv_or_linear(child, generator)
            elif isinstance(child, _DETERMINISTIC_INIT):
                child.reset_parameters()
            elif own_parameters:
                raise TypeError(
                    f"reset_parameters does not know how to initialise {type(child).__name__} "
                    f"(module {name or '<root>'!r})"
                )
    return module
