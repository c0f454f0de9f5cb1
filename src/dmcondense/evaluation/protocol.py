"""The evaluation protocol: train freshly initialised networks on a (small) set, test on real data.

The default (the DSA and DM papers'): SGD (lr 0.01, momentum 0.9, weight decay 5e-4), batch 256,
`epochs` epochs with the learning rate divided by 10 at epoch `epochs // 2`, DSA on every
training batch (as the reference: one family drawn for the batch, each image its own parameters;
"dsa_per_image" draws a family per image); then top-1 accuracy on the real test set (eval mode,
no augmentation, in batches) after the last epoch. Other papers' protocols change the optimizer
(`optimizer`), the schedule (`lr_schedule`, a key of LR_SCHEDULES), the augmentation and add
CutMix (`cutmix_p`, evaluation/cutmix.py).

Every random draw is keyed by the network's index, never by the trainer that runs it:
  init   reset_parameters(net, generator(seed, "eval-init", model_name, i))   (on the CPU)
  order  randperm from generator(seed, "eval-order", i, epoch)                (on the CPU)
  DSA    DSA.sample(batch, generator(seed, "eval-aug", i, epoch), one_family) (on the device)
  CutMix draw_cutmix(batch, ..., generator(seed, "eval-cutmix", i, epoch))      (on the CPU)
The draws made on the CPU reach the device without a host-device sync (rng.to_device).
so the sequential and the batched trainers see the same networks, batches and augmentations,
and their accuracies agree up to floating-point rounding.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dmcondense.augment import DSA, NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError
from dmcondense.models.init import reset_parameters
from dmcondense.rng import generator, to_device

# The training augmentations of the protocols: DSA (the DSA and DM papers) with one family a
# batch as their reference draws it, or a family per image; none; and DC's for MNIST (crop 4 px,
# scale, rotate 45 degrees) and for BatchNorm models (crop 4 px; the reference also adds Gaussian
# noise of std 0.001, far below one grey level, left out here), written with DSA's differentiable
# operations (the reference used scipy's, image by image).
# Each maker takes the protocol's DSA strategy (only the DSA augmentations use it).
AUGMENTATIONS: dict[str, Callable[[str], DSA | NoAugment]] = {
    "dsa": DSA,
    "dsa_per_image": DSA,
    "none": lambda strategy: NoAugment(),
    "dc_mnist": lambda strategy: DSA("crop_scale_rotate", crop=4 / 28, scale=1.2, rotate=45.0),
    "dc_batchnorm": lambda strategy: DSA("crop", crop=4 / 32),
    # IDC's and NCFM's evaluation (their DiffAug with batch=False): flip, color and cutout of
    # the strategy on every image, plus one drawn family of the rest, all drawn per image.
    "idc": lambda strategy: DSA(strategy, choice="idc"),
}
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
# The augmentations that draw one family for a whole training batch. DC's own augmentation
# picked one family per image, so dc_mnist and dc_batchnorm stay per image.
ONE_FAMILY_A_BATCH = frozenset({"dsa"})
# eval.dsa_family -> the key of the DSA augmentation.
DSA_FAMILY = {"batch": "dsa", "image": "dsa_per_image"}
# Learning-rate schedules: the milestones as fractions (numerator, denominator) of the epochs,
# epoch numerator * epochs // denominator as the authors' MultiStepLR, and the factor applied
# at each milestone.
LR_SCHEDULES: dict[str, tuple[tuple[tuple[int, int], ...], float]] = {
    "half": (((1, 2),), 0.1),  # the DC/DSA/DM papers': / 10 at half
    "idc": (((2, 3), (5, 6)), 0.2),  # IDC's (and M3D's): x 0.2 at 2/3 and 5/6
    "fifths": (((1, 5), (2, 5), (3, 5), (4, 5)), 0.5),  # NCFM's: x 0.5 at each fifth
}
OPTIMIZERS = ("sgd", "adamw")
LABELS = ("hard", "soft")
# Soft labels train all but the last epochs // HARD_TAIL epochs, which use the hard labels: the
# NCFM authors' evaluation switches to hard labels for its last 100 of 2,000 epochs.
HARD_TAIL = 20


@dataclass(frozen=True)
class Protocol:
    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: str = "dsa"  # a key of AUGMENTATIONS
    # The DSA families (the reference trains with its condensation's strategy: no flip for digits).
    dsa_strategy: str = DSA_STRATEGY
    optimizer: str = "sgd"  # one of OPTIMIZERS
    lr_schedule: str = "half"  # a key of LR_SCHEDULES
    # Probability that a training batch is CutMixed (after the augmentation); 0: never, and
    # no CutMix draws are made.
    cutmix_p: float = 0.0
    # hard: the labels; soft: a teacher's (Task.soft_targets) for all but the last twentieth
    # of the epochs, trained by cross-entropy (KL up to a constant) at `temperature`.
    labels: str = "hard"
    temperature: float = 1.0
    # Test images per forward pass, summed over the networks of a batched pass (memory bound).
    test_batch_size: int = 1024


@dataclass(frozen=True)
class Task:
    """What a trainer needs besides its networks: the training and the test set, the protocol,
    the seed of the draws, the normaliser, and the progress bar's label (None: no bar)."""

    images: Tensor  # normalised float [N, C, H, W], or uint8 (normalised batch by batch)
    labels: Tensor
    test_images: Tensor  # uint8
    test_labels: Tensor
    protocol: Protocol
    seed: int
    normaliser: Normaliser
    progress: str | None = None
    num_classes: int | None = None  # the networks' outputs (CutMix's soft targets)
    soft_targets: Tensor | None = None  # [N, K] teacher probabilities (protocol.labels soft)


