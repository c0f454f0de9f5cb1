"""Differentiable Siamese augmentation: draw parameters, apply them, Siamese or per image."""

from dmcondense.augment.dsa import CHOICES, DSA, FAMILIES, NoAugment

__all__ = ["CHOICES", "DSA", "FAMILIES", "NoAugment"]
