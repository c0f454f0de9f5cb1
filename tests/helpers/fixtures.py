"""Tiny data sets written in the real on-disk formats, for tests of the loaders and beyond.

Every writer takes a folder, writes a few images there exactly as the official distribution lays
them out, and returns what it wrote (uint8 [N, C, H, W] images in the order a loader should
return them, int64 labels, class names) so a test can compare. Pixels come from a seeded
torch.Generator, so fixtures are the same on every run.
"""

from __future__ import annotations

import pickle
import struct
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image


def random_images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    """uint8 [n, channels, size, size] noise."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(
        0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8
    ).numpy()


def smooth_images(n: int, channels: int, size: int, seed: int) -> np.ndarray:
    """uint8 [n, channels, size, size] gradients with random colours: survive JPEG nearly intact."""
    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = torch.rand(n, channels, 1, 1, generator=gen) * 120 + 40
    slope_y = (torch.rand(n, channels, 1, 1, generator=gen) - 0.5) * 160
    slope_x = (torch.rand(n, channels, 1, 1, generator=gen) - 0.5) * 160
    pixels = base + slope_y * ramp.view(1, 1, -1, 1) + slope_x * ramp.view(1, 1, 1, -1)
    return pixels.round().clamp(0, 255).to(torch.uint8).numpy()


def _labels(n: int, classes: int, seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (n,), generator=gen).numpy()


def _expected(images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    return {
        "images": torch.from_numpy(np.ascontiguousarray(images)),
        "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        "class_names": list(class_names),
    }


# --- MNIST / FashionMNIST: raw IDX files, as torchvision reads them from <root>/<Name>/raw ---


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX format: zero, zero, type byte 0x08 (uint8), ndim, then big-endian int32 dims."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def _write_mnist_like(root: Path, folder: str, n_train: int, n_test: int, seed: int) -> dict:
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = random_images(n, 1, 28, seed + len(written))
        labels = _labels(n, 10, seed + 10 + len(written))
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
        written[split] = _expected(images, labels, [])
    return written


def write_mnist(root: str | Path, n_train: int = 30, n_test: int = 12) -> dict:
    """<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte. Returns {split: expected}."""
    return _write_mnist_like(Path(root), "MNIST", n_train, n_test, seed=1)


def write_fashionmnist(root: str | Path, n_train: int = 30, n_test: int = 12) -> dict:
    """<root>/FashionMNIST/raw/... in the MNIST layout. Returns {split: expected}."""
    return _write_mnist_like(Path(root), "FashionMNIST", n_train, n_test, seed=2)


# --- CIFAR-10 / CIFAR-100: Python pickles, [n, 3072] uint8 rows holding R, G, B planes ---

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _pickle(path: Path, obj: dict) -> None:
    # The official files are Python 2 pickles with str keys; torchvision loads them with
    # encoding="latin1", so str keys (not bytes) are what it expects to find.
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=2)


def write_cifar10(root: str | Path, per_batch: int = 4, n_test: int = 6) -> dict:
    """<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}.

    Returns {split: expected}; the train split is the five batches in order. torchvision checks
    the official md5 sums of these files, so tests must relax that check (see test_sources).
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = list(CIFAR10_CLASS_NAMES)
    batches = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]
    train_images, train_labels = [], []
    expected = {}
    for seed, (filename, n) in enumerate(batches):
        images = random_images(n, 3, 32, seed=100 + seed)
        labels = _labels(n, 10, seed=200 + seed)
        _pickle(
            folder / filename,
            {
                "batch_label": f"fixture {filename}",
                "labels": labels.tolist(),
                "data": images.reshape(n, 3072),
                "filenames": [f"{filename}_{i}.png" for i in range(n)],
            },
        )
        if filename == "test_batch":
            expected["test"] = _expected(images, labels, names)
        else:
            train_images.append(images)
            train_labels.append(labels)
    expected["train"] = _expected(np.concatenate(train_images), np.concatenate(train_labels), names)
    _pickle(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072},
    )
    return expected