def idc_protocol(epochs: int, dsa_strategy: str = DSA_STRATEGY, cutmix_p: float = 0.5) -> Protocol:
    """IDC's evaluation (Kim et al., 2022; M3D scores with it): SGD lr 0.01, momentum 0.9,
    weight decay 5e-4, batch 64, lr x 0.2 at 2/3 and 5/6 of the epochs, its DSA drawn per image,
    CutMix (beta 1; the authors' p is 0.5 on CIFAR, SVHN and (Fashion-)MNIST). IDC sets the
    epochs by the decoded IPC (3,000 at 1, 2,000 up to 10, 1,500 up to 50; 2/3 of that for 100
    classes); here the caller passes them."""
    return Protocol(epochs=epochs, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64,
                    augment="idc", dsa_strategy=dsa_strategy, optimizer="sgd",
                    lr_schedule="idc", cutmix_p=cutmix_p)  # fmt: skip


def ncfm_protocol(
    epochs: int = 2000, dsa_strategy: str = DSA_STRATEGY, cutmix_p: float = 0.5
) -> Protocol:
    """NCFM's evaluation (Wang et al., 2025): AdamW lr 1e-3, batch 128, lr x 0.5 at each fifth of
    the epochs (2,000), IDC's DSA per image without cutout (their code drops it when CutMix is
    on), CutMix p 0.5 (beta 1). Weight decay 0.01: their AdamW is built without one, so torch's
    default applies (their configs' 5e-4 is not passed to it)."""
    without_cutout = "_".join(name for name in dsa_strategy.split("_") if name != "cutout")
    return Protocol(epochs=epochs, lr=1e-3, momentum=0.0, weight_decay=0.01, batch_size=128,
                    augment="idc", dsa_strategy=without_cutout, optimizer="adamw",
                    lr_schedule="fifths", cutmix_p=cutmix_p)  # fmt: skip


def check_protocol(protocol: Protocol) -> None:
    """ValueError for a protocol the trainers cannot run (an unknown name, a bad probability)."""
    if protocol.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {protocol.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    if protocol.lr_schedule not in LR_SCHEDULES:
        raise ValueError(
            f"unknown lr_schedule {protocol.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}"
        )
    if protocol.augment not in AUGMENTATIONS:
        raise ValueError(
            f"unknown augment {protocol.augment!r}; choose one of {', '.join(AUGMENTATIONS)}"
        )
    if not 0.0 <= protocol.cutmix_p <= 1.0:
        raise ValueError(f"cutmix_p must be in [0, 1], got {protocol.cutmix_p}")
    if protocol.labels not in LABELS:
        raise ValueError(f"unknown labels {protocol.labels!r}; choose one of {', '.join(LABELS)}")
    if protocol.temperature <= 0:
        raise ValueError(f"temperature must be positive, got {protocol.temperature}")


def soft_epochs(protocol: Protocol) -> int:
    """How many leading epochs train on the teacher's labels (0 under hard labels)."""
    if protocol.labels != "soft":
        return 0
    return protocol.epochs - protocol.epochs // HARD_TAIL


def epoch_targets(
    labels: Tensor, soft_targets: Tensor | None, protocol: Protocol, epoch: int
) -> tuple[Tensor, float]:
    """The training targets of `epoch` (per image: `labels` [N], or the probabilities
    `soft_targets` [N, K]: a teacher's under soft labels, or the set's own, which train every
    epoch) and the temperature the networks' logits are divided by."""
    own = protocol.labels != "soft"  # soft targets under hard labels: the set's own, always
    if soft_targets is not None and (own or epoch < soft_epochs(protocol)):
        return soft_targets, protocol.temperature
    return labels, 1.0


def make_optimizer(params: Iterable[Tensor], protocol: Protocol) -> torch.optim.Optimizer:
    """The protocol's optimizer. Both are elementwise, so one optimizer over stacked [M, ...]
    parameters is M independent ones (the batched trainers rely on it)."""
    check_protocol(protocol)
    if protocol.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=protocol.lr, weight_decay=protocol.weight_decay)
    return torch.optim.SGD(
        params, lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay
    )


