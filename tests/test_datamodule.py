"""The per-class DataModule: class-pure, balanced, distinct, seeded draws from the train split."""

from __future__ import annotations

import pytest
import torch

from dmcondense.data.datamodule import ClassBatchDataModule, ClassIndex, StepStream, rank_classes
from dmcondense.data.sources import load_split
from dmcondense.errors import ConfigError
from dmcondense.rng import generator

NUM_CLASSES, BATCH_REAL, STEPS = 10, 6, 3


def make_datamodule(seed: int = 0, batch_real: int = BATCH_REAL) -> ClassBatchDataModule:
    dm = ClassBatchDataModule("mnist_sample", "unused", NUM_CLASSES, batch_real, STEPS, seed)
    dm.setup("fit")
    return dm


def batches(dm: ClassBatchDataModule) -> list[dict]:
    """Every batch of the run, with its images gathered as on the training device."""
    return [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]


@pytest.fixture(scope="module")
def splits() -> dict:
    return {split: load_split("mnist_sample", None, split) for split in ("train", "test")}


def test_batches_are_class_pure_balanced_and_distinct(splits: dict) -> None:
    train_labels = splits["train"].labels
    run = batches(make_datamodule())
    assert [b["step"] for b in run] == list(range(STEPS))
    for batch in run:
        (indices,), classes = batch["indices"], batch["classes"]  # one round
        assert torch.equal(classes, torch.arange(NUM_CLASSES))
        assert batch["indices"].shape == (1, NUM_CLASSES, BATCH_REAL)
        assert torch.equal(train_labels[indices], classes[:, None].expand_as(indices))
        for row in indices:
            assert len(set(row.tolist())) == BATCH_REAL  # drawn without replacement
        assert batch["images"].shape == (1, NUM_CLASSES, BATCH_REAL, 1, 28, 28)
        assert batch["images"].dtype == torch.uint8


def test_images_come_from_the_train_split_only(splits: dict) -> None:
    train, test = splits["train"], splits["test"]
    assert len(train) == 4000 and len(test) == 1000
    assert torch.equal(train.class_counts(), torch.full((NUM_CLASSES,), 400))
    train_pixels = {bytes(x.flatten().numpy()) for x in train.images}
    test_pixels = {bytes(x.flatten().numpy()) for x in test.images}
    assert not train_pixels & test_pixels  # the split keeps no image on both sides
    for batch in batches(make_datamodule()):
        assert torch.equal(batch["images"], train.images[batch["indices"]])
        drawn = {bytes(x.flatten().numpy()) for x in batch["images"].flatten(0, 2)}
        assert drawn <= train_pixels and not drawn & test_pixels


def test_same_seed_and_step_give_the_same_indices_other_steps_and_seeds_do_not() -> None:
    first = [b["indices"] for b in batches(make_datamodule(seed=0))]
    again = [b["indices"] for b in batches(make_datamodule(seed=0))]
    other_seed = [b["indices"] for b in batches(make_datamodule(seed=1))]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[1], first[2])
    assert not torch.equal(first[0], other_seed[0])


@pytest.mark.parametrize("num_classes", [3, 10, 200])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_rank_classes_cover_all_classes_disjointly(num_classes: int, world_size: int) -> None:
    slices = [rank_classes(num_classes, r, world_size) for r in range(world_size)]
    joined = torch.cat(slices).tolist()
    assert sorted(joined) == list(range(num_classes))
    assert len(joined) == len(set(joined))
    sizes = [len(s) for s in slices]
    assert max(sizes) - min(sizes) <= 1  # balanced


def test_each_rank_draws_its_rows_of_the_single_rank_draw() -> None:
    dm = make_datamodule()
    full = {b["step"]: b["indices"] for b in batches(dm)}
    for world_size in (2, 3, 4):
        for rank in range(world_size):
            classes = rank_classes(NUM_CLASSES, rank, world_size)
            stream = StepStream(dm.index, classes, BATCH_REAL, seed=0, start=0, stop=STEPS)
            for item in stream:
                assert torch.equal(item["indices"], full[item["step"]][:, classes])


def test_class_index_with_unequal_classes_never_pads_or_repeats() -> None:
    counts = [2, 7, 3, 5]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
    index = ClassIndex(labels, len(counts))
    seen = [set() for _ in counts]
    for draw in range(40):
        picks = index.sample(min(counts), generator(draw, "test"))
        assert picks.shape == (len(counts), min(counts))
        assert (picks >= 0).all() and (picks < len(labels)).all()
        for c, row in enumerate(picks.tolist()):
            assert len(set(row)) == len(row)
            assert all(int(labels[i]) == c for i in row)
            seen[c] |= set(row)
    # Over many draws, every image of every class is picked at some point.
    assert [len(s) for s in seen] == counts


def test_class_index_returns_the_whole_class_when_asked_for_all_of_it() -> None:
    labels = torch.tensor([1, 0, 1, 1, 0, 2, 1])
    index = ClassIndex(labels, 3)
    picks = index.sample(1, generator(0, "test"))
    assert [int(labels[i]) for i in picks.flatten()] == [0, 1, 2]
    # Class 0 has two images: asking for two gives both, in some order.
    two = ClassIndex(labels[labels != 2], 2).sample(2, generator(1, "test"))
    assert sorted(two[0].tolist()) == [1, 4]
    assert (two >= 0).all()


def test_batch_real_larger_than_a_class_is_capped_at_the_smallest_class() -> None:
    dm = make_datamodule(batch_real=1000)
    assert dm.per_class == 400
    (indices,) = next(iter(dm.train_dataloader()))["indices"]
    assert indices.shape == (NUM_CLASSES, 400)
    assert (indices >= 0).all()
    for row in indices:
        assert len(set(row.tolist())) == 400


def test_a_class_count_that_disagrees_with_the_data_is_a_config_error() -> None:
    dm = ClassBatchDataModule("mnist_sample", "unused", 9, BATCH_REAL, STEPS, seed=0)
    with pytest.raises(ConfigError, match="dataset.num_classes"):
        dm.setup("fit")