def write_cifar100(root: str | Path, n_train: int = 12, n_test: int = 6) -> dict:
    """<root>/cifar-100-python/{train, test, meta} with fine and coarse labels."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine_names = [f"fine_{i:02d}" for i in range(100)]
    coarse_names = [f"coarse_{i:02d}" for i in range(20)]
    expected = {}
    for seed, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images = random_images(n, 3, 32, seed=300 + seed)
        fine = _labels(n, 100, seed=400 + seed)
        _pickle(
            folder / split,
            {
                "filenames": [f"{split}_{i}.png" for i in range(n)],
                "batch_label": f"fixture {split}",
                "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(),
                "data": images.reshape(n, 3072),
            },
        )
        expected[split] = _expected(images, fine, fine_names)
    _pickle(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": coarse_names})
    return expected


def write_cifar10_jpeg_archive(
    path: str | Path, train_per_class: int = 52, test_per_class: int = 4
) -> Path:
    """A CIFAR-shaped .tar.gz laid out like the shared JPEG copy of CIFAR-10
    (<split>/<class>/<NNNN>.jpg, 32x32): each class one colour, each image that colour plus
    seeded noise. Written once: an existing file is kept. The default 52 training images a class
    let every cell of benchmarks/paper_table.py (IPC up to 50) start from real images."""
    path = Path(path)
    if path.is_file():
        return path
    gen = torch.Generator().manual_seed(900)
    colours = torch.rand(len(CIFAR10_CLASS_NAMES), 3, 1, 1, generator=gen) * 200 + 28
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            for label, name in enumerate(CIFAR10_CLASS_NAMES):
                noise = torch.randint(-40, 41, (count, 3, 32, 32), generator=gen)
                images = (colours[label] + noise).clamp(0, 255).to(torch.uint8).numpy()
                for i, pixels in enumerate(images):
                    _save_jpeg(Path(tmp) / split / name / f"{i:04d}.jpg", pixels)
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            for split in ("train", "test"):
                tar.add(Path(tmp) / split, arcname=split)
        partial.replace(path)
    return path


# --- SVHN: MATLAB <root>/{train,test}_32x32.mat, X [32, 32, 3, N], y [N, 1], 10 = digit 0 ---


def write_svhn(root: str | Path, n_train: int = 20, n_test: int = 10) -> dict:
    Path(root).mkdir(parents=True, exist_ok=True)
    expected = {}
    for seed, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images = random_images(n, 3, 32, seed=500 + seed)  # [N, C, H, W]
        digits = _labels(n, 10, seed=600 + seed)
        digits[0] = 0  # make sure the 10 -> 0 relabelling is exercised
        mat_labels = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(
            Path(root) / f"{split}_32x32.mat",
            {"X": images.transpose(2, 3, 1, 0), "y": mat_labels},  # X[h, w, c, n]
        )
        expected[split] = _expected(images, digits, [str(d) for d in range(10)])
    return expected


# --- TinyImageNet: the official archive's folder layout, JPEG files ---


def _save_jpeg(path: Path, pixels: np.ndarray) -> None:
    """pixels [C, H, W] uint8 with C = 1 (saved as a grey JPEG) or 3."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="JPEG", quality=95)


def write_tinyimagenet(
    root: str | Path, num_classes: int = 3, per_class: int = 4, val_per_class: int = 2
) -> dict:
    """<root>/tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images, val/...}.

    The first training image is a grey JPEG (the real archive holds some); its expected pixels
    are replicated to RGB. Returns {split: expected} plus "wnids"; JPEG compression means pixels
    match only approximately.
    """
    base = Path(root) / "tiny-imagenet-200"
    base.mkdir(parents=True, exist_ok=True)
    # wnids.txt order is deliberately not sorted: the loader must keep the file's order.
    wnids = [f"n0{9 - i:07d}" for i in range(num_classes)]
    names = [f"thing{i}" for i in range(num_classes)]
    (base / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    words = ["n00000099\tunused entry, not in wnids"]
    words += [
        f"{w}\t{name}, alias of {name}, another" for w, name in zip(wnids, names, strict=True)
    ]
    (base / "words.txt").write_text("\n".join(words) + "\n")

    train = smooth_images(num_classes * per_class, 3, 64, seed=700)
    train[0] = train[0, :1]  # grey: all three channels equal
    train_labels = np.repeat(np.arange(num_classes), per_class)
    for index, (pixels, label) in enumerate(zip(train, train_labels, strict=True)):
        wnid = wnids[label]
        stored = pixels[:1] if index == 0 else pixels
        _save_jpeg(base / "train" / wnid / "images" / f"{wnid}_{index % per_class}.JPEG", stored)
        with open(base / "train" / wnid / f"{wnid}_boxes.txt", "a") as boxes:
            boxes.write(f"{wnid}_{index % per_class}.JPEG\t0\t0\t63\t63\n")

    n_val = num_classes * val_per_class
    val = smooth_images(n_val, 3, 64, seed=701)
    # Interleave classes so labels must come from the annotation file, not the file order.
    val_labels = np.arange(n_val) % num_classes
    lines = []
    for index, (pixels, label) in enumerate(zip(val, val_labels, strict=True)):
        _save_jpeg(base / "val" / "images" / f"val_{index}.JPEG", pixels)
        lines.append(f"val_{index}.JPEG\t{wnids[label]}\t1\t2\t50\t60")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {
        "train": _expected(train, train_labels, names),
        "test": _expected(val, val_labels, names),
        "wnids": wnids,
    }


# --- Image folders: <root>/<split>/<class>/<image>, lossless PNG so pixels compare exactly ---

FOLDER_CLASS_NAMES = ("zebra", "apple", "mango", "kiwi", "banana", "cherry", "lemon", "peach")


def write_imagefolder(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "test"),
    classes: int = 3,
    per_class: int = 4,
    size: int = 32,
    mode: str = "RGB",
) -> dict:
    """PNG files `<root>/<split>/<class>/img_<k>.png`; mode "RGB" or "L".

    Class names are not listed alphabetically in FOLDER_CLASS_NAMES; the expected result has them
    sorted by name, files sorted within each class, as the loader must order them.
    """
    channels = {"RGB": 3, "L": 1}[mode]
    created = list(FOLDER_CLASS_NAMES[:classes])
    class_names = sorted(created)
    expected = {}
    for seed, split in enumerate(splits):
        images = random_images(classes * per_class, channels, size, seed=800 + seed)
        labels = np.repeat(np.arange(classes), per_class)
        for pixels, label, k in zip(
            images, labels, np.tile(np.arange(per_class), classes), strict=True
        ):
            folder = Path(root) / split / class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            array = pixels[0] if channels == 1 else pixels.transpose(1, 2, 0)
            Image.fromarray(np.ascontiguousarray(array)).save(folder / f"img_{k:03d}.png")
        expected[split] = _expected(images, labels, class_names)
    return expected
