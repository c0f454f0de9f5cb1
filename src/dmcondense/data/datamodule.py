"""The per-class DataModule: each step, `batch_real` real images of every class.

The store keeps the training split as uint8 (a quarter of float32) and is moved once to the
training device, so on a GPU the real data stays resident there. The dataloader yields only
the step number and the sampled indices; the gather happens after the batch reaches the
device (`on_after_batch_transfer`), so no image crosses the host-device link per step.

Draws are keyed by (seed, "real", step) over all classes, and each rank keeps the rows of its
own classes: the same images are drawn whatever the number of ranks.

A method may also ask for batches drawn from the whole training set, classes mixed
(`whole_set_batches`, a shape; IDM's queue trains on them): drawn on the training device from
generator(seed, "real-whole", step), each batch without replacement, batches independent.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from dmcondense.data.imageset import ImageSet, TrainingSplit, keep_classes
from dmcondense.data.sources import load_split
from dmcondense.errors import ConfigError
from dmcondense.rng import generator


class ClassIndex:
    """Indices of each class's images, padded into one [classes, max_count] table."""

    def __init__(self, labels: torch.Tensor, num_classes: int) -> None:
        self.counts = torch.bincount(labels, minlength=num_classes)
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(self.counts, 0) - self.counts
        width = int(self.counts.max())
        position = torch.arange(width)
        valid = position < self.counts[:, None]
        table = starts[:, None] + position.clamp(max=width - 1)
        self.table = torch.where(valid, order[table.clamp(max=len(order) - 1)], -1)
        self.valid = valid

    def sample(self, per_class: int, g: torch.Generator) -> torch.Tensor:
        """`per_class` distinct indices of every class, [classes, per_class]."""
        keys = torch.rand(self.table.shape, generator=g)
        keys = keys.masked_fill(~self.valid, 2.0)  # never picked while a real one is left
        picks = keys.topk(per_class, dim=1, largest=False).indices
        return self.table.gather(1, picks)


class StepStream(IterableDataset):
    """Yields {step, classes, indices} for steps start..stop-1; worker w takes every n-th step.

    indices: [rounds, classes, per_class], always with the rounds axis (1 unless a method
    matches several real batches a step: gradient matching, one per outer round; IDM's second
    batch). Round 0 is the draw of the one-batch stream, so the rounds only add draws.
    """

    def __init__(
        self,
        index: ClassIndex,
        classes: torch.Tensor,
        per_class: int,
        seed: int,
        start: int,
        stop: int,
        rounds: int = 1,
    ) -> None:
        self.index, self.classes, self.per_class = index, classes, per_class
        self.seed, self.start, self.stop, self.rounds = seed, start, stop, rounds

    def draw(self, step: int) -> torch.Tensor:
        """The indices of `step` for this stream's classes."""
        keys = [("real", step)] + [("real", step, r) for r in range(1, self.rounds)]
        picks = [self.index.sample(self.per_class, generator(self.seed, *k))[self.classes]
                 for k in keys]  # fmt: skip
        return torch.stack(picks)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        first, stride = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start + first, self.stop, stride):
            yield {"step": step, "classes": self.classes, "indices": self.draw(step)}


class RoundImages:
    """A step's real images [rounds, classes, per_class, C, H, W] (uint8), gathered from the
    store one round at a time when a round is read: a method that matches several rounds a step
    (gradient matching) holds one round's images at once, not every round's."""

    def __init__(self, store: torch.Tensor, indices: torch.Tensor) -> None:
        self.store, self.indices = store, indices  # indices [rounds, classes, per_class]

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, round: int) -> torch.Tensor:
        return self.store[self.indices[round]]

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.indices.shape, *self.store.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return self.store.dtype

    @property
    def device(self) -> torch.device:
        return self.store.device


