"""Multi-formation (`synthetic.factor`): stored images cut into tiles and upsampled, the init
that packs downsampled real images into the tiles, and every consumer seeing decoded images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.inprocess import tiny, train
from PIL import Image

from dmcondense.data.sources import load_split
from dmcondense.export import export_imagefolder
from dmcondense.io import load_synthetic, read_synthetic
from dmcondense.synthetic import SyntheticImages

# Bilinear x2 upsampling (align_corners=False) of 2 samples: output i reads input
# (i + 0.5) / 2 - 0.5, clamped at the edges.
UPSAMPLE_2_TO_4 = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])


def test_factor_2_decodes_each_tile_in_row_major_order_upsampled() -> None:
    # One stored 1x4x4 image whose 2x2 tiles hold distinct hand-made patterns.
    stored = torch.tensor(
        [
            [0.0, 1.0, 10.0, 10.0],
            [4.0, 5.0, 10.0, 10.0],
            [20.0, 21.0, 30.0, 31.0],
            [20.0, 21.0, 32.0, 33.0],
        ]  # fmt: skip
    ).view(1, 1, 4, 4)
    decoded = SyntheticImages(num_classes=1, ipc=1, factor=2).decode(stored)
    assert decoded.shape == (4, 1, 4, 4)
    tiles = [[[0.0, 1.0], [4.0, 5.0]], [[10.0, 10.0], [10.0, 10.0]],
             [[20.0, 21.0], [20.0, 21.0]], [[30.0, 31.0], [32.0, 33.0]]]  # fmt: skip
    for position, tile in enumerate(tiles):  # top-left, top-right, bottom-left, bottom-right
        expected = UPSAMPLE_2_TO_4 @ torch.tensor(tile) @ UPSAMPLE_2_TO_4.T
        assert torch.allclose(decoded[position, 0], expected), position


def test_decoded_images_keep_their_stored_image_label_and_class_order() -> None:
    seam = SyntheticImages(num_classes=3, ipc=2, factor=2)
    # Each stored image is constant: its index. Its four decoded images are that constant.
    stored = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 8, 8).contiguous()
    decoded = seam.decode(stored)
    labels = seam.decode_labels(torch.arange(3).repeat_interleave(2))
    assert seam.decoded_per_class == 8 and decoded.shape == (24, 3, 8, 8)
    expected = torch.tensor([float(i) for i in range(6) for _ in range(4)])
    assert torch.allclose(decoded[:, 0, 0, 0], expected)
    assert labels.tolist() == [c for c in range(3) for _ in range(8)]
    assert torch.equal(seam.per_class(decoded)[1], decoded[8:16])


def test_factor_3_cuts_nine_tiles() -> None:
    stored = torch.arange(9.0).view(1, 1, 3, 3).repeat_interleave(2, -1).repeat_interleave(2, -2)
    decoded = SyntheticImages(num_classes=1, ipc=1, factor=3).decode(stored)
    assert decoded.shape == (9, 1, 6, 6)
    for position, image in enumerate(decoded):  # each tile was one constant: its position
        assert torch.allclose(image, torch.full_like(image, float(position))), position


def test_init_puts_each_downsampled_real_image_into_its_tile() -> None:
    seam = SyntheticImages(num_classes=2, ipc=1, factor=2)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(8, 3, 4, 4, generator=g)  # 2 classes x 1 stored image x 4 tiles
    stored = seam.encode(real)
    assert stored.shape == (2, 3, 4, 4)
    # Halving with bilinear weights (no antialias) averages each 2x2 block.
    halves = real.view(8, 3, 2, 2, 2, 2).mean(dim=(3, 5))
    for i in range(8):
        image, tile = divmod(i, 4)
        row, col = divmod(tile, 2)
        held = stored[image, :, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2]
        assert torch.allclose(held, halves[i], atol=1e-6), i


def test_records_without_a_factor_decode_as_stored() -> None:
    record = {"class_names": ["a", "b"], "ipc": 3}
    assert SyntheticImages.from_record(record).factor == 1
    assert SyntheticImages.from_record({**record, "factor": 2}).decoded_per_class == 12


# --- a run with factor 2, and each method on it beating random real images ---------------------
IPC1 = [
    "ipc=1",
    "iterations=10",
    "save_every=10",
    "logger=csv",
    "eval.num_models=2",
    "eval.epochs=30",
]
METHODS = {
    "dm": ["synthetic.factor=2"],
    "m3d": ["method=m3d"],
    # IDM's queue training is most of its cost on a CPU: fewer, smaller network updates.
    "idm": [
        "method=idm",
        "method.batch_train=64",
        "method.model_train_steps=2",
        "method.net_generate_interval=10",
    ],  # fmt: skip
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multiformation")
    done = {}
    for name, overrides in METHODS.items():
        export = ["export=imagefolder"] if name == "dm" else []
        result = train(*IPC1, *overrides, *export, f"hydra.run.dir={root / name}")
        assert result.returncode == 0, result.stderr[-3000:]
        done[name] = root / name
    return done


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_each_multiformation_method_beats_random_real_images_by_10_points(runs, method) -> None:
    results = json.loads((runs[method] / "results.json").read_text())
    assert results["method"] == method
    assert (results["ipc"], results["factor"], results["decoded_per_class"]) == (1, 2, 4)
    accuracy = results["results"][method]["convnet"]["mean"]
    random = results["results"]["random"]["convnet"]["mean"]
    assert accuracy >= random + 10, (accuracy, random)


@pytest.mark.slow
def test_a_factor_2_run_stores_the_raw_tensor_and_every_consumer_sees_decoded_images(runs) -> None:
    run = runs["dm"]
    record = read_synthetic(run)
    assert record["factor"] == 2 and record["images"].shape == (10, 1, 28, 28)
    dataset, meta = load_synthetic(run)
    decoded = SyntheticImages(10, 1, 2).decode(record["images"])
    assert torch.equal(dataset.tensors[0], decoded)
    assert dataset.tensors[1].tolist() == [c for c in range(10) for _ in range(4)]
    # the picture: one row a class, four decoded images a row (28 px + 1 px padding each)
    with Image.open(run / "synthetic.png") as png:
        assert png.size == (4 * 29 + 1, 10 * 29 + 1)
    exported = sorted(p.name for p in (run / "export" / "3").iterdir())
    assert exported == ["0.png", "1.png", "2.png", "3.png"]
    again = export_imagefolder(run, run / "export_again")
    with Image.open(again / "3" / "2.png") as png:
        written = np.array(png)
    mean, std = meta["mean"][0], meta["std"][0]
    expected = ((decoded[14, 0] * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    assert np.array_equal(written, expected.numpy())


def test_init_shrinks_each_image_into_its_tile_bilinear_or_nearest() -> None:
    seam = SyntheticImages(num_classes=1, ipc=1, factor=2)
    images = torch.arange(4 * 2 * 16.0).view(4, 2, 4, 4)  # 4 distinct 2-channel images
    bilinear, nearest = seam.encode(images, "bilinear"), seam.encode(images, "nearest")
    assert torch.equal(seam.encode(images), bilinear)  # bilinear unless told
    for i in range(4):
        row, col = divmod(i, 2)
        tile = (slice(None), slice(2 * row, 2 * row + 2), slice(2 * col, 2 * col + 2))
        # bilinear halving averages each 2x2 block; nearest keeps its top-left pixel
        halves = images[i].view(2, 2, 2, 2, 2).mean(dim=(2, 4))
        assert torch.allclose(bilinear[0][tile], halves), i
        assert torch.equal(nearest[0][tile], images[i, :, ::2, ::2]), i
    with pytest.raises(ValueError, match="unknown synthetic.init_resize 'bicubic'"):
        seam.encode(images, "bicubic")


@pytest.mark.parametrize("resize", ["bilinear", "nearest"])
def test_init_packs_the_recorded_real_images_into_the_tiles(tmp_path: Path, resize: str) -> None:
    run = tmp_path / "frozen"
    # lr_img=0: the stored set stays the init.
    result = train(*tiny("synthetic.factor=2", "ipc=1", "iterations=1", "lr_img=0", "logger=csv",
                         f"synthetic.init_resize={resize}", f"hydra.run.dir={run}"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_synthetic(run)
    assert record["init_indices"].shape == (40,)
    split = load_split("mnist_sample", None, "train")
    real = (split.images[record["init_indices"]].float() / 255 - 0.1307) / 0.3081
    labels = split.labels[record["init_indices"]]
    assert labels.tolist() == [c for c in range(10) for _ in range(4)]
    if resize == "bilinear":
        halves = real.view(40, 1, 14, 2, 14, 2).mean(dim=(3, 5))  # bilinear halving: 2x2 means
    else:
        halves = real[:, :, ::2, ::2]  # nearest: every other pixel
    for i in (0, 5, 39):
        image, tile = divmod(i, 4)
        row, col = divmod(tile, 2)
        held = record["images"][image, :, 14 * row : 14 * row + 14, 14 * col : 14 * col + 14]
        assert torch.allclose(held, halves[i], atol=1e-5), i
