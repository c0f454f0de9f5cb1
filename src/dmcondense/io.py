"""The synthetic.pt schema, pictures, exports and `load_synthetic`.

synthetic.pt (format 1) is a dict saved with torch.save:
    format       int, 1
    images       float32 [classes * ipc, C, H, W], normalised with mean/std, class-major: the
                 stored images (decoded into training images by `factor`, see synthetic.py)
    labels       int64 [classes * ipc]
    soft_labels  float32 [classes * ipc, classes] (method=datm; absent otherwise): the learned
                 soft labels, as logits; every evaluation of the set trains on
                 softmax(soft_labels), and `load_synthetic` hands them out as the labels
    class_names  list[str]
    method       str, the method that condensed it (dm, dc, ...; absent in older files)
    mean, std    list[float], one per channel (images * std + mean is in [0, 1])
    zca          dict or None (absent in older files): the ZCA whitening the images are in
                 (dataset.zca=true; data/zca.py: eps, shape, mean, eigvecs, eigvals), which
                 replaces mean/std: unwhitening gives [0, 1] pixels
    lr           float (method=mtt, absent otherwise): the learned step size, which
                 eval.protocol=mtt trains the evaluation networks at
    ipc          int, stored images a class
    factor       int, multi-formation factor (absent in older files: 1); a stored image
                 decodes into factor^2 training images
    step         int, the condensation steps done when it was written
    init_indices int64 [classes * ipc * factor^2] or None: the training-split images
                 `init=real` started from (the random-real baseline of a factor-1 run)
    config       dict, the resolved run config

`load_synthetic(path)` returns it as a TensorDataset of (image, label) plus the other fields;
`export.export_imagefolder` writes it out as PNG files, one folder per class.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchvision.utils import make_grid, save_image

from dmcondense.atomic import atomic_write  # also re-exported: dmcondense.io.atomic_write
from dmcondense.synthetic import SyntheticImages

FORMAT = 1


def save_synthetic(path: str | Path, record: dict) -> Path:
    record = {"format": FORMAT, **record}
    return atomic_write(path, lambda tmp: torch.save(record, tmp))


def image_grid(images01: torch.Tensor, ipc: int) -> torch.Tensor:
    """One row per class (class-major images in [0, 1])."""
    return make_grid(images01.detach().float().cpu(), nrow=ipc, padding=1, pad_value=1.0)


def save_grid(path: str | Path, images01: torch.Tensor, ipc: int) -> Path:
    grid = image_grid(images01, ipc)
    return atomic_write(path, lambda tmp: save_image(grid, tmp, format="png"))


def read_synthetic(path: str | Path) -> dict:
    """The record of a synthetic.pt (see the module docstring), checked to be one.

    `path` is a synthetic.pt file or a run folder that holds one.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "synthetic.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no synthetic set at {path}; pass a synthetic.pt or the run folder that holds it"
        )
    record = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dmcondense synthetic.pt (format {FORMAT})")
    return record


def decoded_images(record: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and labels of a synthetic.pt record: the stored images decoded the
    way the run decoded them (`SyntheticImages`). The labels are the learned soft labels (float
    logits [N, K]) where the set has them, else the class ids."""
    decoder = SyntheticImages.from_record(record)
    labels = record.get("soft_labels")
    labels = record["labels"] if labels is None else labels.float()
    return decoder.decode(record["images"]), decoder.decode_labels(labels)


def load_synthetic(path: str | Path) -> tuple[TensorDataset, dict]:
    """A condensed set as a Dataset of (normalised training image, label), plus its metadata.

    `path` is a synthetic.pt file or a run folder that holds one. The metadata is the record
    without images and labels: class_names, mean, std, ipc, step, init_indices, config. A set
    with learned soft labels gives them as its labels (float logits [K] an image).
    """
    record = read_synthetic(path)
    meta = {k: v for k, v in record.items() if k not in ("images", "labels", "soft_labels")}
    return TensorDataset(*decoded_images(record)), meta
