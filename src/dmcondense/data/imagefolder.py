"""Image files on disk -> ImageSet: the `<root>/<split>/<class>/<image>` layout, decoding, cache.

Decoding is the one place with a loop over images (each file must be opened); everything after it
works on whole tensors. `list_files` and `decode` are the public seams: TinyImageNet decodes with
`decode_image_files` and `decode`, streaming lists with `list_files` and decodes one file at a time
with `decode`. Cache files are written with `dmcondense.atomic.atomic_write`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmcondense.atomic import atomic_write
from dmcondense.data.imageset import ImageSet
from dmcondense.errors import DmcondenseWarning

SPLITS = ("train", "test")
# PIL modes that hold one grey channel; everything else is decoded as RGB.
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# PIL raises these for files it cannot identify or decode (SyntaxError: some broken PNG chunks).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
CACHE_VERSION = 1
DECODE_CHUNK = (
    1024  # files in flight at once: bounds the memory held by decoded-but-unstored images
)


def require_split(split: str) -> str:
    """`split` itself, once checked to be one of SPLITS: a typo fails before any file is read."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def image_extensions() -> frozenset[str]:
    """Lower-case file extensions (with dot) that PIL can open."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def _skip(path: Path, reason: str, strict: bool) -> None:
    message = f"{path}: {reason}"
    if strict:
        raise ValueError(message)
    warnings.warn(f"skipping {message}", DmcondenseWarning, stacklevel=3)


def list_files(
    root: str | Path, split: str, strict: bool = False
) -> tuple[list[Path], torch.Tensor, list[str]]:
    """Paths and labels of `<root>/<split>/<class>/**/<image>`, without decoding.

    Classes are the sorted sub-folder names; files are sorted within each class. Files whose
    extension PIL does not know are skipped with a warning (ValueError when `strict`); hidden
    files (".DS_Store" and the like) are ignored silently.
    """
    require_split(split)
    split_dir = Path(root).expanduser() / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"image folder split not found: {split_dir} (expected <root>/{split}/<class>/<image>)"
        )
    class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(
            f"no class folders in {split_dir} (expected <root>/{split}/<class>/<image>)"
        )
    extensions = image_extensions()
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        )
        images = []
        for path in files:
            if path.suffix.lower() in extensions:
                images.append(path)
            else:
                _skip(path, "not an image file", strict)
        if not images:
            warnings.warn(f"class folder {class_dir} holds no images", DmcondenseWarning,
                          stacklevel=2)  # fmt: skip
        paths.extend(images)
        labels.extend([label] * len(images))
    if not paths:
        raise ValueError(f"no image files under {split_dir}")
    return paths, torch.tensor(labels, dtype=torch.int64), [d.name for d in class_dirs]


def decode(path: str | Path, image_size: int | None) -> np.ndarray:
    """One file as uint8 [H, W] (grey) or [H, W, 3] (the rest), resized to a square of
    `image_size` when given: the one decode both the in-memory and the streaming path use, so
    their pixels agree. Raises one of DECODE_ERRORS for a file PIL cannot read."""
    with Image.open(path) as image:
        image.load()
        image = image.convert("L" if image.mode in GREY_MODES else "RGB")
        if image_size is not None and image.size != (image_size, image_size):
            # PIL's bilinear resize widens its filter when shrinking, i.e. it antialiases.
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.array(image)  # a writable copy: torch warns about read-only arrays


def _decode_or_error(path: Path, image_size: int | None) -> np.ndarray | Exception:
    try:
        return decode(path, image_size)
    except DECODE_ERRORS as error:
        return error


def _decoded_in_order(
    paths: Sequence[Path], image_size: int | None
) -> Iterator[np.ndarray | Exception]:
    """Decode on a few threads (PIL releases the GIL while decoding) and yield in path order."""
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(paths), DECODE_CHUNK):
            chunk = paths[start : start + DECODE_CHUNK]
            yield from pool.map(_decode_or_error, chunk, itertools.repeat(image_size))


def decode_image_files(
    paths: Sequence[Path],
    image_size: int | None = None,
    strict: bool = False,
    force_rgb: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode `paths` into uint8 [N, C, H, W] and return it with the indices of the files kept.

    C is 1 when every decoded image is grey (and not `force_rgb`), else 3 with grey images
    replicated over the channels (what PIL's L->RGB conversion does). Undecodable files are skipped
    with a warning, or raise ValueError when `strict`. Images must share one size unless
    `image_size` resizes them all to a square.
    """
    images: torch.Tensor | None = None
    kept: list[int] = []
    all_grey = True
    for index, (path, array) in enumerate(
        zip(paths, _decoded_in_order(paths, image_size), strict=True)
    ):
        if isinstance(array, Exception):
            _skip(path, f"cannot decode image ({type(array).__name__}: {array})", strict)
            continue
        pixels = torch.from_numpy(array)
        grey = pixels.dim() == 2
        pixels = pixels.unsqueeze(0) if grey else pixels.permute(2, 0, 1)
        if images is None:
            # Allocate once at the first image's size: a list + stack would double peak memory.
            images = torch.empty((len(paths), 3, *pixels.shape[1:]), dtype=torch.uint8)
        elif pixels.shape[1:] != images.shape[2:]:
            raise ValueError(
                f"{path} is {tuple(pixels.shape[1:])} but earlier images are "
                f"{tuple(images.shape[2:])}; pass image_size to resize them all"
            )
        all_grey &= grey
        images[len(kept)] = pixels  # a grey [1, H, W] broadcasts over the 3 channels
        kept.append(index)
    if images is None:
        raise ValueError(f"none of the {len(paths)} files could be decoded")
    if len(kept) < len(paths):
        images = images[: len(kept)].clone()  # drop the rows reserved for skipped files
    images = images[:, :1].clone() if all_grey and not force_rgb else images
    return images, torch.tensor(kept, dtype=torch.int64)


