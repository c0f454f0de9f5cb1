"""The cells of the DM paper's CIFAR-10 row: their published figures and each cell's job
overrides, full size and --tiny."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CIFAR10_MEAN = "[0.4914,0.4822,0.4465]"
CIFAR10_STD = "[0.2023,0.1994,0.2010]"
WITHIN = 1.0  # the target: each cell within this many points of the paper
BUDGET_MINUTES = 15  # the target: the whole row within one GPU budget of this length


@dataclass(frozen=True)
class Cell:
    """One cell of the row and its published figures (../shared/REFERENCE.md; the standard
    deviations are the DM paper's table)."""

    name: str  # what --only takes
    ipc: int | None  # None: the whole training set
    paper_mean: float
    paper_std: float | None
    paper_random: float | None  # random real images, same IPC

    @property
    def slug(self) -> str:
        return "whole" if self.ipc is None else f"ipc{self.ipc}"


CELLS = {
    cell.name: cell
    for cell in (
        Cell("ipc=1", 1, 26.0, 0.8, 14.4),
        Cell("ipc=10", 10, 48.9, 0.6, 26.0),
        Cell("ipc=50", 50, 63.0, 0.4, 43.4),
        Cell("whole", None, 84.8, None, None),
    )
}
ALIASES = {"baseline=whole": "whole"}

TINY_CONDENSE = [
    "trainer=cpu",
    "iterations=3",
    "batch_real=8",
    "model.width=8",
    "eval.num_models=2",
    "eval.epochs=2",
    "logger=csv",
    "save_every=1000",
]
TINY_WHOLE = ["model.width=8", "eval.num_models=1", "whole_epochs=1"]


def data_overrides(folder: Path) -> list[str]:
    """The image folder read as CIFAR-10: its name, classes, size and the paper's constants."""
    return [
        "dataset=imagefolder",
        f"path={folder}",
        "dataset.name=cifar10",
        "dataset.num_classes=10",
        "dataset.image_size=32",
        f"dataset.mean={CIFAR10_MEAN}",
        f"dataset.std={CIFAR10_STD}",
    ]


def device_overrides(precision: str | None, compile: bool, channels_last: bool) -> list[str]:
    """The overrides of the device options (--precision, --compile, --channels-last)."""
    words = []
    if precision:
        words.append(f"trainer.precision={precision}")
    if compile:
        words.append("compile=true")
    if channels_last:
        words.append("channels_last=true")
    return words


def job_overrides(
    cell: Cell, folder: Path, extra: list[str], tiny: bool, whole_models: int
) -> list[str]:
    """Every override of the cell's job except its run folder; `extra` goes last."""
    data = data_overrides(folder)
    if cell.ipc is None:
        size = TINY_WHOLE if tiny else [f"eval.num_models={whole_models}"]
        return ["baseline=whole", *data, "seed=0", *size, *extra]
    size = TINY_CONDENSE if tiny else []
    return [f"experiment=cifar10_ipc{cell.ipc}", *data, "seed=0", *size, *extra]


def comparable(overrides: list[str]) -> list[str]:
    """Overrides that decide a cell's result: the data folder's place does not."""
    return [word for word in overrides if not word.startswith("path=")]
