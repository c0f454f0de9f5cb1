"""A pool of networks pretrained on the real training set, each kept at its initial and its
trained weights (NCFM's matching networks; any method may use one).

A pool is a keyed folder of networks (models/network_store.py: the folder, its checks, the
resumable build); one network's file holds its weights before and after training:

    <root>/<data set>-<model>-<digest>/
        pool.json          what made the pool (the manifest); written before the first network
        network_000.pt     {"manifest", "index", "initial", "trained", "test_accuracy"}
        network_000.cost.json  what making it cost: {"index", "seconds", "peak_mib"}
        network_001.pt     ...

The recipe is the NCFM authors' pretraining: SGD (lr 0.01, momentum 0.9, weight decay 5e-4),
batch 128, the learning rate x 0.2 at 2/3 and 5/6 of the epochs, a DSA augmentation per image and
CutMix (probability 0.5, Beta(1, 1) area) on the training batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.models.network_store import NetworkStore, build_members, manifest
from dmcondense.rng import derive_seed, generator, to_device


@dataclass(frozen=True)
class PoolRecipe:
    """How each network of the pool trains (the NCFM authors' pretraining by default)."""

    epochs: int = 60
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "color_crop"  # the DSA strategy of the training batches, drawn per image
    cutmix: float = 0.5  # probability that a batch is CutMixed; 0: never
    cutmix_beta: float = 1.0  # Beta(beta, beta) draws the kept area

    def milestones(self) -> tuple[int, int]:
        return 2 * self.epochs // 3, 5 * self.epochs // 6


def pool_manifest(dataset: dict, model: str, knobs: dict, recipe: PoolRecipe, seed: int) -> dict:
    """What makes a pool: the data set's facts, the model and its knobs, the recipe, the seed."""
    return manifest(dataset, model, knobs, asdict(recipe), seed)


class PretrainedPool(NetworkStore):
    """The pool folder `folder` for `manifest` (every read checked: models/network_store.py)."""

    kind = "pool"
    member = "network"
    title = "pool network"
    draws = "pool"
    required = frozenset({"initial", "trained", "manifest"})
    remake = "run the pretrain command again"
    manifest_name = "pool.json"

    def load(self, count: int) -> list[tuple[dict, dict]]:
        """(initial, trained) state dicts of networks 0..count-1."""
        return [(record["initial"], record["trained"]) for record in self.records(count)]

    def train_member(
        self, net: nn.Module, images: Tensor, labels: Tensor, normalise: Callable,
        augment: Callable, recipe: PoolRecipe, seed: int, index: int,
    ) -> dict:  # fmt: skip
        """Its initial and its trained weights (`train_network`)."""
        initial = cpu_state(net)
        train_network(net, images, labels, normalise, augment, recipe, seed, index)
        return {"initial": initial, "trained": cpu_state(net)}


def cpu_state(net: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().cpu().clone() for name, value in net.state_dict().items()}


def cutmix_box(height: int, width: int, area: float, rng: np.random.Generator) -> tuple:
    """A box covering about 1 - `area` of the image, centred uniformly (clipped at the edges)."""
    cut = math.sqrt(1.0 - area)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


def train_network(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    normalise: Callable[[Tensor], Tensor],
    augment: Callable[[Tensor, torch.Generator], Tensor],
    recipe: PoolRecipe,
    seed: int,
    index: int,
) -> None:
    """Train `net` (already initialised, on its device) by `recipe` on uint8 `images` [N, ...]
    (on the same device) with integer `labels`; every draw keyed by (seed, index, epoch)."""
    device = next(net.parameters()).device
    optimizer = torch.optim.SGD(
        net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    milestones = recipe.milestones()
    net.train()
    n = images.shape[0]
    for epoch in range(recipe.epochs):
        lr = recipe.lr * 0.2 ** sum(epoch >= m for m in milestones)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(n, generator=generator(seed, "pool-order", index, epoch))
        order = to_device(order, device)
        augment_g = generator(seed, "pool-augment", index, epoch, device=device)
        mix_g = generator(seed, "pool-cutmix-pairs", index, epoch)
        mix_rng = np.random.default_rng(derive_seed(seed, "pool-cutmix", index, epoch))
        for start in range(0, n, recipe.batch_size):
            chosen = order[start : start + recipe.batch_size]
            with torch.no_grad():
                x = augment(normalise(images[chosen]), augment_g)
            y = labels[chosen]
            if recipe.cutmix > 0 and mix_rng.random() < recipe.cutmix:
                area = float(mix_rng.beta(recipe.cutmix_beta, recipe.cutmix_beta))
                partner = to_device(torch.randperm(x.shape[0], generator=mix_g), device)
                top, bottom, left, right = cutmix_box(x.shape[2], x.shape[3], area, mix_rng)
                x = x.clone()
                x[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
                kept = 1.0 - (bottom - top) * (right - left) / (x.shape[2] * x.shape[3])
                logits = net(x)
                loss = kept * F.cross_entropy(logits, y) + (1.0 - kept) * F.cross_entropy(
                    logits, y[partner]
                )
            else:
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


# The networks 0..size-1 the pool's folder lacks, trained by the pool's recipe (every one it
# holds checked first); returns how many were trained.
build_pool = build_members
