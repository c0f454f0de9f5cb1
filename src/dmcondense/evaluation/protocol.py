"""The evaluation protocol: train freshly initialised networks on a (small) set, test on real data.

SGD (lr 0.01, momentum 0.9, weight decay 5e-4), batch 256, `epochs` epochs with the learning
rate divided by 10 at epoch `epochs // 2`, DSA on every training batch (as the reference: one
family drawn for the batch, each image its own parameters; "dsa_per_image" draws a family per
image); then top-1 accuracy on the real test set (eval mode, no augmentation, in batches).

Every random draw is keyed by the network's index, never by the trainer that runs it:
  init   reset_parameters(net, generator(seed, "eval-init", model_name, i))   (on the CPU)
  order  randperm from generator(seed, "eval-order", i, epoch)                (on the CPU)
  DSA    DSA.sample(batch, generator(seed, "eval-aug", i, epoch), one_family) (on the device)
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
from dmcondense.rng import generator

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
}
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
# The augmentations that draw one family for a whole training batch. DC's own augmentation
# picked one family per image, so dc_mnist and dc_batchnorm stay per image.
ONE_FAMILY_A_BATCH = frozenset({"dsa"})
# eval.dsa_family -> the key of the DSA augmentation.
DSA_FAMILY = {"batch": "dsa", "image": "dsa_per_image"}


@dataclass(frozen=True)
class Protocol:
    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: str = "dsa"  # a key of AUGMENTATIONS
    # The DSA families (the reference trains with its condensation's strategy: no flip for digits).
    dsa_strategy: str = DSA_STRATEGY
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


def make_optimizer(params: Iterable[Tensor], protocol: Protocol) -> torch.optim.SGD:
    return torch.optim.SGD(
        params, lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay
    )


def lr_at(epoch: int, protocol: Protocol) -> float:
    """Step schedule: `lr` for epochs [0, epochs // 2), `lr / 10` from epoch epochs // 2 on."""
    return protocol.lr if epoch < protocol.epochs // 2 else protocol.lr * 0.1


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
) -> Iterator[tuple[Tensor, list[torch.Generator]]]:
    """The protocol's epochs for networks `indices` trained on `n` images: sets the scheduled
    learning rate, then yields each network's data order [len(indices), n] (on `device`) and
    its augmentation generator. Drawn the same whichever trainer runs the networks."""
    for epoch in range(protocol.epochs):
        set_lr(optimizer, lr_at(epoch, protocol))
        orders = torch.stack([epoch_order(seed, i, epoch, n) for i in indices]).to(device)
        yield orders, [augment_generator(seed, i, epoch, device) for i in indices]


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
