"""Soft labels from a teacher, as the NCFM authors' evaluation makes them.

The teacher (a network trained on the real data; here the pool's network 0, as theirs) labels the
training images as they are stored, before any augmentation: the authors compute the labels of
a batch before augmenting it, so each image's label is the same every epoch and is computed
once here. Where the teacher's top class is not the image's label, its logits are replaced by
the one-hot vector of the label (their `get_softlabel`); the targets are then
softmax(logits / temperature) (their `SoftCrossEntropy`, temperature 1). A replaced row thus
becomes softmax(one-hot / T), not a one-hot target: theirs does the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.data.normalise import Normaliser


@torch.no_grad()
def teacher_logits(
    teacher: nn.Module, images: Tensor, normaliser: Normaliser, batch_size: int = 1024
) -> Tensor:
    """The teacher's logits [N, K] (eval mode) on images (normalised float or uint8)."""
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    out = [
        teacher(normaliser.to_input(images[start : start + batch_size].to(device)))
        for start in range(0, images.shape[0], batch_size)
    ]
    teacher.train(was_training)
    return torch.cat(out).float()


def corrected_soft_targets(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> Tensor:
    """softmax(logits / temperature) [N, K], each row whose top class is not its label first
    replaced by the one-hot vector of the label (NCFM's correction)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    labels = labels.to(logits.device).long()
    wrong = logits.argmax(dim=1) != labels
    corrected = logits.clone()
    corrected[wrong] = F.one_hot(labels[wrong], logits.shape[1]).to(logits.dtype)
    return F.softmax(corrected / temperature, dim=1)


def teacher_targets(
    teacher: nn.Module,
    images: Tensor,
    labels: Tensor,
    normaliser: Normaliser,
    temperature: float = 1.0,
) -> Tensor:
    """The soft targets [N, K] of a training set, on the images' device."""
    logits = teacher_logits(teacher, images, normaliser)
    return corrected_soft_targets(logits, labels, temperature).to(images.device)
