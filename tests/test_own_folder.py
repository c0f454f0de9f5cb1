"""A folder of one's own with nothing but `path=`: the classes, channels, mean and std are read
from the images, and the run's first lines say what was found."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.fixtures import write_imagefolder
from helpers.inprocess import tiny, train
from omegaconf import OmegaConf


@pytest.mark.parametrize("streaming", [False, True], ids=["in-memory", "streaming"])
def test_grey_folder_runs_with_path_alone(tmp_path: Path, streaming: bool) -> None:
    folder = tmp_path / "grey"
    write_imagefolder(folder, classes=3, per_class=4, size=32, mode="L")
    result = train(
        *tiny("dataset=imagefolder", f"path={folder}", "ipc=2", "batch_real=2",
              f"dataset.streaming={str(streaming).lower()}", "dataset.num_workers=0",
              f"hydra.run.dir={tmp_path / 'run'}")
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("imagefolder: ")
    assert "3 classes (apple, mango, zebra)" in first
    assert "1 channel," in first and "32 x 32" in first and "mean" in first and "std" in first
    dataset = OmegaConf.load(tmp_path / "run" / "config.yaml").dataset
    assert dataset.channels == 1 and len(dataset.mean) == 1


def test_a_stated_channel_count_that_the_images_contradict_is_still_refused(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "grey"
    write_imagefolder(folder, classes=3, per_class=4, size=32, mode="L")
    result = train(*tiny("dataset=imagefolder", f"path={folder}", "ipc=2", "dataset.channels=3",
                         f"hydra.run.dir={tmp_path / 'run'}"))  # fmt: skip
    assert result.returncode == 2
    assert result.error_lines == [
        "error: dataset.channels=3 and 1 mean values, but the images have 1 channels; fix the "
        "dataset config"
    ]
