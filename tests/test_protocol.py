"""The evaluation protocol: schedule, optimiser, DSA, real training, batched == sequential."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from dmcondense.augment import DSA
from dmcondense.data.imageset import ImageSet
from dmcondense.data.normalise import Normaliser
from dmcondense.data.sources import load_split
from dmcondense.evaluation.ensemble import ConvNetEnsemble, supports_ensemble
from dmcondense.evaluation.protocol import Protocol, lr_at, make_optimizer
from dmcondense.evaluation.score import score, train_networks
from dmcondense.models.registry import build_model

MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]
MNIST = Normaliser(MNIST_MEAN, MNIST_STD)


@pytest.fixture(scope="module")
def mnist() -> tuple[ImageSet, ImageSet]:
    return load_split("mnist_sample", None, "train"), load_split("mnist_sample", None, "test")


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - MNIST_MEAN[0]) / MNIST_STD[0]


def tiny_set(n: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n uint8 1x28x28 noise images, labels 0..3, and their normalised float version."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)
    return images, torch.arange(n) % 4, normalise(images)


def test_lr_drops_tenfold_exactly_at_half_the_epochs() -> None:
    protocol = Protocol(epochs=10)
    assert [lr_at(e, protocol) for e in range(10)] == pytest.approx([0.01] * 5 + [0.001] * 5)
    default = Protocol()
    assert default.epochs == 1000
    assert lr_at(499, default) == pytest.approx(0.01)
    assert lr_at(500, default) == pytest.approx(0.001)
    assert lr_at(5, Protocol(epochs=11, lr=0.1)) == pytest.approx(0.01)  # 11 // 2 == 5


def test_optimizer_is_sgd_with_momentum_and_weight_decay() -> None:
    optimizer = make_optimizer([torch.zeros(3, requires_grad=True)], Protocol())
    assert isinstance(optimizer, torch.optim.SGD)
    (group,) = optimizer.param_groups
    assert group["lr"] == pytest.approx(0.01)
    assert group["momentum"] == pytest.approx(0.9)
    assert group["weight_decay"] == pytest.approx(5e-4)
    assert Protocol().batch_size == 256


@pytest.mark.parametrize("backend", ["loop", "ensemble", "vmap"])
def test_training_augments_every_batch_with_dsa_by_default(monkeypatch, backend: str) -> None:
    assert Protocol().augment == "dsa"
    calls: list[int] = []
    original = DSA.apply

    def counting_apply(self, x, params, index=None):
        calls.append(x.shape[0])
        return original(self, x, params, index)

    monkeypatch.setattr(DSA, "apply", counting_apply)
    images, labels, normalised = tiny_set(20)
    protocol = Protocol(epochs=2, batch_size=8)  # 3 batches (8, 8, 4) per epoch
    kwargs = dict(num_models=2, protocol=protocol, seed=0, normaliser=MNIST,
                  backend=backend, model_kwargs={"width": 4})  # fmt: skip
    train_networks("convnet", normalised, labels, images, labels, **kwargs)
    if backend != "loop":  # one apply per step over both networks' images
        assert calls == [16, 16, 8] * 2
    else:
        assert calls == [8, 8, 4] * 2 * 2
    calls.clear()
    no_aug = Protocol(epochs=2, batch_size=8, augment="none")
    train_networks("convnet", normalised, labels, images, labels, **{**kwargs, "protocol": no_aug})
    assert calls == []


@pytest.mark.parametrize("backend", ["loop", "vmap"])
@pytest.mark.parametrize(("augment", "one_family"), [("dsa", True), ("dsa_per_image", False)])
def test_training_draws_one_dsa_family_a_batch_unless_per_image(
    monkeypatch, backend: str, augment: str, one_family: bool
) -> None:
    drawn: list[tuple[bool, torch.Tensor]] = []
    original = DSA.sample

    def recording_sample(self, n, generator, one_family=False):
        params = original(self, n, generator, one_family)
        drawn.append((one_family, params["family"]))
        return params

    monkeypatch.setattr(DSA, "sample", recording_sample)
    images, labels, normalised = tiny_set(20)
    protocol = Protocol(epochs=3, batch_size=8, augment=augment)  # 3 batches an epoch
    train_networks("convnet", normalised, labels, images, labels, num_models=2,
                   protocol=protocol, seed=0, normaliser=MNIST, backend=backend,
                   model_kwargs={"width": 4})  # fmt: skip
    assert len(drawn) == 2 * 3 * 3  # a draw a network and batch
    assert all(flag == one_family for flag, _ in drawn)
    one_each = [len(set(families.tolist())) == 1 for _, families in drawn]
    assert all(one_each) if one_family else not all(one_each)


def test_convnet_on_whole_mnist_sample_reaches_90_percent(mnist) -> None:
    train, test = mnist
    start = time.perf_counter()
    accuracy = train_networks(
        "convnet", normalise(train.images), train.labels, test.images, test.labels,
        num_models=1, protocol=Protocol(epochs=2, batch_size=64, augment="none"), seed=0,
        normaliser=MNIST, model_kwargs={"width": 32},
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert accuracy.shape == (1,)
    assert accuracy.item() >= 0.90, f"accuracy {accuracy.item():.3f} after {elapsed:.1f} s"


@pytest.mark.parametrize("backend", ["ensemble", "vmap"])
def test_batched_and_sequential_train_the_same_networks(mnist, backend: str) -> None:
    train, test = mnist
    # 20 real digits a class, with DSA on: the draws must match for the results to match.
    subset = torch.cat([torch.nonzero(train.labels == c).squeeze(1)[:20] for c in range(10)])
    kwargs = dict(num_models=3, protocol=Protocol(epochs=6, batch_size=64), seed=3,
                  normaliser=MNIST, model_kwargs={"width": 16})  # fmt: skip
    images, labels = normalise(train.images[subset]), train.labels[subset]
    sequential = train_networks(
        "convnet", images, labels, test.images, test.labels, backend="loop", **kwargs
    )
    # chunk_size=2: networks 0-1 in one vmapped pass, network 2 in another; draws are keyed by
    # network index, so the chunking must not matter either.
    batched = train_networks(
        "convnet", images, labels, test.images, test.labels, backend=backend, chunk_size=2, **kwargs
    )
    assert sequential.shape == batched.shape == (3,)
    assert sequential.min() > 0.25, sequential  # they did learn: chance is 0.1
    assert torch.allclose(batched, sequential, atol=0.005), (batched, sequential)


@pytest.mark.parametrize("norm", ["instancenorm", "layernorm", "groupnorm", "none"])
def test_ensemble_losses_gradients_and_logits_equal_the_separate_networks(norm: str) -> None:
    gen = torch.Generator().manual_seed(0)
    width = 8 if norm == "groupnorm" else 6  # groupnorm's 4 groups need a width they divide
    nets = [
        build_model("convnet", 3, 5, 16, width=width, depth=2, norm=norm) for _ in range(3)
    ]  # default init differs per net; the ensemble copies whatever weights they hold
    ensemble = ConvNetEnsemble(nets, torch.device("cpu"))
    x, y = torch.randn(3, 4, 3, 16, 16, generator=gen), torch.randint(0, 5, (3, 4), generator=gen)
    expected = torch.stack([F.cross_entropy(net(x[i]), y[i]) for i, net in enumerate(nets)])
    losses = ensemble.losses(x, y)
    assert torch.allclose(losses, expected, atol=1e-5)
    losses.sum().backward()
    expected.sum().backward()
    for i, net in enumerate(nets):
        separate = [p.grad for p in net.parameters()]
        stacked = [p.grad[i] for p in ensemble.params.values()]
        assert len(separate) == len(stacked)
        for a, b in zip(separate, stacked, strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    logits = ensemble.logits(x[0])
    assert torch.allclose(logits, torch.stack([net(x[0]) for net in nets]), atol=1e-5)
    assert not supports_ensemble(build_model("convnet_bn", 3, 5, 16, width=6, depth=2))


def test_same_seed_repeats_and_uint8_training_images_match_float() -> None:
    images, labels, normalised = tiny_set(24)
    kwargs = dict(num_models=2, protocol=Protocol(epochs=3, batch_size=8), normaliser=MNIST,
                  model_kwargs={"width": 4}, backend="loop")  # fmt: skip
    # A larger test set so that accuracies resolve small differences between networks.
    test_images, test_labels, _ = tiny_set(400, seed=1)
    first = train_networks(
        "convnet", normalised, labels, test_images, test_labels, seed=5, **kwargs
    )
    again = train_networks(
        "convnet", normalised, labels, test_images, test_labels, seed=5, **kwargs
    )
    from_uint8 = train_networks(
        "convnet", images, labels, test_images, test_labels, seed=5, **kwargs
    )
    assert torch.equal(first, again)
    assert torch.allclose(first, from_uint8, atol=0.0026)  # at most one test image apart
    assert ((first >= 0) & (first <= 1)).all()


def test_batchnorm_models_go_sequentially_unless_vmap_is_demanded() -> None:
    images, labels, normalised = tiny_set(12)
    kwargs = dict(num_models=2, protocol=Protocol(epochs=1, batch_size=8), seed=0,
                  normaliser=MNIST, model_kwargs={"width": 4})  # fmt: skip
    auto = train_networks("convnet_bn", normalised, labels, images, labels, **kwargs)
    loop = train_networks(
        "convnet_bn", normalised, labels, images, labels, backend="loop", **kwargs
    )
    assert auto.shape == (2,) and torch.equal(auto, loop)  # auto is the loop on the CPU
    with pytest.raises(ValueError, match="BatchNorm"):
        train_networks("convnet_bn", normalised, labels, images, labels, backend="vmap", **kwargs)
    with pytest.raises(ValueError, match="ConvNets with instance, layer or no norm"):
        train_networks("convnet_bn", normalised, labels, images, labels, backend="ensemble",
                       **kwargs)  # fmt: skip
    with pytest.raises(ValueError, match="unknown backend 'batched'"):
        train_networks("convnet", normalised, labels, images, labels, backend="batched", **kwargs)


def test_score_pools_experiments_with_their_own_seeds_per_set_and_architecture() -> None:
    images, labels, normalised = tiny_set(8)
    test_images, test_labels, _ = tiny_set(400, seed=1)
    test = ImageSet(test_images, test_labels, ["a", "b", "c", "d"])
    protocol, knobs = Protocol(epochs=2, batch_size=8), {"convnet": {"width": 4}, "mlp": {}}
    other = normalised.flip(0)
    results = score(
        {"one": [(normalised, labels)], "two": [(normalised, labels), (other, labels)]},
        knobs, protocol, test, 5, num_models=2, normaliser=MNIST,
    )  # fmt: skip
    assert list(results) == ["one", "two"] and all(list(r) == ["convnet", "mlp"] for r in
                                                     results.values())  # fmt: skip
    for name, arch_knobs in knobs.items():
        # Experiment e of a set trains with seed + e: the same networks train_networks makes.
        first = train_networks(name, normalised, labels, test_images, test_labels, num_models=2,
                               protocol=protocol, seed=5, normaliser=MNIST, model_kwargs=arch_knobs,
                               num_classes=4)  # fmt: skip
        second = train_networks(name, other, labels, test_images, test_labels, num_models=2,
                                protocol=protocol, seed=6, normaliser=MNIST,
                                model_kwargs=arch_knobs, num_classes=4)  # fmt: skip
        assert torch.equal(results["one"][name], first)
        assert torch.equal(results["two"][name], torch.cat([first, second]))
