"""The evaluation pool for cross-architecture tests: small AlexNet, VGG11, ResNet18 (and its
BatchNorm variant), LeNet and an MLP, in the style of the DC benchmark.

Every model takes (channels, num_classes, image_size), returns logits from `forward` and
features from `embed`. Sizes are worked out from `image_size`, so 1x28x28, 3x32x32 and 3x64x64
inputs all fit.
"""

from __future__ import annotations

import torch
from torch import nn

from dmcondense.models.convnet import first_conv_padding, norm_layer


def _conv_side(side: int, kernel: int, padding: int, stride: int = 1) -> int:
    return (side + 2 * padding - kernel) // stride + 1


class AlexNet(nn.Module):
    """Small AlexNet: five convs (128/192/256/192/192), three 2x2 max pools, one linear layer.

    `width` is the first conv's channel count (128); the others keep their ratios to it."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128) -> None:
        super().__init__()
        # 28x28 inputs are padded by 4 so the 5x5 conv yields 32x32, like the 32x32 path.
        first_padding = 4 if image_size == 28 else 2
        c1, c2, c3 = width, width * 3 // 2, width * 2  # 128, 192, 256
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, kernel_size=5, padding=first_padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c3, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c2, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = _conv_side(image_size, 5, first_padding) // 8
        self.embed_dim: int = c2 * side * side
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


VGG11_CONFIG: tuple[int | str, ...] = (
    64,
    "M",
    128,
    "M",
    256,
    256,
    "M",
    512,
    512,
    "M",
    512,
    512,
    "M",
)


class VGG11(nn.Module):
    """VGG11 with per-channel instance norm (GroupNorm) by default and a linear classifier.

    `width` is the first conv's channel count (64); the others keep their ratios to it."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        norm: str = "instancenorm",
        width: int = 64,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, side = channels, image_size
        for entry in VGG11_CONFIG:
            if entry == "M":
                layers.append(nn.MaxPool2d(2))
                side //= 2
                continue
            out_channels = entry * width // 64
            padding = first_conv_padding(image_size) if not layers else 1
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
                norm_layer(norm, out_channels),
                nn.ReLU(),
            ]
            side = _conv_side(side, 3, padding)
            in_channels = out_channels
        if side < 1:
            raise ValueError(
                f"VGG11 needs images of at least 32x32 (28x28 padded), got {image_size}"
            )
        self.features = nn.Sequential(*layers)
        self.embed_dim: int = in_channels * side * side
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.norm2 = norm_layer(norm, planes)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                norm_layer(norm, planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet18: 3x3 stem (no max pool), four stages of two BasicBlocks,
    global average pool, linear. Instance norm (GroupNorm per channel) by default.
    `width` is the stem's channel count (64 in ResNet18; stages use 1, 2, 4, 8 times it)."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        image_size: int,
        norm: str = "instancenorm",
        width: int = 64,
    ) -> None:
        super().__init__()
        del image_size  # global average pooling makes the model size independent of it
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False),
            norm_layer(norm, width),
            nn.ReLU(),
        )
        stages: list[nn.Module] = []
        in_planes = width
        for multiple, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            planes = width * multiple
            stages.append(
                nn.Sequential(
                    BasicBlock(in_planes, planes, stride, norm),
                    BasicBlock(planes, planes, 1, norm),
                )
            )
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed_dim: int = in_planes
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class ResNet18BN(ResNet18):
    """ResNet18 with BatchNorm."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 64) -> None:
        super().__init__(channels, num_classes, image_size, norm="batchnorm", width=width)


class LeNet(nn.Module):
    """LeNet-5: 6 and 16 5x5 convs with 2x2 max pools, then 120 -> 84 -> classes.
    28x28 inputs are padded by 2, as in the original LeNet on MNIST."""

    def __init__(self, channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        padding = 2 if image_size == 28 else 0
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        side = _conv_side(_conv_side(image_size, 5, padding) // 2, 5, 0) // 2
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
        )
        self.embed_dim: int = 84
        self.classifier = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The 84 penultimate features."""
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class MLP(nn.Module):
    """Three linear layers on the flattened image: input -> 128 -> 128 -> classes."""

    def __init__(self, channels: int, num_classes: int, image_size: int, hidden: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * image_size * image_size, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.embed_dim: int = hidden
        self.classifier = nn.Linear(hidden, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
