"""Architectures: the ConvNet family (embedding networks) and the evaluation pool, one registry."""

from dmcondense.models.convnet import ConvNet, ConvNetBN
from dmcondense.models.init import reset_parameters
from dmcondense.models.pool import MLP, VGG11, AlexNet, LeNet, ResNet18, ResNet18BN
from dmcondense.models.registry import MODELS, build_model, default_depth, uses_batchnorm

__all__ = [
    "MLP",
    "MODELS",
    "VGG11",
    "AlexNet",
    "ConvNet",
    "ConvNetBN",
    "LeNet",
    "ResNet18",
    "ResNet18BN",
    "build_model",
    "default_depth",
    "reset_parameters",
    "uses_batchnorm",
]
