"""The DM objective and the condensation module: loss, gradients, seeded networks, determinism."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from dmcondense.augment import DSA, NoAugment
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.normalise import Normaliser
from dmcondense.methods.dm import DistributionMatching, class_means, matching_loss
from dmcondense.models.registry import build_model
from dmcondense.rng import generator

MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]
MNIST = Normaliser(MNIST_MEAN, MNIST_STD)


# --- the loss ----------------------------------------------------------------------------------


def test_matching_loss_of_class_means_equals_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    classes, n_real, n_syn, dim = 3, 4, 2, 5
    real = torch.randn(classes * n_real, dim, generator=g)  # class-major rows
    synthetic = torch.randn(classes * n_syn, dim, generator=g)

    loss = matching_loss(class_means(real, classes), class_means(synthetic, classes))

    expected = 0.0
    for c in range(classes):
        for d in range(dim):
            real_mean = sum(float(real[c * n_real + i, d]) for i in range(n_real)) / n_real
            syn_mean = sum(float(synthetic[c * n_syn + i, d]) for i in range(n_syn)) / n_syn
            expected += (real_mean - syn_mean) ** 2
    assert loss.dim() == 0
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_class_means_are_per_class_not_global() -> None:
    features = torch.tensor([[1.0], [3.0], [10.0], [20.0]])  # class 0: 1, 3; class 1: 10, 20
    assert torch.equal(class_means(features, 2), torch.tensor([[2.0], [15.0]]))


# --- the module --------------------------------------------------------------------------------


class LinearEmbed(nn.Module):
    """The simplest embedding: one linear map of the flattened image."""

    def __init__(self, in_features: int, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def random_uint8(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def convnet_module(num_classes: int = 4, ipc: int = 2, seed: int = 0) -> DistributionMatching:
    init = torch.randn(num_classes * ipc, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    net = build_model("convnet", 1, num_classes, 28, width=8)
    return DistributionMatching(net, DSA(), init, num_classes, MNIST, seed=seed)


def test_synthetic_is_the_only_parameter_and_the_network_is_no_submodule() -> None:
    module = convnet_module()
    params = list(module.parameters())
    assert len(params) == 1
    assert params[0] is module.synthetic
    assert module.synthetic.shape == (8, 1, 28, 28)
    assert not any(m is module.embed_net for m in module.modules())
    assert not any(k.startswith(("_net", "embed")) for k in module.state_dict())
    assert torch.equal(module.labels, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))


def test_gradient_reaches_synthetic_only_and_only_for_classes_in_the_batch() -> None:
    module = convnet_module(num_classes=4, ipc=2)
    classes = torch.tensor([0, 2])
    real = random_uint8((2, 3, 1, 28, 28), seed=2)

    module.step_loss(5, classes, real).backward()

    grad = module.synthetic.grad
    assert grad is not None
    per_class = grad.view(4, 2, -1).abs().sum(dim=(1, 2))
    assert per_class[0] > 0 and per_class[2] > 0
    assert per_class[1] == 0 and per_class[3] == 0
    for p in module.embed_net.parameters():
        assert p.grad is None
        assert not p.requires_grad


def test_draw_network_repeats_for_a_step_and_changes_across_steps() -> None:
    module = convnet_module()

    def weights(step: int) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.draw_network(step).parameters()]

    first, other, again = weights(3), weights(4), weights(3)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    conv_weights = [(a, b) for a, b in zip(first, other, strict=True) if a.dim() > 1]
    assert conv_weights and all(not torch.equal(a, b) for a, b in conv_weights)
    # A module with another seed draws another network at the same step.
    other_seed = convnet_module(seed=1).draw_network(3)
    assert not torch.equal(next(other_seed.parameters()), first[0])


@pytest.mark.parametrize("classes", [[0, 1, 2], [2, 0]])
def test_step_loss_equals_hand_computed_mean_embedding_distance(classes: list[int]) -> None:
    num_classes, ipc, n_real, dim = 3, 2, 3, 5
    mean, std = [0.5], [0.25]
    init = torch.randn(num_classes * ipc, 1, 4, 4, generator=torch.Generator().manual_seed(7))
    module = DistributionMatching(
        LinearEmbed(16, dim), NoAugment(), init, num_classes, Normaliser(mean, std), seed=11
    )
    real = random_uint8((len(classes), n_real, 1, 4, 4), seed=8)
    step = 6

    loss = module.step_loss(step, torch.tensor(classes), real)

    fc = module.draw_network(step).fc  # the same seeded draw step_loss used
    weight, bias = fc.weight.detach(), fc.bias.detach()
    expected = torch.zeros((), dtype=torch.float64)
    for row, c in enumerate(classes):
        real_sum = torch.zeros(dim, dtype=torch.float64)
        for i in range(n_real):
            x = (real[row, i].double() / 255 - mean[0]) / std[0]
            real_sum += weight.double() @ x.flatten() + bias.double()
        syn_sum = torch.zeros(dim, dtype=torch.float64)
        for j in range(ipc):
            s = init[c * ipc + j].double()
            syn_sum += weight.double() @ s.flatten() + bias.double()
        expected += ((real_sum / n_real - syn_sum / ipc) ** 2).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


# --- determinism of a Lightning run ------------------------------------------------------------


def fit_synthetic(seed: int, init_seed: int = 0, steps: int = 3) -> torch.Tensor:
    """Condense mnist_sample for `steps` steps as train.run() does, return the synthetic tensor."""
    num_classes, ipc = 10, 1
    dm = ClassBatchDataModule("mnist_sample", "unused", num_classes, 4, steps, seed)
    dm.setup("fit")
    picks = dm.index.sample(ipc, generator(init_seed, "init")).flatten()
    init = (dm.real_images(picks).float() / 255 - MNIST_MEAN[0]) / MNIST_STD[0]
    net = build_model("convnet", 1, num_classes, 28, width=8)
    module = DistributionMatching(net, DSA(), init, num_classes, MNIST, seed=seed)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == steps
    assert not torch.equal(module.synthetic.detach(), init)  # it did move
    return module.synthetic.detach().clone()


def test_lightning_fit_is_bit_identical_for_a_seed_and_differs_for_another() -> None:
    # Different global RNG states: the run must not depend on them (explicit generators only).
    torch.manual_seed(123)
    first = fit_synthetic(seed=0)
    torch.manual_seed(456)
    second = fit_synthetic(seed=0)
    assert torch.equal(first, second)
    # Same starting images, another seed for the steps: real batches, networks, augmentations.
    other = fit_synthetic(seed=1)
    assert not torch.equal(first, other)
