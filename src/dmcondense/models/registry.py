"""One name -> constructor table for every architecture, used by configs and evaluation."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dmcondense.models.convnet import ConvNet, ConvNetBN
from dmcondense.models.pool import MLP, VGG11, AlexNet, LeNet, ResNet18, ResNet18BN

MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet": ConvNet,
    "convnet_bn": ConvNetBN,
    "alexnet": AlexNet,
    "vgg11": VGG11,
    "resnet18": ResNet18,
    "resnet18_bn": ResNet18BN,
    "lenet": LeNet,
    "mlp": MLP,
}

# Models whose depth follows the image size unless the caller sets it.
_DEPTH_FOLLOWS_IMAGE_SIZE = ("convnet", "convnet_bn")


def default_depth(image_size: int) -> int:
    """ConvNet depth that brings the map to 4x4: 3 up to 32x32, 4 for 64, 5 for 128."""
    depth, side = 3, 32
    while side < image_size:
        depth, side = depth + 1, side * 2
    return depth


def build_model(
    name: str, channels: int, num_classes: int, image_size: int, **kwargs: object
) -> nn.Module:
    """Instantiate architecture `name`; `kwargs` go to its constructor (e.g. width, depth)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    if name in _DEPTH_FOLLOWS_IMAGE_SIZE and kwargs.get("depth") is None:
        kwargs["depth"] = default_depth(image_size)
    return MODELS[name](channels, num_classes, image_size, **kwargs)


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def uses_batchnorm(module: nn.Module) -> bool:
    """True when any submodule normalises with batch statistics (samples are coupled)."""
    return any(isinstance(m, BATCH_NORMS) for m in module.modules())
