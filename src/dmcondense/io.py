"""The synthetic.pt schema, pictures, exports and `load_synthetic`; safe loading of files.

synthetic.pt (format 1) is a dict of plain values (tensors, numbers, strings, lists, dicts,
None) saved with torch.save and read with `torch.load(weights_only=True)`: reading one runs no
code from it, and a file that needs anything else is refused in one line (`load_plain`).
    format       int, 1
    images       float32 [classes * ipc, C, H, W], class-major: the stored images (decoded into
                 training images by `factor`, see synthetic.py), in the units `pixels` names
    labels       int64 [classes * ipc], class indices (the hard label of each stored image)
    pixels       str, optional: "normalised" (absent: the default; (x - mean) / std with the
                 data set's mean and std), "unit" ([0, 1] pixels) or "zca" (ZCA-whitened, the
                 transform described by `zca`)
    soft_labels  float32 [classes * ipc, classes], optional: learned soft labels (logits; the
                 training targets are softmax(soft_labels), as DATM's soft cross-entropy)
    zca          dict, with pixels "zca" (dataset.zca=true): the whitening as data/zca.py's
                 state, plain values: eps float, shape [C, H, W], mean float32 [D], eigvecs
                 float32 [D, D], eigvals float32 [D]; unwhitening gives [0, 1] pixels
    lr           float, method=mtt: the learned step size, which eval.protocol=mtt trains the
                 evaluation networks at
    extra keys   tensors or plain values a method learns beside the pixels are kept as they
                 are; readers ignore the keys they do not know
    class_names  list[str]
    method       str, the method that condensed it (dm, dc, ...; absent in older files)
    mean, std    list[float], one per channel (images * std + mean is in [0, 1])
    ipc          int, stored images a class
    factor       int, multi-formation factor (absent in older files: 1); a stored image
                 decodes into factor^2 training images
    step         int, the condensation steps done when it was written
    init_indices int64 [classes * ipc * factor^2] or None: the training-split images
                 `init=real` started from (the random-real baseline of a factor-1 run)
    config       dict, the resolved run config (a plain container: OmegaConf.to_container)

`load_synthetic(path)` returns it as a TensorDataset of (image, label) plus the other fields;
`export.export_imagefolder` writes it out as PNG files, one folder per class.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchvision.utils import make_grid, save_image

from dmcondense.atomic import atomic_write  # also re-exported: dmcondense.io.atomic_write
from dmcondense.errors import ConfigError
from dmcondense.synthetic import SyntheticImages

FORMAT = 1
PLAIN = "tensors, numbers, strings, lists, dicts and None"


class RefusedFile(ConfigError):
    """A file that needs more than plain values to load: refused before anything of it runs."""


def numpy_scalars() -> list:
    """What a pickled NumPy scalar needs (its dtype and the scalar constructor): rebuilding one
    runs no code from the file. The DC repository's res_*.pt holds its accuracies as such."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # NumPy 2 moved np.core to np._core
    kinds = (np.float64, np.float32, np.int64, np.int32, np.bool_)
    return [core.multiarray.scalar, np.dtype, *(type(np.dtype(kind)) for kind in kinds)]


def load_plain(path: str | Path, what: str, numpy: bool = False):
    """`torch.load(path, weights_only=True)`: plain values only (`PLAIN`, and NumPy scalars
    with `numpy`). A file whose pickle names anything else (a class, a function) is refused in
    one line naming what it needs; nothing from it runs. `what` names the file for the line."""
    allowed = numpy_scalars() if numpy else []
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:  # a missing or unreadable file: the caller's message
        raise
    except Exception as error:  # noqa: BLE001  weights_only ran nothing: say what it met
        try:  # reads the pickle's opcodes only: runs nothing
            needs = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001  not a torch.save file at all
            needs = []
        if needs:
            raise RefusedFile(
                f"{path} is refused: a {what} holds only {PLAIN}, but this file needs "
                f"{', '.join(needs)} to load, and unpickling that could run code from the file; "
                f"nothing of it was run"
            ) from None
        first = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]}"
        raise RefusedFile(f"{path} is not a readable {what} ({first})") from None


def save_synthetic(path: str | Path, record: dict) -> Path:
    """Write `record` as synthetic.pt (format 1); its values must be plain (`PLAIN`), so that
    `read_synthetic` loads it without unpickling anything else."""
    record = {"format": FORMAT, **record}
    check_plain(record)
    return atomic_write(path, lambda tmp: torch.save(record, tmp))


def check_plain(value, where: str = "synthetic.pt") -> None:
    """TypeError naming the first value that is not plain (a DictConfig, a NumPy scalar, ...):
    the writer refuses to write what the reader would refuse to read."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}, not plain")
            check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    elif not (value is None or type(value) in (bool, int, float, str)
              or isinstance(value, torch.Tensor)):  # fmt: skip
        raise TypeError(f"{where} is a {type(value).__name__}, not a plain value ({PLAIN})")


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
    record = load_plain(path, "dmcondense synthetic.pt")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a dmcondense synthetic.pt (format {FORMAT})")
    return record


def decoded_images(record: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images and labels of a synthetic.pt record: the stored images decoded the
    way the run decoded them (`SyntheticImages`)."""
    decoder = SyntheticImages.from_record(record)
    return decoder.decode(record["images"]), decoder.decode_labels(record["labels"])


def load_synthetic(path: str | Path) -> tuple[TensorDataset, dict]:
    """A condensed set as a Dataset of (normalised training image, label), plus its metadata.

    `path` is a synthetic.pt file or a run folder that holds one. The metadata is the record
    without images and labels: class_names, mean, std, ipc, step, init_indices, config.
    """
    record = read_synthetic(path)
    meta = {k: v for k, v in record.items() if k not in ("images", "labels")}
    return TensorDataset(*decoded_images(record)), meta
