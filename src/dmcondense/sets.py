"""Condensed sets made by any tool, read without running their code, and fitted to a data set.

`read_set(path, format)` reads one of FORMATS into a `ReadSet`: its experiments as they are
stored (images, and labels as class indices [N] or soft-label probabilities [N, classes]) and
what the file says of its pixels. `fit_set` checks it against the data set (channels, size,
class count, pixel range: one line each, `ConfigError`) and returns the experiments as network
input, normalised with the data set's mean and std, as every consumer of a set expects.

    dmcondense   our synthetic.pt (io.py's schema), or the run folder holding it
    imagefolder  <path>/<class>/<image>: RDED's output and our export=imagefolder; folders named
                 as the data set's classes, or by class index (RDED's 00000, 00001, ...)
    tensors      a pair images*.pt / labels*.pt, as MTT and DATM save them (a folder: its
                 images_best.pt and labels_best.pt; or the images file, its labels file named
                 alike); hard labels [N] or soft labels [N, classes] (logits, as DATM learns them)
    dc_res       the DC repository's res_<method>_<data>_<model>_<ipc>ipc.pt: {'data':
                 [[images, labels], ...], 'accs_all_exps': ...}, one experiment per pair

Pixels (PIXELS): "normalised" (x - mean) / std with the data set's mean and std, "unit" [0, 1]
pixels, "zca" ZCA-whitened. A file that says (synthetic.pt's `pixels`, image files, the DC
repository, whose data sets are always normalised, MTT's de-whitened images_zca_<it>.pt) is
read as it says; otherwise the caller names the units. Every load is `io.load_plain`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from dmcondense.data.imagefolder import decode_image_files, image_extensions
from dmcondense.data.spec import DatasetSpec
from dmcondense.errors import ConfigError
from dmcondense.export import class_folders
from dmcondense.io import decoded_images, load_plain, read_synthetic
from dmcondense.synthetic import SyntheticImages

FORMATS = ("auto", "dmcondense", "imagefolder", "tensors", "dc_res")
PIXELS = ("normalised", "unit", "zca")
# Pixels further than this outside [0, 1] (in [0, 1] units) are not pixels of the data set: a
# 0-255 scale reaches 255. Learned sets leave [0, 1] by far less, though a set learned in the
# whitened space (MTT with ZCA) spans several units past it once unwhitened.
RANGE_MARGIN = 32.0
LabelledSet = tuple[Tensor, Tensor]
DC_RES = re.compile(r"res_.*\.pt$")


@dataclass
class ReadSet:
    """A set as read: experiments of (images float32 [N, C, H, W] in the units `pixels` names,
    labels int64 [N] or probabilities float32 [N, K]); `pixels` None where the file does not
    say. `record`: the synthetic.pt record without its tensors (dmcondense format only)."""

    path: Path
    format: str
    experiments: list[LabelledSet]
    pixels: str | None
    name: str
    record: dict | None = None


def detect_format(path: Path) -> str:
    """The format `path` holds (condensed_format=auto), or one line saying why none fits."""
    if path.is_file():
        if path.name.startswith("images") and path.suffix == ".pt":
            return "tensors"
        if DC_RES.match(path.name):
            return "dc_res"
        if path.suffix == ".pt":
            return "dmcondense"
    elif path.is_dir():
        if (path / "synthetic.pt").is_file():
            return "dmcondense"
        if images_files(path):
            return "tensors"
        if list(path.glob("res_*.pt")):
            raise ConfigError(f"{path} holds res_*.pt files: pass one of them as condensed=")
        if any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
            return "imagefolder"
    else:
        raise FileNotFoundError(f"no condensed set at {path}")
    raise ConfigError(
        f"cannot tell what {path} holds; pass condensed_format="
        f"{'|'.join(f for f in FORMATS if f != 'auto')}"
    )


def read_set(
    path: str | Path, format: str = "auto", class_names: list[str] | None = None
) -> ReadSet:
    """The set at `path` in `format` (FORMATS). `class_names`: the data set's, which image
    folders are mapped to."""
    path = Path(path).expanduser()
    if format not in FORMATS:
        raise ConfigError(f"unknown condensed_format '{format}'; choose {'|'.join(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"no condensed set at {path}")
    format = detect_format(path) if format == "auto" else format
    reader = {"dmcondense": read_dmcondense, "imagefolder": read_imagefolder,
              "tensors": read_tensors, "dc_res": read_dc_res}[format]  # fmt: skip
    return reader(path, class_names) if format == "imagefolder" else reader(path)


def soft_probabilities(logits: Tensor) -> Tensor:
    """Learned soft labels (logits [N, K]) -> the training targets softmax(logits), as DATM's
    soft cross-entropy makes them."""
    return F.softmax(logits.float(), dim=1)


def read_dmcondense(path: Path) -> ReadSet:
    """synthetic.pt (io.py), decoded as the run decoded it; its soft labels, if any, as
    probabilities."""
    record = read_synthetic(path)
    images, labels = decoded_images(record)
    if record.get("soft_labels") is not None:
        decoder = SyntheticImages.from_record(record)
        labels = decoder.decode_labels(soft_probabilities(record["soft_labels"]))
    meta = {k: v for k, v in record.items() if k not in ("images", "labels", "soft_labels")}
    pixels, name = record.get("pixels", "normalised"), record.get("method", "synthetic")
    return ReadSet(path, "dmcondense", [(images.float(), labels)], pixels, name, meta)


def images_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("images*.pt") if p.is_file())


def labels_file_of(images: Path) -> Path:
    """images_best.pt -> labels_best.pt, images_<it>.pt -> labels_<it>.pt; MTT's de-whitened
    images_zca_<it>.pt -> labels_<it>.pt (it saves no labels_zca_ file)."""
    rest = images.name.removeprefix("images")
    rest = rest.removeprefix("_zca") if rest.startswith("_zca_") else rest
    return images.with_name("labels" + rest)


def read_tensors(path: Path) -> ReadSet:
    """A pair of tensor files as MTT and DATM save them (see the module docstring)."""
    if path.is_dir():
        found = images_files(path)
        best = path / "images_best.pt"
        if best.is_file():
            path = best
        elif len(found) == 1:
            path = found[0]
        else:
            listed = ", ".join(p.name for p in found) or "none"
            raise ConfigError(
                f"{path} holds no images_best.pt and not exactly one images*.pt ({listed}); "
                f"pass the images file as condensed="
            )
    labels_path = labels_file_of(path)
    if not labels_path.is_file():
        raise ConfigError(f"{path} has no labels file beside it (looked for {labels_path.name})")
    images = load_plain(path, "tensor file of images")
    labels = load_plain(labels_path, "tensor file of labels")
    for what, value, file in (("images", images, path), ("labels", labels, labels_path)):
        if not isinstance(value, Tensor):
            raise ConfigError(f"{file} holds a {type(value).__name__}, not a tensor of {what}")
    if images.dtype == torch.uint8:
        images, pixels = images.float() / 255, "unit"
    else:
        # MTT saves images_zca_<it>.pt through the inverse ZCA: [0, 1] pixels again.
        pixels = "unit" if path.name.startswith("images_zca_") else None
    if labels.dim() == 2:
        labels = soft_probabilities(labels)
    return ReadSet(path, "tensors", [(images.float(), labels)], pixels, "tensors")


def read_dc_res(path: Path) -> ReadSet:
    """The DC repository's res_*.pt: every [images, labels] pair of 'data' an experiment. Its
    data sets are always normalised with their mean and std (their get_dataset)."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; condensed_format=dc_res reads one res_*.pt file")
    saved = load_plain(path, "DC repository res_*.pt", numpy=True)  # accuracies: NumPy floats
    data = saved.get("data") if isinstance(saved, dict) else None
    pairs = data if isinstance(data, list) else []
    if not pairs or not all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs):
        raise ConfigError(
            f"{path} is not a DC res_*.pt: it lacks 'data' as [[images, labels], ...]"
        )
    experiments = [(images.float(), labels) for images, labels in pairs]
    stem = path.stem.removeprefix("res_")
    return ReadSet(path, "dc_res", experiments, "normalised", stem.split("_")[0].lower())


