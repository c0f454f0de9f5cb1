"""The batched trainers: M networks of one architecture trained together, as one stack.

Two stacks share one interface (`NetworkStack`): `VmapStack` holds the parameters stacked into
leaf tensors [M, ...] (`torch.func.stack_module_state`) and runs one vmapped `functional_call`;
`ConvNetEnsemble` (ensemble.py) runs M ConvNets as one grouped-convolution network. Either way the
loss is the SUM over networks of each network's mean batch loss, so the gradient of network m's
slice is exactly its own gradient, and one `torch.optim.SGD` over the stacked tensors (an
elementwise update, weight decay and momentum included) is exactly M independent SGD optimisers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Protocol as Interface

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from dmcondense.augment import DSA, NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.cutmix import draw_cutmix, mixed_targets, paste
from dmcondense.evaluation.ensemble import ConvNetEnsemble
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


class NetworkStack(Interface):
    """M networks trained as one: leaf parameters [M, ...], per-network losses, logits."""

    params: dict[str, Tensor]
    size: int

    def losses(self, x: Tensor, y: Tensor, temperature: float = 1.0) -> Tensor:
        """Per-network mean losses [M] for per-network batches x [M, B, ...] and targets y:
        labels [M, B] or soft targets [M, B, K] (CutMix, a teacher's), on logits / temperature."""

    def logits(self, x: Tensor) -> Tensor:
        """Eval-mode logits [M, B, K] of every network on the shared batch x [B, ...]."""


class BatchingUnsupported(RuntimeError):
    """vmap has no batching rule for an operator of the architecture."""


class VmapStack:
    """M networks of one architecture as stacked leaf tensors, run through one vmapped call."""

    def __init__(self, networks: list[nn.Module], device: torch.device) -> None:
        params, buffers = stack_module_state([net.to(device) for net in networks])
        self.params = params  # leaf tensors [M, ...], requires_grad
        self.buffers = buffers
        self.size = len(networks)
        # A weightless twin supplies the code of forward(); the tensors come from the stacks.
        self.skeleton = copy.deepcopy(networks[0]).to("meta")

        def loss_one(p: dict, b: dict, x: Tensor, y: Tensor, t: float) -> Tensor:
            return F.cross_entropy(functional_call(self.skeleton, (p, b), (x,)) / t, y)

        def logits_one(p: dict, b: dict, x: Tensor) -> Tensor:
            return functional_call(self.skeleton, (p, b), (x,))

        self._losses = torch.vmap(loss_one, in_dims=(0, 0, 0, 0, None))
        self._logits = torch.vmap(logits_one, in_dims=(0, 0, None))

    def losses(self, x: Tensor, y: Tensor, temperature: float = 1.0) -> Tensor:
        self.skeleton.train()
        return self._losses(self.params, self.buffers, x, y, temperature)

    def logits(self, x: Tensor) -> Tensor:
        self.skeleton.eval()
        return self._logits(self.params, self.buffers, x)

    def check(self, images: Tensor, labels: Tensor, normaliser: Normaliser) -> None:
        """Forward and backward on two images per network; BatchingUnsupported if vmap fails."""
        x = normaliser.to_input(images[:2])
        x = x.unsqueeze(0).expand(self.size, *x.shape).contiguous()
        y = labels[:2].unsqueeze(0).expand(self.size, -1).contiguous()
        try:
            torch.autograd.grad(self.losses(x, y).sum(), list(self.params.values()))
        except Exception as error:  # vmap has no batching rule for some operator
            raise BatchingUnsupported(f"{type(error).__name__}: {error}") from error


def train_stack(
    stack: NetworkStack,
    indices: Sequence[int],
    images: Tensor,
    labels: Tensor,
    *,
    protocol: Protocol,
    seed: int,
    normaliser: Normaliser,
    augmenter: DSA | NoAugment,
    num_classes: int,
    bar=None,
    soft_targets: Tensor | None = None,
) -> None:
    """Train the networks `indices` of `stack` with the protocol, each with its own draws
    (`soft_targets` [N, K]: a teacher's probabilities, labels soft)."""
    device = images.device
    optimizer = make_optimizer(stack.params.values(), protocol)
    one_family = one_family_a_batch(protocol)
    n, m = images.shape[0], len(indices)
    for epoch, (orders, aug_generators, cutmix_generators) in enumerate(
        epochs(optimizer, protocol, seed, indices, n, device)
    ):
        epoch_labels, temperature = epoch_targets(labels, soft_targets, protocol, epoch)
        for start in range(0, n, protocol.batch_size):
            batch = orders[:, start : start + protocol.batch_size]  # [M, B]
            b = batch.shape[1]
            x = normaliser.to_input(images[batch.reshape(-1)])  # [M*B, C, H, W]
            # Each network draws from its own generator (one family for its batch where the
            # protocol says so), exactly as the sequential trainer does; one `apply` then
            # augments all M*B images in one batched pass.
            draws = [augmenter.sample(b, g, one_family) for g in aug_generators]
            params = {key: torch.cat([d[key] for d in draws]) for key in draws[0]}
            x = augmenter.apply(x, params).view(m, b, *x.shape[1:])
            targets = epoch_labels[batch]  # [M, B] (or [M, B, K] soft)
            if cutmix_generators is not None:
                # Each network its own CutMix draw, as in the sequential trainer; the losses
                # then take soft targets [M, B, K].
                height, width = x.shape[-2:]
                draws = [draw_cutmix(b, height, width, protocol.cutmix_p, g)
                         for g in cutmix_generators]  # fmt: skip
                x = torch.stack([paste(x[k], d) for k, d in enumerate(draws)])
                targets = torch.stack([
                    mixed_targets(targets[k], d, num_classes, height, width)
                    for k, d in enumerate(draws)
                ])  # fmt: skip
            loss = stack.losses(x, targets, temperature).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if bar is not None:
            bar.update(1)


@torch.no_grad()
def test_stack(
    stack: NetworkStack,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    normaliser: Normaliser,
    device: torch.device,
    batch_size: int,
) -> Tensor:
    """Top-1 accuracy [M] (float64, CPU) of every network of `stack` on uint8 test images."""
    per_pass = max(1, batch_size // stack.size)
    correct = torch.zeros(stack.size, dtype=torch.long, device=device)
    for start in range(0, test_images.shape[0], per_pass):
        x = normaliser.to_input(test_images[start : start + per_pass].to(device))
        y = test_labels[start : start + per_pass].to(device)
        correct += (stack.logits(x).argmax(dim=2) == y).sum(dim=1)
    return correct.double().cpu() / max(test_images.shape[0], 1)


def train_batched(
    networks: list[nn.Module], stack_kind: str, task: Task, chunk_size: int | None = None
) -> Tensor:
    """Train `networks` (network i draws with index i) as stacks of `stack_kind` ("vmap" or
    "ensemble") of at most `chunk_size` networks; accuracies [M]. Results do not depend on the
    chunking. Raises BatchingUnsupported before any training when vmap cannot batch them."""
    images, labels, normaliser, protocol = task.images, task.labels, task.normaliser, task.protocol
    device, m = images.device, len(networks)
    num_classes = task.num_classes
    if num_classes is None:
        num_classes = int(max(labels.max(), task.test_labels.max())) + 1
    chunk = m if chunk_size is None else max(1, chunk_size)
    bar = epoch_progress(protocol.epochs * -(-m // chunk), task.progress)
    augmenter = make_augmenter(protocol)
    accuracies = []
    try:
        for first in range(0, m, chunk):
            indices = list(range(first, min(first + chunk, m)))
            nets = [networks[i] for i in indices]
            if stack_kind == "ensemble":
                stack: NetworkStack = ConvNetEnsemble(nets, device)
            else:
                stack = VmapStack(nets, device)
                stack.check(images, labels, normaliser)
            train_stack(stack, indices, images, labels, protocol=protocol, seed=task.seed,
                        normaliser=normaliser, augmenter=augmenter,
                        num_classes=num_classes, bar=bar,
                        soft_targets=task.soft_targets)  # fmt: skip
            tested = test_stack(stack, task.test_images, task.test_labels, normaliser=normaliser,
                                device=device, batch_size=protocol.test_batch_size)  # fmt: skip
            accuracies.append(tested)
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(accuracies)
