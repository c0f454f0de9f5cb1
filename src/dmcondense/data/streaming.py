"""Training sets larger than memory: keep the file list, decode only what a step samples.

`ImageFiles` is the training split as paths and labels (nothing decoded up front). The
`StreamingClassDataModule` draws exactly the indices of the in-memory `ClassBatchDataModule`
(`ClassIndex.sample` keyed by (seed, "real", step), this rank's classes), and DataLoader workers
decode those images only, so a step's real batch [k, n, C, H, W] uint8 arrives ready; memory use
does not grow with the number of files. Sources: an image folder, or TinyImageNet's tree.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from dmcondense.data.datamodule import ClassBatchDataModule, StepStream
from dmcondense.data.imagefolder import DECODE_ERRORS
from dmcondense.data.imagefolder import decode as decode_imagefolder
from dmcondense.data.imagefolder import list_files as list_imagefolder
from dmcondense.data.imageset import ImageSet
from dmcondense.data.statistics import sample_indices
from dmcondense.data.tinyimagenet import decode as decode_tinyimagenet
from dmcondense.data.tinyimagenet import list_files as list_tinyimagenet
from dmcondense.errors import ConfigError

STREAMING_SOURCES = ("imagefolder", "tinyimagenet")
# A source's one-file decode: (path, image_size) -> uint8 [H, W] (grey) or [H, W, 3].
FileDecoder = Callable[[Path, int], np.ndarray]


class ImageFiles:
    """A split as image files: labels and class names now, uint8 pixels on request.

    A `TrainingSplit` (see imageset.py), like the in-memory ImageSet: consumers call `decode`
    and `channels` and need not know which of the two they hold. `decode_file` is the source's
    own one-file decode (module-level, so DataLoader workers can pickle it).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: torch.Tensor,
        class_names: list[str],
        channels: int,
        image_size: int,
        decode_file: FileDecoder = decode_imagefolder,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if len(paths) != len(labels):
            raise ValueError("labels must be one int per file")
        # One fixed-width bytes array instead of a list of Path objects: a tenth of the memory,
        # and forked DataLoader workers share it (no per-object reference counts to copy).
        self._paths = np.array([os.fsencode(p) for p in paths])
        self.labels = labels.long()
        self.class_names = list(class_names)
        self.channels, self.image_size = channels, image_size
        self.decode_file = decode_file

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)

    def path(self, index: int) -> Path:
        return Path(os.fsdecode(self._paths[index]))

    def subset(
        self, indices: torch.Tensor, labels: torch.Tensor, class_names: list[str]
    ) -> ImageFiles:
        """The files at `indices` alone (still undecoded), relabelled `labels`."""
        kept = [os.fsdecode(p) for p in self._paths[indices.numpy()]]
        return ImageFiles(
            kept, labels, class_names, self.channels, self.image_size, self.decode_file
        )

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 [*indices.shape, C, H, W]: the files at `indices`, resized to image_size.

        Pixels equal the in-memory loaders' (same PIL decode and resize); grey files are
        replicated over three channels. A file that cannot be decoded raises ValueError: the
        index draw was made over all listed files, so none can be skipped now.
        """
        flat = indices.reshape(-1).tolist()
        size = self.image_size
        out = torch.empty((len(flat), self.channels, size, size), dtype=torch.uint8)
        for row, index in enumerate(flat):  # decoding opens each file: the one per-image loop
            path = self.path(index)
            try:
                array = self.decode_file(path, size)
            except DECODE_ERRORS as error:
                raise ValueError(
                    f"{path}: cannot decode image ({type(error).__name__}: {error}); remove or "
                    f"fix it (dataset.streaming=false skips such files instead)"
                ) from error
            pixels = torch.from_numpy(array)
            if pixels.dim() == 3:  # colour [H, W, 3]
                if self.channels == 1:
                    raise ValueError(f"{path} is a colour image but dataset.channels=1")
                pixels = pixels.permute(2, 0, 1)
            out[row] = pixels  # a grey [H, W] broadcasts over the channels
        return out.view(*indices.shape, self.channels, size, size)


def counted_channels(paths: Sequence[Path], image_size: int, decode_file: FileDecoder) -> int:
    """1 when every file of the statistics sample (the same fixed-seed draw the mean and std
    come from) decodes grey, else 3; undecodable files are left to the decode that follows."""
    for index in sample_indices(len(paths)).tolist():
        try:
            if decode_file(Path(paths[index]), image_size).ndim == 3:
                return 3
        except DECODE_ERRORS:
            continue
    return 1


def list_training_files(
    source: str,
    root: str | Path,
    channels: int | None,
    image_size: int,
    strict: bool = False,
    download: bool = False,
) -> ImageFiles:
    """The training split of `source` as ImageFiles, in the order its in-memory loader uses.
    `channels` None: 1 when every image of the statistics sample is grey, else 3."""
    if source == "imagefolder":
        paths, labels, class_names = list_imagefolder(root, "train", strict=strict)
        if channels is None:
            channels = counted_channels(paths, image_size, decode_imagefolder)
        return ImageFiles(paths, labels, class_names, channels, image_size, decode_imagefolder)
    if source == "tinyimagenet":
        paths, labels, class_names = list_tinyimagenet(root, "train", download=download)
        return ImageFiles(paths, labels, class_names, channels, image_size, decode_tinyimagenet)
    raise ConfigError(
        f"dataset.streaming=true works for {' and '.join(STREAMING_SOURCES)}, not '{source}' "
        f"(it fits in memory); set dataset.streaming=false"
    )


class DecodedSteps(IterableDataset):
    """The batches of `steps` with their images decoded: runs inside the DataLoader workers
    (worker w takes every n-th step, so the steps still arrive in order)."""

    def __init__(self, steps: StepStream, files: ImageFiles) -> None:
        self.steps, self.files = steps, files

    def __iter__(self) -> Iterator[dict]:
        for batch in self.steps:
            batch["images"] = self.files.decode(batch["indices"])  # uint8 [rounds, k, n, C, H, W]
            yield batch


class StreamingClassDataModule(ClassBatchDataModule):
    """`ClassBatchDataModule`'s batches (step, classes, indices, images) from files on disk.

    The test split is still loaded into memory (it is scored many times, and small).
    `pin_memory` None: pinned when training on a GPU.
    """

    def __init__(
        self,
        *,
        channels: int,
        image_size: int,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        strict: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_workers < 0:
            raise ConfigError(f"dataset.num_workers must be >= 0, got {num_workers}")
        self.channels, self.image_size, self.strict = channels, image_size, strict
        self.num_workers, self.pin_memory = num_workers, pin_memory

    def load(self, split: str) -> ImageSet | ImageFiles:
        if split != "train":
            return super().load(split)
        return list_training_files(
            self.source, self.data_dir, self.channels, self.image_size, self.strict, self.download
        )

    def train_dataloader(self) -> DataLoader:
        steps = super().train_dataloader().dataset  # the same draws as the in-memory path
        if self.whole_set_batches:
            raise ConfigError(
                "this method trains on batches drawn from the whole training set each step, "
                "which needs the training images in memory; set dataset.streaming=false"
            )
        pin = self.pin_memory
        if pin is None:
            pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(
            DecodedSteps(steps, self.train_set),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=pin,
        )

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        return batch  # the images came with the batch: nothing to gather
