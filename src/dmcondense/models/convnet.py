"""The ConvNet of the DC/DSA/DM line: the embedding network of condensation and the default
evaluation architecture.

`depth` blocks of 3x3 conv -> norm -> activation -> 2x2 pooling; the embedding is the flattened
output of the last block and a linear layer on top makes it a classifier.
"""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
# groupnorm: this many groups of channels, as in the reference code (GroupNorm(4, C)).
GROUPNORM_GROUPS = 4
ACTIVATIONS = ("relu", "leakyrelu", "sigmoid")
POOLINGS = ("avgpool", "maxpool", "none")


def _check_choice(knob: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {knob} {value!r}; valid options: {', '.join(valid)}")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A normalisation layer for `channels` feature maps.

    instancenorm is a GroupNorm with one group per channel (affine), as in the reference code;
    it normalises each sample on its own, so classes can go through the network separately.
    """
    _check_choice("norm", kind, NORMS)
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if kind == "groupnorm":
        return nn.GroupNorm(GROUPNORM_GROUPS, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def activation_layer(kind: str) -> nn.Module:
    _check_choice("activation", kind, ACTIVATIONS)
    if kind == "relu":  # in place, as the reference ConvNet: the norm's backward reads its input
        return nn.ReLU(inplace=True)
    if kind == "leakyrelu":
        return nn.LeakyReLU(negative_slope=0.01)
    return nn.Sigmoid()


def pooling_layer(kind: str) -> nn.Module:
    _check_choice("pooling", kind, POOLINGS)
    if kind == "avgpool":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if kind == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    return nn.Identity()


def first_conv_padding(image_size: int) -> int:
    """28x28 images (MNIST family) are padded by 3 so the map is 32x32 after the first conv."""
    return 3 if image_size == 28 else 1


def feature_side(image_size: int, depth: int, pooling: str) -> int:
    """Side of the last block's feature map for square `image_size` inputs; 0 or less when the
    map vanishes on the way (too deep for the image). Plain arithmetic, so a search space can
    be checked before any network is built."""
    side = image_size
    for index in range(depth):
        padding = first_conv_padding(image_size) if index == 0 else 1
        side = side + 2 * padding - 2  # 3x3 kernel
        if pooling != "none":
            side //= 2
        if side < 1:
            return side
    return side


class ConvNet(nn.Module):
    """ConvNet: `depth` x (conv3x3 `width` -> norm -> activation -> pool 2x2) -> linear."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        width: int = 128,
        depth: int = 3,
        norm: str = "instancenorm",
        activation: str = "relu",
        pooling: str = "avgpool",
    ) -> None:
        super().__init__()
        for knob, value, valid in (
            ("norm", norm, NORMS),
            ("activation", activation, ACTIVATIONS),
            ("pooling", pooling, POOLINGS),
        ):
            _check_choice(knob, value, valid)
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be positive, got depth={depth}, width={width}")

        side = feature_side(image_size, depth, pooling)
        if side < 1:
            raise ValueError(
                f"depth {depth} is too deep for {image_size}x{image_size} images "
                f"(the feature map vanishes before the last block)"
            )
        blocks = []
        in_channels = channels
        for index in range(depth):
            padding = first_conv_padding(image_size) if index == 0 else 1
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, width, kernel_size=3, padding=padding),
                    norm_layer(norm, width),
                    activation_layer(activation),
                    pooling_layer(pooling),
                )
            )
            in_channels = width

        self.features = nn.Sequential(*blocks)
        self.embed_dim: int = width * side * side
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened output of the last block: [N, embed_dim]."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class ConvNetBN(ConvNet):
    """ConvNet with BatchNorm: batch statistics couple the samples of one forward pass."""

    def __init__(self, channels: int, num_classes: int, image_size: int, **kwargs) -> None:
        if kwargs.setdefault("norm", "batchnorm") != "batchnorm":
            raise ValueError(f"ConvNetBN always uses batchnorm, got norm={kwargs['norm']!r}")
        super().__init__(channels, num_classes, image_size, **kwargs)