def lr_milestones(protocol: Protocol) -> list[int]:
    """The epochs at which the schedule multiplies the learning rate by its factor."""
    fractions, _ = LR_SCHEDULES[protocol.lr_schedule]
    return [numerator * protocol.epochs // denominator for numerator, denominator in fractions]


def lr_at(epoch: int, protocol: Protocol) -> float:
    """The learning rate of 0-based `epoch`: `lr` times the factor once per milestone reached
    (the default: `lr` for epochs [0, epochs // 2), `lr / 10` from epoch epochs // 2 on).
    Multiplied step by step, as torch's MultiStepLR does."""
    _, factor = LR_SCHEDULES[protocol.lr_schedule]
    lr = protocol.lr
    for milestone in lr_milestones(protocol):
        if epoch >= milestone:
            lr *= factor
    return lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def epochs(
    optimizer: torch.optim.Optimizer,
    protocol: Protocol,
    seed: int,
    indices: Sequence[int | str],
    n: int,
    device: torch.device,
) -> Iterator[tuple[Tensor, list[torch.Generator], list[torch.Generator] | None]]:
    """The protocol's epochs for networks `indices` trained on `n` images: sets the scheduled
    learning rate, then yields each network's data order [len(indices), n] (on `device`), its
    augmentation generator and its CutMix generator (CPU; None when the protocol has no
    CutMix). Drawn the same whichever trainer runs the networks."""
    for epoch in range(protocol.epochs):
        set_lr(optimizer, lr_at(epoch, protocol))
        orders = to_device(torch.stack([epoch_order(seed, i, epoch, n) for i in indices]), device)
        cutmix_generators = (
            [generator(seed, "eval-cutmix", i, epoch) for i in indices]
            if protocol.cutmix_p > 0
            else None
        )
        yield (
            orders,
            [augment_generator(seed, i, epoch, device) for i in indices],
            cutmix_generators,
        )


def make_augmenter(protocol: Protocol) -> DSA | NoAugment:
    return AUGMENTATIONS[protocol.augment](protocol.dsa_strategy)


def one_family_a_batch(protocol: Protocol) -> bool:
    """Whether a training batch draws one augmentation family for all its images."""
    return protocol.augment in ONE_FAMILY_A_BATCH


def dsa_augment(family: str) -> str:
    """The AUGMENTATIONS key of DSA drawing a family per `family`: batch | image."""
    if family not in DSA_FAMILY:
        raise ConfigError(
            f"unknown eval.dsa_family '{family}'; choose one of {', '.join(DSA_FAMILY)}"
        )
    return DSA_FAMILY[family]


def check_dsa_settings(family: str, strategy: str) -> None:
    """ConfigError for an unknown eval.dsa_family or an eval.dsa_strategy DSA refuses."""
    dsa_augment(family)
    try:
        DSA(strategy)
    except ValueError as error:
        raise ConfigError(f"eval.dsa_strategy: {error}") from error


def epoch_order(seed: int, index: int | str, epoch: int, n: int) -> Tensor:
    """Network `index`'s data order in `epoch`, drawn on the CPU so it does not depend on the
    device."""
    return torch.randperm(n, generator=generator(seed, "eval-order", index, epoch))


def augment_generator(seed: int, index: int | str, epoch: int, device: torch.device):
    """Network `index`'s augmentation draws in `epoch`."""
    return generator(seed, "eval-aug", index, epoch, device=device)


def fresh_network(template: nn.Module, seed: int, model_name: str, index: int) -> nn.Module:
    """Network `index` of `model_name`, built on the CPU from a CPU generator: the initial weights
    do not depend on the device."""
    return reset_parameters(
        copy.deepcopy(template), generator(seed, "eval-init", model_name, index)
    )


def accuracy_summary(accuracies: Tensor) -> dict:
    """Accuracies in [0, 1] -> {mean, std (population), accuracies} in percent (results files)."""
    return {
        "mean": round(100 * float(accuracies.mean()), 2),
        "std": round(100 * float(accuracies.std(unbiased=False)), 2),
        "accuracies": [round(100 * float(a), 2) for a in accuracies],
    }
