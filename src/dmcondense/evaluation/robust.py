"""DD-Ranking's robust scores (Li et al., 2025) as pure functions of accuracies.

A long, augmented evaluation (or soft labels) can make a random real subset score nearly as
well as a condensed set; these scores measure what the condensed set adds over that subset.

  LRS (label-robust)         HLR = acc(whole, hard) - acc(syn, hard)
                             IOR = acc(syn) - acc(random subset of equal IPC)
                             alpha = 0.5 IOR - 0.5 HLR
  ARS (augmentation-robust)  beta = 0.5 (syn - random, with aug) + 0.5 (syn - random, without)
  both normalised            (e^x - e^-1) / (e - e^-1), which maps x in [-1, 1] onto [0, 1]

Accuracies are fractions in [0, 1]. The ddranking package feeds percent into the same formula,
which pushes its scores outside [0, 1]; the raw terms are returned too so either can be
recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def normalise_score(x: float) -> float:
    """(e^x - e^-1) / (e - e^-1): 0 at x = -1, 1 at x = 1."""
    return (math.exp(x) - math.exp(-1.0)) / (math.exp(1.0) - math.exp(-1.0))


def _check_fraction(name: str, value: float) -> None:
    # A percent slipped in would silently give a meaningless score.
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{name} must be an accuracy in [0, 1] (a fraction, not percent), got {value}"
        )


@dataclass(frozen=True)
class LabelRobustScore:
    hard_label_recovery: float  # HLR = acc(whole, hard) - acc(syn, hard)
    improvement_over_random: float  # IOR = acc(syn) - acc(random)
    alpha: float
    lrs: float


@dataclass(frozen=True)
class AugmentationRobustScore:
    with_augmentation: float  # syn - random, both trained with augmentation
    without_augmentation: float  # syn - random, both trained without
    beta: float
    ars: float


def label_robust_score(
    whole_hard: float,
    synthetic_hard: float,
    synthetic: float,
    random_subset: float,
    weight: float = 0.5,
) -> LabelRobustScore:
    """LRS from accuracies (fractions): the whole training set and the synthetic set trained with
    hard labels, the synthetic set and a random subset of equal IPC under the method's own
    evaluation. `weight` is DD-Ranking's lambda: alpha = weight IOR - (1 - weight) HLR."""
    for name, value in (("whole_hard", whole_hard), ("synthetic_hard", synthetic_hard),
                        ("synthetic", synthetic), ("random_subset", random_subset)):  # fmt: skip
        _check_fraction(name, value)
    hlr = whole_hard - synthetic_hard
    ior = synthetic - random_subset
    alpha = weight * ior - (1.0 - weight) * hlr
    return LabelRobustScore(hlr, ior, alpha, normalise_score(alpha))


def augmentation_robust_score(
    synthetic_with_aug: float,
    random_with_aug: float,
    synthetic_without_aug: float,
    random_without_aug: float,
    weight: float = 0.5,
) -> AugmentationRobustScore:
    """ARS from accuracies (fractions) of the synthetic set and a random subset of equal IPC,
    each trained with and without augmentation. beta = weight (with) + (1 - weight) (without)."""
    for name, value in (("synthetic_with_aug", synthetic_with_aug),
                        ("random_with_aug", random_with_aug),
                        ("synthetic_without_aug", synthetic_without_aug),
                        ("random_without_aug", random_without_aug)):  # fmt: skip
        _check_fraction(name, value)
    with_aug = synthetic_with_aug - random_with_aug
    without_aug = synthetic_without_aug - random_without_aug
    beta = weight * with_aug + (1.0 - weight) * without_aug
    return AugmentationRobustScore(with_aug, without_aug, beta, normalise_score(beta))
