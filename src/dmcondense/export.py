"""Write a synthetic set out for other tools: image files (`export_imagefolder`) or a pair of
tensor files (`export_tensors`).

export=imagefolder: `<out>/<class_name>/<index>.png`.

Pixels are the de-normalised images (images * std + mean, or the inverse ZCA of a whitened set,
clamped to [0, 1]) times 255, rounded,
saved as lossless PNG (grey for one channel, RGB for three), so any image tool or
`torchvision.datasets.ImageFolder` can read the set. Class names become folder names made safe
for every common file system; `index` counts the images of a class from 0, zero-padded so that
sorting by name keeps their order.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dmcondense.atomic import atomic_write
from dmcondense.data.zca import normaliser_of
from dmcondense.io import decoded_images, read_synthetic
from dmcondense.synthetic import SyntheticImages

# Characters Windows, macOS or Linux refuse in a file name, and control characters.
UNSAFE_CHARACTERS = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
)
MAX_NAME_CHARS = 100


def safe_folder_name(name: str) -> str:
    """`name` with unsafe characters replaced by "_", usable as a folder name everywhere."""
    safe = UNSAFE_CHARACTERS.sub("_", str(name)).strip()[:MAX_NAME_CHARS]
    safe = safe.rstrip(". ")  # Windows drops trailing dots and spaces
    if not safe:
        return "_"
    if safe.split(".")[0].upper() in WINDOWS_RESERVED:
        safe = f"{safe}_"
    return safe


def class_folders(class_names: Sequence[str]) -> list[str]:
    """One distinct safe folder name per class; clashes after sanitising get the label added."""
    folders = [safe_folder_name(n) for n in class_names]
    taken: dict[str, int] = {}
    for name in folders:
        taken[name.lower()] = taken.get(name.lower(), 0) + 1  # case-insensitive file systems
    return [
        f"{name}_{label}" if taken[name.lower()] > 1 else name for label, name in enumerate(folders)
    ]


def export_imagefolder(source: str | Path | dict, out_dir: str | Path) -> Path:
    """Write the synthetic set `source` (a synthetic.pt, its run folder, or its record) to
    `out_dir` as `<class_name>/<index>.png`. Returns `out_dir`.

    The files are written into a temporary folder beside `out_dir` that replaces it at the end,
    so an interrupted export never leaves a half-written `out_dir`.
    """
    record = source if isinstance(source, dict) else read_synthetic(source)
    out_dir = Path(out_dir)
    decoder = SyntheticImages.from_record(record)  # the training images, as evaluation sees them
    normaliser = normaliser_of(record["mean"], record["std"], record.get("zca"))
    pixels = normaliser.to_uint8(decoder.decode(record["images"]))
    pixels = pixels.permute(0, 2, 3, 1).numpy()  # [N, H, W, C] for PIL
    labels = decoder.decode_labels(record["labels"]).tolist()
    folders = class_folders(record["class_names"])
    digits = len(str(max(decoder.decoded_per_class - 1, 0)))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        for folder in {folders[label] for label in labels}:
            (staging / folder).mkdir()
        written: dict[int, int] = {}
        for image, label in zip(pixels, labels, strict=True):  # one file per image: I/O bound
            index = written.get(label, 0)
            written[label] = index + 1
            array = np.ascontiguousarray(image[..., 0] if image.shape[-1] == 1 else image)
            Image.fromarray(array).save(staging / folders[label] / f"{index:0{digits}d}.png")
        staging.chmod(0o755)  # mkdtemp makes 0700; the export is for sharing
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old."))
            out_dir.rename(old / out_dir.name)
            shutil.rmtree(old)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir


def export_tensors(source: str | Path | dict, out_dir: str | Path) -> Path:
    """Write the synthetic set `source` (a synthetic.pt, its run folder, or its record) to
    `out_dir` as `images.pt` and `labels.pt`, each one bare tensor saved with torch.save: the
    form MTT and DATM save (images_best.pt, labels_best.pt) and DD-Ranking's evaluator takes
    (`image_tensor`, `hard_labels` or `soft_labels`). Returns `out_dir`.

    images.pt: float32 [N, C, H, W], the decoded training images, class-major, normalised with
    the data set's mean and std (the record's `pixels` units where it names others);
    labels.pt: int64 [N] class indices, or the learned soft labels float32 [N, classes]
    (logits, as DATM saves them) where the set has them.
    """
    record = source if isinstance(source, dict) else read_synthetic(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, labels = decoded_images(record)
    if record.get("soft_labels") is not None:
        labels = SyntheticImages.from_record(record).decode_labels(record["soft_labels"])
    images, labels = images.detach().float().contiguous(), labels.detach().contiguous()
    atomic_write(out_dir / "images.pt", lambda tmp: torch.save(images, tmp))
    atomic_write(out_dir / "labels.pt", lambda tmp: torch.save(labels, tmp))
    return out_dir