def class_index(folders: list[str], class_names: list[str] | None) -> list[int]:
    """The data set's class of each folder: by name (as is, or as export=imagefolder made it
    safe), else by index where every name is a number (RDED's 00000, 00001, ...)."""
    if class_names is not None:
        by_name = {n: c for c, n in enumerate(class_names)}
        by_name.update({n: c for c, n in enumerate(class_folders(class_names))})
        if all(f in by_name for f in folders):
            return [by_name[f] for f in folders]
    if all(f.isdigit() for f in folders):
        return [int(f) for f in folders]
    unknown = [f for f in folders if class_names is None or f not in class_names]
    raise ConfigError(
        f"class folders {', '.join(unknown[:5])} are neither the data set's class names nor "
        f"class indices"
    )


def read_imagefolder(path: Path, class_names: list[str] | None = None) -> ReadSet:
    """<path>/<class>/<image>: every image file of each class folder, in name order."""
    if not path.is_dir():
        raise ConfigError(
            f"{path} is not a folder; condensed_format=imagefolder reads <class>/<image>"
        )
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    extensions = image_extensions()
    files, labels = [], []
    for folder, label in zip(folders, class_index([f.name for f in folders], class_names),
                             strict=True):  # fmt: skip
        found = sorted(p for p in folder.iterdir()
                       if p.is_file() and p.suffix.lower() in extensions)  # fmt: skip
        files += found
        labels += [label] * len(found)
    if not files:
        raise ConfigError(f"no image files in {path}/<class>/")
    try:
        pixels, _ = decode_image_files(files, strict=True)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None
    images = pixels.float() / 255
    return ReadSet(path, "imagefolder", [(images, torch.tensor(labels))], "unit", "imagefolder")


