"""Coreset baselines: random, herding, k-center selection and the ConvNet features they use."""

from __future__ import annotations

import pytest
import torch

from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.baselines import (
    embed_features,
    select_herding,
    select_kcenter,
    select_random,
    select_whole,
)

IPC = 4


@pytest.fixture
def clustered() -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes of unequal size (9, 14, 23) with shuffled labels; 5-d features per class blob."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate((9, 14, 23))])
    labels = labels[torch.randperm(labels.numel(), generator=gen)]
    centres = torch.randn(3, 5, generator=gen) * 5
    features = centres[labels] + torch.randn(labels.numel(), 5, generator=gen)
    return features, labels


def check_selection(picked: torch.Tensor, labels: torch.Tensor, ipc: int) -> None:
    assert picked.dtype == torch.long
    assert ((picked >= 0) & (picked < labels.numel())).all()
    assert picked.unique().numel() == picked.numel()
    classes = labels.unique()
    assert picked.numel() == classes.numel() * ipc
    # Class-major: block c holds ipc indices, all of class c.
    assert torch.equal(labels[picked], classes.repeat_interleave(ipc))


def test_random_selection_is_per_class_seeded_and_varies_with_the_seed(clustered) -> None:
    _, labels = clustered
    first = select_random(labels, IPC, torch.Generator().manual_seed(1))
    check_selection(first, labels, IPC)
    assert torch.equal(first, select_random(labels, IPC, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, select_random(labels, IPC, torch.Generator().manual_seed(2)))


def test_herding_is_deterministic_and_starts_nearest_the_class_mean(clustered) -> None:
    features, labels = clustered
    picked = select_herding(features, labels, IPC)
    check_selection(picked, labels, IPC)
    assert torch.equal(picked, select_herding(features, labels, IPC))
    for c in range(3):
        members = torch.nonzero(labels == c).squeeze(1)
        nearest = members[(features[members] - features[members].mean(0)).norm(dim=1).argmin()]
        assert picked[c * IPC] == nearest


def test_herding_mean_is_closer_to_the_class_mean_than_random_picks(clustered) -> None:
    features, labels = clustered

    def mean_error(picked: torch.Tensor) -> float:
        errors = []
        for c in range(3):
            chosen = features[picked[c * IPC : (c + 1) * IPC]]
            errors.append((chosen.mean(0) - features[labels == c].mean(0)).norm())
        return float(torch.stack(errors).sum())

    herding = mean_error(select_herding(features, labels, IPC))
    gen = torch.Generator().manual_seed(0)
    random = [mean_error(select_random(labels, IPC, gen)) for _ in range(20)]
    assert herding < min(random)


def test_kcenter_is_deterministic_and_picks_the_farthest_point_next(clustered) -> None:
    features, labels = clustered
    picked = select_kcenter(features, labels, IPC, torch.Generator().manual_seed(3))
    check_selection(picked, labels, IPC)
    again = select_kcenter(features, labels, IPC, torch.Generator().manual_seed(3))
    assert torch.equal(picked, again)
    seedless = select_kcenter(features, labels, IPC, None)
    check_selection(seedless, labels, IPC)
    for c in range(3):
        members = torch.nonzero(labels == c).squeeze(1)
        f = features[members]
        first = members[(f - f.mean(0)).norm(dim=1).argmin()]
        assert seedless[c * IPC] == first  # no generator: start nearest the mean
        # Second centre: the member farthest from the first one.
        farthest = members[(f - features[first]).norm(dim=1).argmax()]
        assert seedless[c * IPC + 1] == farthest


def test_selection_refuses_classes_smaller_than_ipc(clustered) -> None:
    features, labels = clustered
    with pytest.raises(ValueError, match="fewer than ipc"):
        select_herding(features, labels, 10)  # class 0 has 9 members


def test_whole_set_is_every_index(clustered) -> None:
    _, labels = clustered
    assert torch.equal(select_whole(labels), torch.arange(labels.numel()))


HALF = Normaliser([0.5], [0.25])


def test_embed_features_batched_seeded_and_trainable() -> None:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 1, 28, 28), generator=gen, dtype=torch.uint8)
    labels = torch.arange(20) % 2
    kwargs = dict(seed=0, image_size=28, channels=1, num_classes=2, model_kwargs={"width": 8})
    features = embed_features(images, HALF, batch_size=512, **kwargs)
    assert features.shape == (20, 8 * 4 * 4)  # depth 3: 32 -> 16 -> 8 -> 4
    small_batches = embed_features(images, HALF, batch_size=7, **kwargs)
    assert torch.allclose(features, small_batches, atol=1e-5)
    other_seed = embed_features(images, HALF, **{**kwargs, "seed": 1})
    assert not torch.allclose(features, other_seed)
    trained = embed_features(
        images, HALF, train_epochs=2, train_labels=labels, batch_size=512, **kwargs
    )
    assert trained.shape == features.shape
    assert not torch.allclose(features, trained)
    with pytest.raises(ValueError, match="train_labels"):
        embed_features(images, HALF, train_epochs=1, **kwargs)
