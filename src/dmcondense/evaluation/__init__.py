"""Evaluation: train fresh networks on a (synthetic) set and test them; coreset baselines."""

from dmcondense.evaluation.baselines import (
    embed_features,
    select_herding,
    select_kcenter,
    select_random,
    select_whole,
)
from dmcondense.evaluation.protocol import (
    Protocol,
    evaluate_synthetic,
    lr_at,
    make_optimizer,
    top1_accuracy,
    train_network,
    train_networks,
)

__all__ = [
    "Protocol",
    "embed_features",
    "evaluate_synthetic",
    "lr_at",
    "make_optimizer",
    "select_herding",
    "select_kcenter",
    "select_random",
    "select_whole",
    "top1_accuracy",
    "train_network",
    "train_networks",
]
