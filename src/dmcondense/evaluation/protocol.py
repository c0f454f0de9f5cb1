"""The evaluation protocol: train freshly initialised networks on a (small) set, test on real data.

SGD (lr 0.01, momentum 0.9, weight decay 5e-4), batch 256, `epochs` epochs with the learning
rate divided by 10 at epoch `epochs // 2`, DSA with its own draw per image on every training
batch; then top-1 accuracy on the real test set (eval mode, no augmentation, in batches).

Every random draw is keyed by the network's index, never by the path that trains it:
  init   reset_parameters(net, generator(seed, "eval-init", model_name, i))   (on the CPU)
  order  randperm from generator(seed, "eval-order", i, epoch)                (on the CPU)
  DSA    DSA.sample(batch, generator(seed, "eval-aug", i, epoch))             (on the device)
so the batched and the sequential paths see the same networks, batches and augmentations, and
their accuracies agree up to floating-point rounding.

Batched path: the networks of one architecture are trained together. On the CPU, ConvNets
(without BatchNorm) become one `ConvNetEnsemble` (grouped convolutions, ensemble.py); for other
architectures the parameters are stacked (`torch.func.stack_module_state`) into leaf tensors
[M, ...] and one vmapped `functional_call` runs all M forward passes at once. Either way the
loss is the SUM over networks of each network's mean batch loss, so the gradient of network m's
slice is exactly its own gradient, and one `torch.optim.SGD` over the stacked tensors (an
elementwise update, weight decay and momentum included) is exactly M independent SGD optimisers.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from dmcondense.augment import DSA, NoAugment
from dmcondense.data.imageset import ImageSet
from dmcondense.evaluation.ensemble import ConvNetEnsemble, supports_ensemble
from dmcondense.models.init import reset_parameters
from dmcondense.models.registry import build_model, uses_batchnorm
from dmcondense.rng import generator


@dataclass
class Protocol:
    epochs: int = 1000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: bool = True
    # Test images per forward pass, summed over the networks of a batched pass (memory bound).
    test_batch_size: int = 1024


def make_optimizer(params: Iterable[Tensor], protocol: Protocol) -> torch.optim.SGD:
    return torch.optim.SGD(
        params, lr=protocol.lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay
    )


def lr_at(epoch: int, protocol: Protocol) -> float:
    """Step schedule: `lr` for epochs [0, epochs // 2), `lr / 10` from epoch epochs // 2 on."""
    return protocol.lr if epoch < protocol.epochs // 2 else protocol.lr * 0.1


def make_augmenter(protocol: Protocol) -> DSA | NoAugment:
    return DSA() if protocol.augment else NoAugment()


# ----------------------------------------------------------------------------- helpers
def channel_stats(
    mean: Sequence[float], std: Sequence[float], device: torch.device
) -> tuple[Tensor, Tensor]:
    shape = (1, -1, 1, 1)
    return (
        torch.tensor(list(mean), dtype=torch.float32, device=device).view(shape),
        torch.tensor(list(std), dtype=torch.float32, device=device).view(shape),
    )


def accuracy_summary(accuracies: Tensor) -> dict:
    """Accuracies in [0, 1] -> {mean, std (population), accuracies} in percent (results files)."""
    return {
        "mean": round(100 * float(accuracies.mean()), 2),
        "std": round(100 * float(accuracies.std(unbiased=False)), 2),
        "accuracies": [round(100 * float(a), 2) for a in accuracies],
    }


def as_network_input(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 images are normalised here; float images are taken as already normalised."""
    if images.dtype == torch.uint8:
        return (images.float().div_(255.0) - mean) / std
    return images


def _epoch_order(seed: int, index: int | str, epoch: int, n: int) -> Tensor:
    # Drawn on the CPU so the data order does not depend on the device.
    return torch.randperm(n, generator=generator(seed, "eval-order", index, epoch))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _fresh_copy(template: nn.Module, seed: int, model_name: str, index: int) -> nn.Module:
    # Built on the CPU from a CPU generator: the initial weights do not depend on the device.
    return reset_parameters(
        copy.deepcopy(template), generator(seed, "eval-init", model_name, index)
    )


def _progress_bar(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch")


# -------------------------------------------------------------------------- sequential
def train_network(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    protocol: Protocol,
    seed: int,
    index: int | str,
    mean: Sequence[float],
    std: Sequence[float],
    augmenter: DSA | NoAugment | None = None,
    bar=None,
) -> nn.Module:
    """Train one network in place with the protocol; draws keyed by (seed, index).

    `images` are normalised float [N, C, H, W] or uint8 (then normalised batch by batch), on
    the network's device.
    """
    device = images.device
    mean_t, std_t = channel_stats(mean, std, device)
    augmenter = make_augmenter(protocol) if augmenter is None else augmenter
    optimizer = make_optimizer(net.parameters(), protocol)
    n = images.shape[0]
    net.train()
    for epoch in range(protocol.epochs):
        _set_lr(optimizer, lr_at(epoch, protocol))
        order = _epoch_order(seed, index, epoch, n).to(device)
        aug_generator = generator(seed, "eval-aug", index, epoch, device=device)
        for start in range(0, n, protocol.batch_size):
            batch = order[start : start + protocol.batch_size]
            x = as_network_input(images[batch], mean_t, std_t)
            x = augmenter.apply(x, augmenter.sample(batch.numel(), aug_generator))
            loss = F.cross_entropy(net(x), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if bar is not None:
            bar.update(1)
    return net


@torch.no_grad()
def top1_accuracy(
    net: nn.Module,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of `net` (eval mode) on uint8 test images, normalised batch by batch."""
    device = next(net.parameters()).device
    mean_t, std_t = channel_stats(mean, std, device)
    was_training = net.training
    net.eval()
    correct = 0
    for start in range(0, test_images.shape[0], batch_size):
        x = as_network_input(test_images[start : start + batch_size].to(device), mean_t, std_t)
        y = test_labels[start : start + batch_size].to(device)
        correct += int((net(x).argmax(dim=1) == y).sum())
    net.train(was_training)
    return correct / max(test_images.shape[0], 1)


# ----------------------------------------------------------------------------- batched
class _Stacked:
    """M networks of one architecture as stacked leaf tensors, run through one vmapped call."""

    def __init__(self, networks: list[nn.Module], device: torch.device) -> None:
        params, buffers = stack_module_state([net.to(device) for net in networks])
        self.params = params  # leaf tensors [M, ...], requires_grad
        self.buffers = buffers
        self.size = len(networks)
        # A weightless twin supplies the code of forward(); the tensors come from the stacks.
        self.skeleton = copy.deepcopy(networks[0]).to("meta")

        def loss_one(p: dict, b: dict, x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(functional_call(self.skeleton, (p, b), (x,)), y)

        def logits_one(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(self.skeleton, (p, b), (x,))

        self._losses = torch.vmap(loss_one, in_dims=(0, 0, 0, 0))
        self._logits = torch.vmap(logits_one, in_dims=(0, 0, None))

    def losses(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-network mean losses [M] for per-network batches x [M, B, ...], y [M, B]."""
        self.skeleton.train()
        return self._losses(self.params, self.buffers, x, y)

    def logits(self, x: Tensor) -> Tensor:
        """Eval-mode logits [M, B, K] of every network on the shared batch x [B, ...]."""
        self.skeleton.eval()
        return self._logits(self.params, self.buffers, x)


def _check_vmappable(stacked: _Stacked, images: Tensor, labels: Tensor, mean, std) -> None:
    """Forward and backward on two images per network; raises what vmap raises."""
    x = as_network_input(images[:2], mean, std)
    x = x.unsqueeze(0).expand(stacked.size, *x.shape).contiguous()
    y = labels[:2].unsqueeze(0).expand(stacked.size, -1).contiguous()
    loss = stacked.losses(x, y).sum()
    torch.autograd.grad(loss, list(stacked.params.values()))


def _train_stacked(
    stacked: _Stacked | ConvNetEnsemble,
    indices: Sequence[int],
    images: Tensor,
    labels: Tensor,
    *,
    protocol: Protocol,
    seed: int,
    mean: Tensor,
    std: Tensor,
    augmenter: DSA | NoAugment,
    bar=None,
) -> None:
    device = images.device
    optimizer = make_optimizer(stacked.params.values(), protocol)
    n, m = images.shape[0], len(indices)
    for epoch in range(protocol.epochs):
        _set_lr(optimizer, lr_at(epoch, protocol))
        orders = torch.stack([_epoch_order(seed, i, epoch, n) for i in indices]).to(device)
        aug_generators = [generator(seed, "eval-aug", i, epoch, device=device) for i in indices]
        for start in range(0, n, protocol.batch_size):
            batch = orders[:, start : start + protocol.batch_size]  # [M, B]
            b = batch.shape[1]
            x = as_network_input(images[batch.reshape(-1)], mean, std)  # [M*B, C, H, W]
            # Each network draws from its own generator, exactly as the sequential path does;
            # one `apply` then augments all M*B images in one batched pass.
            draws = [augmenter.sample(b, g) for g in aug_generators]
            params = {key: torch.cat([d[key] for d in draws]) for key in draws[0]}
            x = augmenter.apply(x, params).view(m, b, *x.shape[1:])
            loss = stacked.losses(x, labels[batch]).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if bar is not None:
            bar.update(1)


@torch.no_grad()
def _test_stacked(
    stacked: _Stacked | ConvNetEnsemble,
    test_images: Tensor,
    test_labels: Tensor,
    mean: Tensor,
    std: Tensor,
    batch_size: int,
) -> Tensor:
    device = mean.device
    per_pass = max(1, batch_size // stacked.size)
    correct = torch.zeros(stacked.size, dtype=torch.long, device=device)
    for start in range(0, test_images.shape[0], per_pass):
        x = as_network_input(test_images[start : start + per_pass].to(device), mean, std)
        y = test_labels[start : start + per_pass].to(device)
        correct += (stacked.logits(x).argmax(dim=2) == y).sum(dim=1)
    return correct.double().cpu() / max(test_images.shape[0], 1)


# ------------------------------------------------------------------------------ public
# Tests flip this to compare the ensemble with the generic vmap stack on the CPU.
ENSEMBLE_DISABLED = False


def train_networks(
    model_name: str,
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_models: int,
    protocol: Protocol,
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
    batched: bool | None = None,
    model_kwargs: dict | None = None,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Train `num_models` fresh `model_name` networks on (images, labels); test accuracies [M].

    `images`: normalised float [N, C, H, W] (a synthetic set is stored normalised), or uint8
    (normalised batch by batch, e.g. for the whole-data baseline). `test_images`: uint8
    [M, C, H, W], normalised batch by batch, so the test set never sits in memory as float.

    `batched`: None trains the networks together with torch.vmap on a CUDA device unless the
    architecture uses BatchNorm (vmap cannot update per-network BN running statistics in
    place, so BN models go one after another), and falls back (with a warning) if vmap raises
    for the architecture. On the CPU, None trains the networks one after another: on 2 cores
    the ConvNet ensemble measured as fast as the sequential loop (`benchmarks/eval_batched.py`:
    median ratios 0.96 to 1.03 over four runs), since one network's batch already fills the
    cores, while it holds all M networks' activations at once (about 4x the memory for M=10).
    True insists on batching (on the CPU, ConvNets with instance, layer or no norm as one
    `ConvNetEnsemble` of grouped convolutions, vmap otherwise;
    ValueError for BN), False is the plain loop. Both paths draw the same numbers, so they
    agree up to rounding. `chunk_size` caps how many networks share one batched pass
    (memory); the results do not depend on it.
    `num_classes` defaults to 1 + the largest label in the training or test labels.
    Returns accuracies in [0, 1], float64 on the CPU, ordered by network index.
    """
    if num_models < 1:
        raise ValueError(f"num_models must be positive, got {num_models}")
    device = torch.device(device) if device is not None else images.device
    images = images.detach().to(device)
    labels = labels.to(device=device, dtype=torch.long)
    test_labels = test_labels.long()
    if num_classes is None:
        num_classes = int(max(labels.max(), test_labels.max())) + 1
    template = build_model(
        model_name, images.shape[1], num_classes, images.shape[-1], **(model_kwargs or {})
    )
    has_batchnorm = uses_batchnorm(template)
    if batched and has_batchnorm:
        raise ValueError(f"{model_name} uses BatchNorm, which the batched (vmap) path cannot train")
    # On CUDA the vmap stack is the measured path (H200); the ensemble is for the CPU.
    use_ensemble = device.type == "cpu" and supports_ensemble(template) and not ENSEMBLE_DISABLED
    if batched is None:
        use_vmap = device.type == "cuda" and not has_batchnorm
    else:
        use_vmap = batched
    augmenter = make_augmenter(protocol)
    mean_t, std_t = channel_stats(mean, std, device)

    if use_vmap:
        chunk = num_models if chunk_size is None else max(1, chunk_size)
        bar = _progress_bar(protocol.epochs * -(-num_models // chunk), progress, model_name)
        accuracies = []
        for first in range(0, num_models, chunk):
            indices = list(range(first, min(first + chunk, num_models)))
            fresh = [_fresh_copy(template, seed, model_name, i) for i in indices]
            if use_ensemble:
                stacked = ConvNetEnsemble(fresh, device)
            else:
                stacked = _Stacked(fresh, device)
            try:
                if not use_ensemble:
                    _check_vmappable(stacked, images, labels, mean_t, std_t)
            except Exception as error:  # vmap has no batching rule for some operator
                if batched:
                    raise
                warnings.warn(
                    f"vmap failed for {model_name} ({type(error).__name__}: {error}); "
                    "training its networks one after another",
                    stacklevel=2,
                )
                if bar is not None:
                    bar.close()
                return train_networks(
                    model_name, images, labels, test_images, test_labels,
                    num_models=num_models, protocol=protocol, seed=seed, mean=mean, std=std,
                    batched=False, model_kwargs=model_kwargs, num_classes=num_classes,
                    device=device, progress=progress,
                )  # fmt: skip
            _train_stacked(
                stacked, indices, images, labels, protocol=protocol, seed=seed,
                mean=mean_t, std=std_t, augmenter=augmenter, bar=bar,
            )  # fmt: skip
            accuracies.append(
                _test_stacked(
                    stacked, test_images, test_labels, mean_t, std_t, protocol.test_batch_size
                )
            )
        if bar is not None:
            bar.close()
        return torch.cat(accuracies)

    bar = _progress_bar(protocol.epochs * num_models, progress, model_name)
    accuracies = torch.zeros(num_models, dtype=torch.float64)
    for i in range(num_models):
        net = _fresh_copy(template, seed, model_name, i).to(device)
        train_network(
            net, images, labels, protocol=protocol, seed=seed, index=i, mean=mean, std=std,
            augmenter=augmenter, bar=bar,
        )  # fmt: skip
        accuracies[i] = top1_accuracy(
            net, test_images, test_labels, mean=mean, std=std,
            batch_size=protocol.test_batch_size,
        )  # fmt: skip
    if bar is not None:
        bar.close()
    return accuracies


def evaluate_synthetic(
    images: Tensor,
    labels: Tensor,
    test: ImageSet,
    *,
    models: Sequence[str],
    num_models: int,
    protocol: Protocol,
    seed: int,
    mean: Sequence[float],
    std: Sequence[float],
    model_kwargs_for: Callable[[str], dict] | None = None,
    batched: bool | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Accuracies [num_models] per architecture of networks trained on one (synthetic) set."""
    return {
        name: train_networks(
            name,
            images,
            labels,
            test.images,
            test.labels,
            num_models=num_models,
            protocol=protocol,
            seed=seed,
            mean=mean,
            std=std,
            batched=batched,
            model_kwargs=model_kwargs_for(name) if model_kwargs_for else None,
            num_classes=test.num_classes,
            chunk_size=chunk_size,
            device=device,
            progress=progress,
        )
        for name in models
    }
