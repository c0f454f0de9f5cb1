"""Evaluation: train fresh networks on a (synthetic) set and test them; coreset baselines."""

from dmcondense.evaluation.baselines import (
    embed_features,
    select_herding,
    select_kcenter,
    select_random,
    select_whole,
)
from dmcondense.evaluation.protocol import Protocol, accuracy_summary, lr_at, make_optimizer
from dmcondense.evaluation.robust import (
    augmentation_robust_score,
    label_robust_score,
)
from dmcondense.evaluation.score import BACKENDS, score, train_networks
from dmcondense.evaluation.sequential import top1_accuracy, train_network

__all__ = [
    "BACKENDS",
    "Protocol",
    "accuracy_summary",
    "augmentation_robust_score",
    "embed_features",
    "label_robust_score",
    "lr_at",
    "make_optimizer",
    "score",
    "select_herding",
    "select_kcenter",
    "select_random",
    "select_whole",
    "top1_accuracy",
    "train_network",
    "train_networks",
]
