"""Streaming data: the same real batches as the in-memory path, decoding only sampled files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.fixtures import write_imagefolder, write_tinyimagenet
from helpers.inprocess import tiny, train
from omegaconf import OmegaConf

from dmcondense.data import streaming
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.sources import load_tinyimagenet
from dmcondense.data.statistics import channel_statistics, sample_indices, statistics_sample
from dmcondense.data.streaming import StreamingClassDataModule, list_training_files
from dmcondense.errors import ConfigError
from dmcondense.io import load_synthetic
from dmcondense.jobs import build

SIZE, CLASSES, PER_CLASS = 16, 3, 6


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("folder")
    return root, write_imagefolder(root, classes=CLASSES, per_class=PER_CLASS, size=SIZE)


def _modules(root: Path, num_workers: int, iterations: int = 4):
    common = dict(
        source="imagefolder",
        data_dir=str(root),
        num_classes=CLASSES,
        batch_real=4,
        iterations=iterations,
        seed=5,
        source_kwargs={"image_size": SIZE},
    )
    in_memory = ClassBatchDataModule(**common)
    streamed = StreamingClassDataModule(
        **common, channels=3, image_size=SIZE, num_workers=num_workers
    )
    in_memory.setup()
    streamed.setup()
    return in_memory, streamed


def _batches(dm) -> list[dict]:
    return [dm.on_after_batch_transfer(b, 0) for b in dm.train_dataloader()]


def test_streaming_batches_equal_the_in_memory_batches(folder) -> None:
    root, expected = folder
    in_memory, streamed = _modules(root, num_workers=2)  # two worker processes, steps in order
    a, b = _batches(in_memory), _batches(streamed)
    assert [x["step"] for x in b] == [0, 1, 2, 3] == [x["step"] for x in a]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["classes"], y["classes"])
        assert torch.equal(x["indices"], y["indices"])
        assert y["images"].dtype == torch.uint8
        assert y["images"].shape == (1, CLASSES, 4, 3, SIZE, SIZE)  # one round
        assert torch.equal(x["images"], y["images"])
        # ...and they are the pixels written to disk, of the right class.
        assert torch.equal(y["images"], expected["train"]["images"][y["indices"]])
        labels = expected["train"]["labels"][y["indices"]]
        assert torch.equal(labels, torch.arange(CLASSES).view(1, -1, 1).expand(1, -1, 4))
    assert not torch.equal(b[0]["indices"], b[1]["indices"])  # steps draw differently


def test_only_sampled_files_are_decoded(folder, monkeypatch) -> None:
    root, _ = folder
    opened: list[Path] = []
    real_decode = streaming.decode_imagefolder

    def counting(path, size):
        opened.append(path)
        return real_decode(path, size)

    monkeypatch.setattr(streaming, "decode_imagefolder", counting)
    _, streamed = _modules(root, num_workers=0, iterations=1)
    assert opened == []  # listing the folder decodes nothing
    init = streamed.real_images(streamed.index.sample(2, torch.Generator().manual_seed(0)))
    assert init.shape == (CLASSES, 2, 3, SIZE, SIZE) and len(opened) == CLASSES * 2
    (batch,) = _batches(streamed)
    assert len(opened) == CLASSES * 2 + batch["indices"].numel() < CLASSES * PER_CLASS + 6


def test_statistics_use_the_same_fixed_sample_on_both_paths(folder) -> None:
    root, expected = folder
    in_memory, streamed = _modules(root, num_workers=0)
    stats = channel_statistics(statistics_sample(in_memory.train_set))
    assert stats == channel_statistics(statistics_sample(streamed.train_set))
    pixels = expected["train"]["images"].double().div(255).transpose(0, 1).flatten(1)
    torch.testing.assert_close(torch.tensor(stats[0]), pixels.mean(1).float())
    torch.testing.assert_close(torch.tensor(stats[1]), pixels.std(1).float())
    drawn = sample_indices(5000, 2000)
    assert torch.equal(drawn, sample_indices(5000, 2000)) and drawn.unique().numel() == 2000
    assert torch.equal(sample_indices(7, 2000), torch.arange(7))


def test_tinyimagenet_tree_streams_the_pixels_the_loader_decodes(tmp_path: Path) -> None:
    write_tinyimagenet(tmp_path, num_classes=3, per_class=2)
    loaded = load_tinyimagenet(tmp_path, "train")
    files = list_training_files("tinyimagenet", tmp_path, channels=3, image_size=64)
    assert files.class_names == loaded.class_names
    assert torch.equal(files.labels, loaded.labels)
    assert torch.equal(files.decode(torch.arange(len(files))), loaded.images)


def test_undecodable_file_names_itself(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, classes=2, per_class=2, size=8)
    bad = tmp_path / "train" / "apple" / "img_999.png"
    bad.write_bytes(b"not a png")
    files = list_training_files("imagefolder", tmp_path, channels=3, image_size=8)
    index = [files.path(i) for i in range(len(files))].index(bad)
    with pytest.raises(ValueError, match="img_999.png"):
        files.decode(torch.tensor([index]))
    assert not hasattr(files, "images")  # whole-split consumers must check for streaming


def test_streaming_is_refused_for_in_memory_sources() -> None:
    cfg = OmegaConf.create(
        {
            "dataset": {
                "source": "mnist_sample",
                "num_classes": 10,
                "download": False,
                "streaming": True,
            },
            "data_dir": "data",
            "batch_real": 4,
            "iterations": 2,
            "seed": 0,
        }
    )
    with pytest.raises(ConfigError, match="streaming"):
        build.datamodule(cfg)


def test_streamed_run_equals_the_in_memory_run(folder, tmp_path: Path) -> None:
    root, expected = folder
    args = tiny("ipc=2", "dataset=imagefolder", f"path={root}", f"dataset.image_size={SIZE}")
    records = {}
    for streamed in (False, True):
        run_dir = tmp_path / f"streaming_{streamed}"
        result = train(*args, f"dataset.streaming={streamed}", f"hydra.run.dir={run_dir}")
        assert result.returncode == 0, result.stderr[-2000:]
        records[streamed] = load_synthetic(run_dir / "synthetic.pt")
    (memory_set, memory_meta), (stream_set, stream_meta) = records[False], records[True]
    assert stream_set.tensors[0].shape == (CLASSES * 2, 3, SIZE, SIZE)
    assert stream_meta["step"] == 3 and stream_meta["config"]["dataset"]["streaming"] is True
    torch.testing.assert_close(stream_set.tensors[0], memory_set.tensors[0])
    assert torch.equal(stream_meta["init_indices"], memory_meta["init_indices"])
    # mean/std were null: both runs computed the folder's pixel statistics.
    pixels = expected["train"]["images"].double().div(255).transpose(0, 1).flatten(1)
    for meta in (memory_meta, stream_meta):
        torch.testing.assert_close(
            torch.tensor(meta["mean"]), pixels.mean(1).float(), atol=1e-4, rtol=0
        )
        torch.testing.assert_close(
            torch.tensor(meta["std"]), pixels.std(1).float(), atol=1e-4, rtol=0
        )
