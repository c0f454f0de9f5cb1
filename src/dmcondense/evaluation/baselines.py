"""Coreset baselines: random real images, herding and k-center per class, the whole set.

Each selector returns long indices into the training set, class by class in increasing class
order, exactly `ipc` per class and all from that class. Selection is a one-off, so a Python loop
over classes (and over the `ipc` greedy picks) is fine; every pick is one batched distance
computation over all candidates of the class.

Features for herding and k-center (`embed_features`): the ConvNet embedding (`.embed`, the
flattened output of the last block), the network DM itself matches means in. The default,
`train_epochs=0`, is a randomly initialised ConvNet drawn from `generator(seed, "coreset-net")`:
that is DM's own view of the data (DM matches class means under random ConvNets, so herding in
that space is "DM's objective solved by selection instead of optimisation"), it costs one
forward pass over the training set, and it needs no training budget. The DC/DSA benchmark
instead embeds with a ConvNet trained on the whole training set; `train_epochs > 0` reproduces
that (the evaluation protocol's SGD recipe and step schedule, without augmentation), and is what
to use when comparing with the published herding / k-center figures.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.protocol import Protocol
from dmcondense.evaluation.sequential import train_network
from dmcondense.models.init import reset_parameters
from dmcondense.models.registry import build_model
from dmcondense.rng import generator as make_generator


def _class_members(labels: Tensor, ipc: int) -> list[Tensor]:
    """Indices of each class present in `labels` (ascending class id); checks `ipc` fits."""
    if ipc < 1:
        raise ValueError(f"ipc must be positive, got {ipc}")
    labels = labels.cpu().long()
    members = []
    for c in torch.unique(labels).tolist():
        index = torch.nonzero(labels == c).squeeze(1)
        if index.numel() < ipc:
            raise ValueError(f"class {c} has {index.numel()} images, fewer than ipc={ipc}")
        members.append(index)
    return members


def select_whole(labels: Tensor) -> Tensor:
    """Every training index: the whole-data baseline (its epoch budget is the caller's)."""
    return torch.arange(labels.shape[0], dtype=torch.long)


def select_random(labels: Tensor, ipc: int, generator: torch.Generator) -> Tensor:
    """`ipc` images per class drawn uniformly without replacement (the "real" init of DM)."""
    picks = []
    for index in _class_members(labels, ipc):
        order = torch.randperm(index.numel(), generator=generator, device=generator.device)
        picks.append(index[order[:ipc].cpu()])
    return torch.cat(picks)


def select_herding(features: Tensor, labels: Tensor, ipc: int) -> Tensor:
    """Greedy herding per class: each pick brings the mean of the picked features closest to
    the class mean. The first pick is therefore the sample nearest the class mean."""
    features = features.detach().cpu().double()  # float64: near-ties resolve the same way
    picks = []
    for index in _class_members(labels, ipc):
        f = features[index]
        target = f.mean(dim=0)
        running_sum = torch.zeros_like(target)
        taken = torch.zeros(index.numel(), dtype=torch.bool)
        chosen = []
        for k in range(1, ipc + 1):
            # Distance of the would-be mean (sum + f_j) / k to the class mean, for every j at once.
            distance = ((running_sum + f) / k - target).norm(dim=1)
            distance[taken] = float("inf")
            j = int(distance.argmin())
            taken[j] = True
            running_sum += f[j]
            chosen.append(j)
        picks.append(index[torch.tensor(chosen)])
    return torch.cat(picks)


def select_kcenter(
    features: Tensor, labels: Tensor, ipc: int, generator: torch.Generator | None = None
) -> Tensor:
    """Greedy k-center per class: each pick is the sample farthest from the picked centres.

    The first centre is drawn uniformly from the class with `generator` (the classic
    k-center coreset start); with `generator=None` it is the sample nearest the class mean,
    which makes the selection fully deterministic without a seed.
    """
    features = features.detach().cpu().double()
    picks = []
    for index in _class_members(labels, ipc):
        f = features[index]
        if generator is None:
            first = int((f - f.mean(dim=0)).norm(dim=1).argmin())
        else:
            first = int(torch.randint(index.numel(), (1,), generator=generator,
                                      device=generator.device))  # fmt: skip
        chosen = [first]
        nearest = (f - f[first]).norm(dim=1)  # distance of every sample to its nearest centre
        for _ in range(ipc - 1):
            j = int(nearest.argmax())
            chosen.append(j)
            nearest = torch.minimum(nearest, (f - f[j]).norm(dim=1))
        picks.append(index[torch.tensor(chosen)])
    return torch.cat(picks)


@torch.no_grad()
def _embed_all(net: torch.nn.Module, images: Tensor, normaliser: Normaliser,
               batch_size: int, device: torch.device) -> Tensor:  # fmt: skip
    net.eval()
    chunks = [
        net.embed(normaliser.to_input(images[start : start + batch_size].to(device))).cpu()
        for start in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks)


def embed_features(
    images_uint8: Tensor,
    normaliser: Normaliser,
    *,
    seed: int,
    image_size: int,
    channels: int,
    num_classes: int,
    train_epochs: int = 0,
    train_labels: Tensor | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    model_kwargs: dict | None = None,
) -> Tensor:
    """ConvNet `.embed` features [N, D] (float32, CPU) of uint8 images, computed in batches.

    With `train_epochs > 0` the ConvNet is first trained on all of (images_uint8, train_labels)
    with the evaluation protocol's optimiser and schedule, without augmentation.
    """
    device = torch.device(device) if device is not None else images_uint8.device
    net = build_model("convnet", channels, num_classes, image_size, **(model_kwargs or {}))
    net = reset_parameters(net, make_generator(seed, "coreset-net")).to(device)
    if train_epochs > 0:
        if train_labels is None:
            raise ValueError("train_epochs > 0 needs train_labels")
        train_network(
            net, images_uint8.to(device), train_labels.to(device).long(),
            protocol=Protocol(epochs=train_epochs, augment="none"), seed=seed, index="coreset-net",
            normaliser=normaliser,
        )  # fmt: skip
    return _embed_all(net, images_uint8, normaliser, batch_size, device)