def resolve_pixels(read: ReadSet, given: str | None) -> str:
    """The units of the set's pixels: what the file says, else `given`; one line if neither,
    or if they disagree."""
    if given is not None and given not in PIXELS:
        raise ConfigError(f"unknown condensed_pixels '{given}'; choose {'|'.join(PIXELS)}")
    if read.pixels is not None:
        if given is not None and given != read.pixels:
            raise ConfigError(
                f"{read.path} says its pixels are {read.pixels}, but condensed_pixels={given}"
            )
        return read.pixels
    if given is None:
        raise ConfigError(
            f"{read.path} does not say how its pixels are scaled; pass condensed_pixels="
            f"normalised (the data set's mean and std), unit ([0, 1]) or zca (whitened)"
        )
    return given


def fit_set(read: ReadSet, spec: DatasetSpec, pixels: str | None = None) -> list[LabelledSet]:
    """The experiments as network input (normalised with the data set's mean and std, or
    ZCA-whitened as they are under the data set's whitening: dataset.zca=true) and
    labels (int64 [N], or probabilities float32 [N, K]), checked against the data set: one line
    for a wrong shape, channel count, image size, class count or pixel range."""
    units = resolve_pixels(read, pixels)
    if units == "zca" and spec.zca is None:
        raise ConfigError(
            f"{read.path}: zca pixels need the data set's ZCA whitening; score them with "
            f"dataset.zca=true (a synthetic.pt of a dataset.zca=true run carries its own)"
        )
    out = []
    for images, labels in read.experiments:
        check_shapes(read.path, images, labels, spec)
        if units == "zca":  # network input as it is; the range is checked unwhitened
            unit = spec.zca.unwhiten(images)
        else:
            unit = images if units == "unit" else to_unit(images, spec)
        check_range(read.path, unit, units)
        if units == "unit":
            mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (spec.mean, spec.std))
            images = (unit - mean) / std
        labels = labels.float() if labels.dim() == 2 else labels.long()
        out.append((images.contiguous(), labels))
    return out


def to_unit(images: Tensor, spec: DatasetSpec) -> Tensor:
    mean, std = (
        torch.tensor(v, dtype=images.dtype).view(1, -1, 1, 1) for v in (spec.mean, spec.std)
    )
    return images * std + mean


def check_shapes(path: Path, images: Tensor, labels: Tensor, spec: DatasetSpec) -> None:
    """One line for the first thing about (images, labels) that does not fit `spec`."""
    if images.dim() != 4:
        raise ConfigError(f"{path}: images are {list(images.shape)}, not [N, C, H, W]")
    n, channels, height, width = images.shape
    if channels != spec.channels:
        raise ConfigError(
            f"{path}: images have {channels} channel(s), but {spec.name} has {spec.channels}"
        )
    if (height, width) != (spec.image_size, spec.image_size):
        raise ConfigError(
            f"{path}: images are {height}x{width}, but {spec.name} is "
            f"{spec.image_size}x{spec.image_size}"
        )
    if labels.shape[0] != n or labels.dim() not in (1, 2):
        raise ConfigError(f"{path}: {n} images but labels of shape {list(labels.shape)}")
    if labels.dim() == 2:
        if labels.shape[1] != spec.num_classes:
            raise ConfigError(
                f"{path}: soft labels over {labels.shape[1]} classes, but {spec.name} has "
                f"{spec.num_classes}"
            )
        return
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise ConfigError(f"{path}: labels are fractional numbers, not class indices")
    classes = torch.unique(labels.long())
    if int(classes.min()) < 0 or int(classes.max()) >= spec.num_classes:
        raise ConfigError(
            f"{path}: labels run from {int(classes.min())} to {int(classes.max())}, but "
            f"{spec.name} has classes 0 to {spec.num_classes - 1}"
        )
    if classes.numel() != spec.num_classes:
        raise ConfigError(
            f"{path}: images of {classes.numel()} classes, but {spec.name} has {spec.num_classes}"
        )


def check_range(path: Path, unit: Tensor, units: str) -> None:
    """One line for pixels that are not finite or lie far outside [0, 1] (RANGE_MARGIN)."""
    if not torch.isfinite(unit).all():
        raise ConfigError(f"{path}: some pixels are not finite")
    low, high = float(unit.min()), float(unit.max())
    if low < -RANGE_MARGIN or high > 1 + RANGE_MARGIN:
        raise ConfigError(
            f"{path}: read as {units} pixels they span [{low:.3g}, {high:.3g}] in [0, 1] units, "
            f"far outside [0, 1]: a 0-255 scale, or other units; pass the right condensed_pixels"
        )
