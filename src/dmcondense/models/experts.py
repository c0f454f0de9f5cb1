"""Expert trajectories: networks trained on the real training set with every parameter kept
after every epoch, for the methods that match training trajectories (MTT, DATM).

The experts are a keyed folder of networks, as a pretrained pool is (models/network_store.py:
the folder, its checks, the resumable build), whose key always names the data set's whitening:

    <root>/<data set>-<model>-<digest>/
        experts.json      what made the experts (the manifest); written before the first expert
        expert_000.pt     {"manifest", "index", "names", "trajectory", "buffers", "test_accuracy"}
        expert_000.cost.json  what making it cost: {"index", "seconds", "peak_mib"}
        expert_001.pt     ...

`trajectory` is float32 [epochs + 1, P]: the network's parameters flattened in
`named_parameters()` order (`names` lists them), at initialisation and after each epoch;
`buffers` is float32 [epochs + 1, B] of the floating-point buffers (BatchNorm's running
statistics) or None when the model has none. That is all MTT reads, so an expert costs
4 (epochs + 1) (P + B) bytes on disk, plus a few hundred for the names and manifest.

The recipe is MTT's buffer.py: SGD at lr 0.01, no momentum, no weight decay, batch 256, a DSA
augmentation on every batch (one family a batch, each image its own parameters), 50 epochs,
no learning-rate decay. `optimizer="gsam"` is DATM's buffer_FTD.py: each batch (augmented once)
takes a GSAM step (models/gsam.py) around that SGD; its fields are in the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.models.gsam import gsam_step
from dmcondense.models.network_store import NetworkStore, build_members, manifest
from dmcondense.rng import generator


@dataclass(frozen=True)
class ExpertRecipe:
    """How each expert trains (MTT's buffer.py by default)."""

    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    augment: str = "color_crop_cutout_flip_scale_rotate"  # DSA, one family a batch; "none": off
    # sgd: MTT's | gsam: DATM's buffer_FTD.py, GSAM around the SGD above (rho, alpha, adaptive)
    optimizer: str = "sgd"
    rho: float = 0.0
    alpha: float = 0.0
    adaptive: bool = True


def experts_manifest(
    dataset: dict, model: str, knobs: dict, recipe: ExpertRecipe, seed: int
) -> dict:
    """What makes a set of experts: the data set's facts (with its whitening), the model and its
    knobs, the recipe, the seed. An SGD recipe leaves out GSAM's fields, so its key is the one
    it had before GSAM was a choice."""
    recipe_fields = asdict(recipe)
    if recipe.optimizer == "sgd":
        for name in ("optimizer", "rho", "alpha", "adaptive"):
            del recipe_fields[name]
    return {**manifest(dataset, model, knobs, recipe_fields, seed), "kind": "experts"}


class ExpertStore(NetworkStore):
    """The experts' folder (every read checked: models/network_store.py)."""

    kind = "experts"
    member = "expert"
    title = "expert"
    draws = "expert"
    required = frozenset({"trajectory", "manifest", "names"})
    remake = "run the experts command again"
    manifest_name = "experts.json"
    trajectories = NetworkStore.records  # the records of experts 0..count-1, checked

    def train_member(
        self, net: nn.Module, images: Tensor, labels: Tensor, normalise: Callable,
        augment: Callable | None, recipe: ExpertRecipe, seed: int, index: int,
    ) -> dict:  # fmt: skip
        """Its parameters' names and its snapshots (`train_expert`)."""
        names = [name for name, _ in net.named_parameters()]
        trajectory, buffers = train_expert(
            net, images, labels, normalise, augment, recipe, seed, index
        )
        return {"names": names, "trajectory": trajectory, "buffers": buffers}


def flat_parameters(net: nn.Module) -> Tensor:
    """Every parameter of `net`, flattened in `named_parameters()` order, float32 on the CPU."""
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in net.parameters()])


def float_buffers(net: nn.Module) -> list[tuple[str, Tensor]]:
    """The floating-point buffers (BatchNorm's running statistics; its integer counter is not
    read by anything that replays a trajectory)."""
    return [(n, b) for n, b in net.named_buffers() if b.is_floating_point()]


def flat_buffers(net: nn.Module) -> Tensor | None:
    found = float_buffers(net)
    if not found:
        return None
    return torch.cat([b.detach().reshape(-1).float().cpu() for _, b in found])


def expert_bytes(net: nn.Module, epochs: int) -> int:
    """The bytes of one expert's tensors on disk: 4 (epochs + 1) (parameters + float buffers)."""
    params = sum(p.numel() for p in net.parameters())
    buffers = sum(b.numel() for _, b in float_buffers(net))
    return 4 * (epochs + 1) * (params + buffers)


def _backward(net: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Tensor:
    """Zero the gradients, then the forward and backward pass of the cross-entropy on (x, y)."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    return loss


def train_expert(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    normalise: Callable[[Tensor], Tensor],
    augment: Callable[..., Tensor] | None,
    recipe: ExpertRecipe,
    seed: int,
    index: int,
) -> tuple[Tensor, Tensor | None]:
    """Train `net` (initialised, on its device) by `recipe` on uint8 `images` (same device) and
    return its trajectory [epochs + 1, P] and float buffers [epochs + 1, B] (or None), snapshots
    at initialisation and after each epoch; every draw keyed by (seed, index, epoch)."""
    device = next(net.parameters()).device
    params = list(net.parameters())
    optimizer = torch.optim.SGD(
        params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    net.train()
    snapshots, buffer_snapshots = [flat_parameters(net)], [flat_buffers(net)]
    n = images.shape[0]
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=generator(seed, "expert-order", index, epoch))
        order = order.to(device)
        augment_g = generator(seed, "expert-augment", index, epoch, device=device)
        for start in range(0, n, recipe.batch_size):
            chosen = order[start : start + recipe.batch_size]
            x = normalise(images[chosen])
            if augment is not None:
                with torch.no_grad():
                    x = augment(x, augment_g, one_family=True)
            y = labels[chosen]
            if recipe.optimizer == "gsam":
                gsam_step(
                    params, partial(_backward, net, optimizer, x, y), optimizer,
                    rho=recipe.rho, alpha=recipe.alpha, adaptive=recipe.adaptive, model=net,
                )  # fmt: skip
            else:
                _backward(net, optimizer, x, y)
                optimizer.step()
        snapshots.append(flat_parameters(net))
        buffer_snapshots.append(flat_buffers(net))
    buffers = None if buffer_snapshots[0] is None else torch.stack(buffer_snapshots)
    return torch.stack(snapshots), buffers


# The experts 0..size-1 the folder lacks, trained by the experts' recipe (every one it holds
# checked first); returns how many were trained.
build_experts = build_members