def sample_whole_set(num_images: int, shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    """Indices [*shape] into a set of `num_images`, on `g.device`: each row (the last dim) holds
    distinct indices, uniformly drawn; rows are independent. A row longer than the set holds
    all of it (`num_images` columns)."""
    *rows, size = shape
    keys = torch.rand(math.prod(rows), num_images, generator=g, device=g.device)
    picks = keys.topk(min(size, num_images), dim=1, largest=False).indices
    return picks.view(*rows, picks.shape[1])


def rank_classes(num_classes: int, rank: int, world_size: int) -> torch.Tensor:
    """The contiguous slice of classes that `rank` matches."""
    return torch.tensor_split(torch.arange(num_classes), world_size)[rank]


class ClassBatchDataModule(L.LightningDataModule):
    def __init__(
        self,
        source: str,
        data_dir: str,
        num_classes: int | None,
        batch_real: int,
        iterations: int,
        seed: int,
        download: bool = False,
        source_kwargs: dict | None = None,
        classes: Sequence[int] | None = None,
    ) -> None:
        """`classes`: keep only these classes' training images, relabelled 0.. in this order
        (a class-incremental step); None: all. `num_classes` is the whole data set's count; after
        setup it is the count this module holds."""
        super().__init__()
        self.source, self.data_dir, self.download = source, data_dir, download
        self.source_kwargs = dict(source_kwargs or {})
        self.num_classes, self.batch_real = num_classes, batch_real
        self.iterations, self.seed = iterations, seed
        self.classes = None if classes is None else [int(c) for c in classes]
        self.train_set: TrainingSplit | None = None  # an ImageSet here; subclasses may stream
        # Index in the whole training split of each kept image (None: all kept, the identity).
        self.source_indices: torch.Tensor | None = None
        self._store: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        # The shape of the whole-set batches the training method asks for; () for none.
        self.whole_set_batches: tuple[int, ...] = ()

    def load(self, split: str) -> ImageSet:
        return load_split(self.source, self.data_dir, split, self.download, **self.source_kwargs)

    def prepare_data(self) -> None:
        if self.download:  # once per node, before any rank reads
            self.load("train")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = self.load("train")
        # ConfigError (a ValueError): the entry points print it as one line, not a traceback.
        if self.num_classes is None:  # counted from the data
            self.num_classes = train.num_classes
        if train.num_classes != self.num_classes:
            raise ConfigError(
                f"{self.source} has {train.num_classes} classes but the dataset config says "
                f"{self.num_classes}; fix dataset.num_classes"
            )
        counts = train.class_counts()
        if int(counts.min()) == 0:
            empty = [train.class_names[c] for c in torch.nonzero(counts == 0).flatten().tolist()]
            raise ConfigError(f"classes without training images: {', '.join(empty)}")
        if self.classes is not None:
            # The other classes' images are dropped here: memory follows the kept classes.
            train, self.source_indices = keep_classes(train, self.classes)
            self.num_classes, counts = train.num_classes, train.class_counts()
        self.train_set, self.index = train, ClassIndex(train.labels, train.num_classes)
        self.per_class = min(self.batch_real, int(counts.min()))

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        start = trainer.global_step if trainer else 0  # resumes where the checkpoint left off
        # A method that matches several real batches a step says so (gradient matching), and
        # one that trains on batches of the whole set says their shape (IDM's queue).
        module = trainer.lightning_module if trainer else None
        rounds = getattr(module, "real_batches_per_step", 1)
        self.whole_set_batches = tuple(getattr(module, "whole_set_batches", ()))
        stream = StepStream(
            self.index,
            rank_classes(self.num_classes, rank, world),
            self.per_class,
            self.seed,
            start,
            self.iterations,
            rounds,
        )
        return DataLoader(stream, batch_size=None)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        device = batch["indices"].device
        if self._store is None or self._store.device != device:
            self._store = self.train_set.images.to(device)
            self._labels = self.train_set.labels.to(device)
        # uint8 [rounds, classes, per_class, C, H, W]; several rounds are gathered one at a time
        indices = batch["indices"]
        rounds = indices.shape[0]
        batch["images"] = self._store[indices] if rounds == 1 else RoundImages(self._store, indices)
        if self.whole_set_batches:
            g = generator(self.seed, "real-whole", int(batch["step"]), device=device)
            picks = sample_whole_set(self._store.shape[0], self.whole_set_batches, g)
            batch["whole_images"], batch["whole_labels"] = self._store[picks], self._labels[picks]
        return batch

    def real_images(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 [*indices.shape, C, H, W] on the host (e.g. `init=real`), in memory or streamed."""
        return self.train_set.decode(indices)
