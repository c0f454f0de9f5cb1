"""Expert trajectories: networks trained on the real training set with every parameter kept
after every epoch, for the methods that match training trajectories (MTT, DATM).

Experts live in one folder, keyed by what made them (data set and its whitening, model and its
knobs, the training recipe, the seed), as the pretrained pools are (models/pretrained.py, whose
folder machinery this reuses):

    <root>/<data set>-<model>-<digest>/
        experts.json      what made the experts (the manifest); written before the first expert
        expert_000.pt     {"manifest", "index", "names", "trajectory", "buffers", "test_accuracy"}
        expert_001.pt     ...

`trajectory` is float32 [epochs + 1, P]: the network's parameters flattened in
`named_parameters()` order (`names` lists them), at initialisation and after each epoch;
`buffers` is float32 [epochs + 1, B] of the floating-point buffers (BatchNorm's running
statistics) or None when the model has none. That is all MTT reads, so an expert costs
4 (epochs + 1) (P + B) bytes on disk, plus a few hundred for the names and manifest.

Expert i is the same whatever the number of experts: its initialisation, batch order and
augmentation are keyed by (seed, i, epoch), so 20 experts extend 5 and a stopped run resumes with
its first missing expert. Each file is written atomically when its expert finishes: a killed run
loses at most the expert in progress; a file that cannot be read, or one made for another data
set or model, stops the run with one line and nothing is overwritten.

The recipe is MTT's buffer.py: SGD at lr 0.01, no momentum, no weight decay, batch 256, a DSA
augmentation on every batch (one family a batch, each image its own parameters), 50 epochs,
no learning-rate decay. `optimizer="gsam"` is DATM's buffer_FTD.py: each batch (augmented once)
takes a GSAM step (models/gsam.py) around that SGD; its fields are in the key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.atomic import atomic_write
from dmcondense.models.gsam import gsam_step
from dmcondense.models.init import reset_parameters
from dmcondense.models.pretrained import FORMAT, PretrainedPool, test_accuracy
from dmcondense.rng import generator

EXPERTS_MANIFEST = "experts.json"


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
    return {
        "format": FORMAT,
        "kind": "experts",
        "dataset": dict(dataset),
        "model": model,
        "knobs": dict(sorted(knobs.items())),
        "recipe": recipe_fields,
        "seed": int(seed),
    }


class ExpertStore(PretrainedPool):
    """The experts' folder: which experts are finished, read them, add one (every read checked,
    as for pools)."""

    kind = "experts"
    member = "expert"
    required = frozenset({"trajectory", "manifest", "names"})
    remake = "run the experts command again"
    manifest_name = EXPERTS_MANIFEST

    def save_expert(
        self,
        index: int,
        names: list[str],
        trajectory: Tensor,
        buffers: Tensor | None,
        test_accuracy: float | None,
    ) -> Path:
        record = {
            "manifest": self.manifest,
            "index": index,
            "names": list(names),
            "trajectory": trajectory,
            "buffers": buffers,
            "test_accuracy": test_accuracy,
        }
        return atomic_write(self.network_path(index), lambda tmp: torch.save(record, tmp))

    def trajectories(self, count: int) -> list[dict]:
        """The records of experts 0..count-1, checked (FileNotFoundError names the first
        missing one)."""
        self.check_manifest()
        missing = [i for i in range(count) if not self.network_path(i).exists()]
        if missing:
            raise FileNotFoundError(
                f"experts {self.folder} lacks expert {missing[0]} of {count} "
                f"({len(missing)} missing)"
            )
        return [self.read(i) for i in range(count)]


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


def build_experts(
    store: ExpertStore,
    make_network: Callable[[], nn.Module],
    size: int,
    images: Tensor,
    labels: Tensor,
    normalise: Callable[[Tensor], Tensor],
    augment: Callable[..., Tensor] | None,
    recipe: ExpertRecipe,
    seed: int,
    device: torch.device | str = "cpu",
    test: tuple[Tensor, Tensor] | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Train the experts 0..size-1 the folder lacks (each written when it finishes) after
    checking every one it holds; returns how many were trained."""
    finished = set(store.check_all())
    todo = [i for i in range(size) if i not in finished]
    if not todo:
        return 0
    store.write_manifest()
    images, labels = images.to(device), labels.to(device)
    for index in todo:
        started = time.time()
        net = make_network()
        reset_parameters(net, generator(seed, "expert-init", index))  # on the CPU: any device
        net = net.to(device).requires_grad_(True)
        names = [name for name, _ in net.named_parameters()]
        trajectory, buffers = train_expert(
            net, images, labels, normalise, augment, recipe, seed, index
        )
        accuracy = None if test is None else test_accuracy(net, *test, normalise)
        path = store.save_expert(index, names, trajectory, buffers, accuracy)
        scored = "" if accuracy is None else f", test accuracy {accuracy:.2f}%"
        log(
            f"expert {index + 1}/{size}: {recipe.epochs} epochs{scored} "
            f"({time.time() - started:.0f} s) -> {path}"
        )
    return len(todo)
