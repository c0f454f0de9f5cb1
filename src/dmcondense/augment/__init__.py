"""Differentiable Siamese augmentation: draw parameters, apply them, Siamese or per image."""

from dmcondense.augment.dsa import DSA, FAMILIES, NoAugment

__all__ = ["DSA", "FAMILIES", "NoAugment"]
