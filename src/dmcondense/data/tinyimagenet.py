"""TinyImageNet from its official archive layout, with a decode cache beside the data.

    <root>/tiny-imagenet-200/wnids.txt                  class order (one wnid a line)
    <root>/tiny-imagenet-200/words.txt                  wnid<TAB>name, other names...
    <root>/tiny-imagenet-200/train/<wnid>/images/*.JPEG
    <root>/tiny-imagenet-200/val/images/*.JPEG          labelled by val/val_annotations.txt

The public test split has no labels, so "test" here is the labelled validation set, as in the
DM paper. Decoding 110,000 JPEGs takes a while; the uint8 result is cached as
`cache_<split>.pt` in the archive folder. `list_files` and `decode` serve the streaming path,
which reads the same files in the same order without the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from dmcondense.data import imagefolder
from dmcondense.data.download import downloading
from dmcondense.data.imagefolder import decode_image_files, require_split, try_save_cache
from dmcondense.data.imageset import ImageSet

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
FOLDER = "tiny-imagenet-200"
CACHE_VERSION = 1


def _read_wnids(base: Path) -> list[str]:
    return [line.strip() for line in (base / "wnids.txt").read_text().splitlines() if line.strip()]


def _read_names(base: Path, wnids: list[str]) -> list[str]:
    """The first of the comma-separated names words.txt gives each wnid (the wnid if absent)."""
    names: dict[str, str] = {}
    for line in (base / "words.txt").read_text().splitlines():
        wnid, _, words = line.partition("\t")
        names[wnid.strip()] = words.split(",")[0].strip()
    return [names.get(wnid) or wnid for wnid in wnids]


def _list_split(base: Path, split: str, wnids: list[str]) -> tuple[list[Path], torch.Tensor]:
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for wnid in wnids:
            files = sorted((base / "train" / wnid / "images").glob("*.JPEG"))
            paths.extend(files)
            labels.extend([label_of[wnid]] * len(files))
    else:
        annotations = base / "val" / "val_annotations.txt"
        for line in annotations.read_text().splitlines():
            if not line.strip():
                continue
            filename, wnid = line.split("\t")[:2]
            if wnid not in label_of:
                raise ValueError(f"{annotations}: {filename} has wnid {wnid} not in wnids.txt")
            paths.append(base / "val" / "images" / filename)
            labels.append(label_of[wnid])
    if not paths:
        raise ValueError(f"TinyImageNet {split} split under {base} holds no images")
    return paths, torch.tensor(labels, dtype=torch.int64)


def _fingerprint(base: Path, paths: list[Path], wnids: list[str]) -> str:
    """Changes when the file list or the class order changes (contents are trusted)."""
    text = "\n".join(wnids + [str(p.relative_to(base)) for p in paths])
    return hashlib.sha256(text.encode()).hexdigest()


def _required_files(base: Path, split: str) -> list[Path]:
    data = base / "train" if split == "train" else base / "val" / "val_annotations.txt"
    return [base / "wnids.txt", base / "words.txt", data]


def _missing_files(root: Path, split: str, download: bool) -> list[Path]:
    """The files `split` needs that are absent, after fetching the official archive into `root`
    when `download` and anything is missing."""
    required = _required_files(root / FOLDER, split)
    if download and not all(p.exists() for p in required):
        from torchvision.datasets.utils import download_and_extract_archive

        expected = f"{Path(URL).name} (unpacked: {FOLDER}/wnids.txt, words.txt, train/, val/)"
        with downloading("TinyImageNet", URL, root, expected):
            download_and_extract_archive(URL, str(root), md5=MD5)
    return [p for p in required if not p.exists()]


def list_files(
    root: str | Path, split: str, download: bool = False
) -> tuple[list[Path], torch.Tensor, list[str]]:
    """Paths, labels and class names of `split`, in the order `load_tinyimagenet` uses, without
    decoding (the listing streaming reads from). Fetches the archive first when `download`."""
    require_split(split)
    root = Path(root).expanduser()
    base = root / FOLDER
    missing = _missing_files(root, split, download)
    if missing:
        raise FileNotFoundError(
            f"TinyImageNet {split} data not found: expected {missing[0]} (the official archive "
            f"unpacked in {root}); pass dataset.download=true or set data_dir to the folder "
            f"holding {FOLDER}/"
        )
    wnids = _read_wnids(base)
    paths, labels = _list_split(base, split, wnids)
    return paths, labels, _read_names(base, wnids)


def decode(path: str | Path, image_size: int | None) -> np.ndarray:
    """One file as uint8 [H, W] (grey) or [H, W, 3], resized to `image_size` when given: the
    same PIL decode `load_tinyimagenet` uses, so streamed pixels equal the loaded ones."""
    return imagefolder.decode(path, image_size)


def load_tinyimagenet(root: str | Path, split: str, download: bool = False) -> ImageSet:
    """TinyImageNet as uint8 [N, 3, 64, 64]: "train" (100,000) or "test" (the 10,000 val images)."""
    paths, labels, class_names = list_files(root, split, download)
    base = Path(root).expanduser() / FOLDER
    wnids = _read_wnids(base)
    fingerprint = _fingerprint(base, paths, wnids)
    cache_path = base / f"cache_{split}.pt"
    if cache_path.is_file():
        cached = torch.load(cache_path, weights_only=True)
        if cached.get("version") == CACHE_VERSION and cached.get("fingerprint") == fingerprint:
            return ImageSet(cached["images"], cached["labels"], class_names)
    # strict: a broken file in the official archive means a bad download, not a file to skip.
    images, _ = decode_image_files(paths, strict=True, force_rgb=True)
    payload = {
        "version": CACHE_VERSION,
        "fingerprint": fingerprint,
        "images": images,
        "labels": labels,
    }
    try_save_cache(payload, cache_path)
    return ImageSet(images, labels, class_names)