def try_save_cache(obj: object, path: Path) -> None:
    """Write a cache file, or warn and carry on when the folder is not writable."""
    try:
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
    except OSError as error:
        warnings.warn(f"could not write decode cache {path}: {error}", DmcondenseWarning,
                      stacklevel=2)  # fmt: skip


def _listing_digest(root: Path, split: str, image_size: int | None, paths: Sequence[Path]) -> str:
    """Changes whenever a file is added, removed, rewritten, or the decode settings change."""
    digest = hashlib.sha256(repr((str(root.resolve()), split, image_size)).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"\n{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_imagefolder(
    root: str | Path,
    split: str,
    download: bool = False,
    image_size: int | None = None,
    strict: bool = False,
    cache_dir: str | Path | None = None,
) -> ImageSet:
    """Decode `<root>/<split>/<class>/<image>` into an ImageSet (`download` is ignored).

    With `cache_dir`, the decoded tensors are kept there keyed by the file listing (names, sizes,
    modification times) and `image_size`, so a second load skips decoding; `root` itself is never
    written to (it may be read-only).
    """
    del download  # a user's folder has nothing to download; the argument keeps one signature
    root = Path(root).expanduser()
    listed, labels, class_names = list_files(root, split, strict=strict)
    cache_path = None
    if cache_dir is not None:
        digest = _listing_digest(root, split, image_size, listed)
        size_tag = image_size if image_size is not None else "native"
        cache_path = Path(cache_dir).expanduser() / f"imagefolder_{split}_{size_tag}_{digest}.pt"
        if cache_path.is_file():
            cached = torch.load(cache_path, weights_only=True)
            if cached.get("version") == CACHE_VERSION and cached["class_names"] == class_names:
                for skipped in cached["skipped"]:
                    _skip(root / skipped, "cannot decode image (cached result)", strict)
                return ImageSet(cached["images"], cached["labels"], cached["class_names"])
    images, kept = decode_image_files(listed, image_size=image_size, strict=strict)
    labels = labels[kept]
    if cache_path is not None:
        kept_set = set(kept.tolist())
        skipped = [str(p.relative_to(root)) for i, p in enumerate(listed) if i not in kept_set]
        payload = {
            "version": CACHE_VERSION,
            "images": images,
            "labels": labels,
            "class_names": class_names,
            "skipped": skipped,
        }
        try_save_cache(payload, cache_path)
    return ImageSet(images, labels, class_names)
