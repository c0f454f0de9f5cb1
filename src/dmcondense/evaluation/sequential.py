"""The sequential trainer: one network at a time, plain PyTorch (torchvision references style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.augment import DSA, NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.cutmix import draw_cutmix, mixed_targets, paste
from dmcondense.evaluation.protocol import (
    Protocol,
    Task,
    epoch_targets,
    epochs,
    make_augmenter,
    make_optimizer,
    one_family_a_batch,
)
from dmcondense.progress import epoch_progress


def train_network(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    protocol: Protocol,
    seed: int,
    index: int | str,
    normaliser: Normaliser,
    augmenter: DSA | NoAugment | None = None,
    bar=None,
    soft_targets: Tensor | None = None,
    teacher: nn.Module | None = None,
) -> nn.Module:
    """Train one network in place with the protocol; draws keyed by (seed, index).

    `images` are normalised float [N, C, H, W] or uint8 (then normalised batch by batch), on
    the network's device; `soft_targets` [N, K]: a teacher's probabilities (labels soft);
    `teacher`: labels every augmented, mixed batch anew (labels relabel, RDED's evaluation).
    """
    if protocol.labels == "relabel":
        if teacher is None:
            raise ValueError("protocol.labels is relabel but no teacher was given")
        teacher.eval()
    device = images.device
    augmenter = make_augmenter(protocol) if augmenter is None else augmenter
    optimizer = make_optimizer(net.parameters(), protocol)
    one_family = one_family_a_batch(protocol)
    n = images.shape[0]
    net.train()
    for epoch, ((order,), (aug_generator,), cutmix_generators) in enumerate(
        epochs(optimizer, protocol, seed, [index], n, device)
    ):
        targets, temperature = epoch_targets(labels, soft_targets, protocol, epoch)
        for start in range(0, n, protocol.batch_size):
            batch = order[start : start + protocol.batch_size]
            x = normaliser.to_input(images[batch])
            x = augmenter.apply(x, augmenter.sample(batch.numel(), aug_generator, one_family))
            if protocol.labels == "relabel":
                loss = relabelled_loss(net, teacher, x, protocol, cutmix_generators)
            elif cutmix_generators is None:
                loss = F.cross_entropy(net(x) / temperature, targets[batch])
            else:
                height, width = x.shape[-2:]
                draw = draw_cutmix(batch.numel(), height, width, protocol.cutmix_p,
                                   cutmix_generators[0])  # fmt: skip
                logits = net(paste(x, draw)) / temperature
                mixed = mixed_targets(targets[batch], draw, logits.shape[-1], height, width)
                loss = F.cross_entropy(logits, mixed)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if bar is not None:
            bar.update(1)
    return net


def relabelled_loss(
    net: nn.Module,
    teacher: nn.Module,
    x: Tensor,
    protocol: Protocol,
    cutmix_generators: list[torch.Generator] | None,
) -> Tensor:
    """RDED's loss of one augmented batch: CutMix (when the protocol has it), the teacher's
    softmax(logits / T) of the mixed images as the targets, and KL(targets || softmax(net / T))
    averaged over the batch (their KLDivLoss(reduction="batchmean"), without a T^2 factor)."""
    if cutmix_generators is not None:
        height, width = x.shape[-2:]
        x = paste(x, draw_cutmix(x.shape[0], height, width, protocol.cutmix_p,
                                 cutmix_generators[0]))  # fmt: skip
    with torch.no_grad():
        targets = F.softmax(teacher(x).float() / protocol.temperature, dim=1)
    log_probs = F.log_softmax(net(x).float() / protocol.temperature, dim=1)
    return F.kl_div(log_probs, targets, reduction="batchmean")


@torch.no_grad()
def top1_accuracy(
    net: nn.Module,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    normaliser: Normaliser,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of `net` (eval mode) on uint8 test images, normalised batch by batch."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, test_images.shape[0], batch_size):
        x = normaliser.to_input(test_images[start : start + batch_size].to(device))
        y = test_labels[start : start + batch_size].to(device)
        correct += int((net(x).argmax(dim=1) == y).sum())
    net.train(was_training)
    return correct / max(test_images.shape[0], 1)


def train_sequential(networks: list[nn.Module], task: Task) -> Tensor:
    """Train `networks` (network i draws with index i) one after another; accuracies [M]."""
    protocol = task.protocol
    bar = epoch_progress(protocol.epochs * len(networks), task.progress)
    augmenter = make_augmenter(protocol)
    accuracies = torch.zeros(len(networks), dtype=torch.float64)
    for i, net in enumerate(networks):
        train_network(net.to(task.images.device), task.images, task.labels, protocol=protocol,
                      seed=task.seed, index=i, normaliser=task.normaliser, augmenter=augmenter,
                      bar=bar, soft_targets=task.soft_targets,
                      teacher=task.teacher)  # fmt: skip
        accuracies[i] = top1_accuracy(net, task.test_images, task.test_labels,
                                      normaliser=task.normaliser,
                                      batch_size=protocol.test_batch_size)  # fmt: skip
    if bar is not None:
        bar.close()
    return accuracies
