"""RDED: the selector on a hand-made observer and images (lowest-loss crops, in a known order),
the stitching (crop k in tile k), the batched crops, a run that takes one step and stops,
kill and resume to the same set, and its protocol: the teacher relabels every training batch."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.inprocess import tiny, train
from torch import nn
from torch.utils.data import DataLoader

from dmcondense.augment import NoAugment
from dmcondense.augment.crops import PatchShuffleCrop, crop_boxes, resized_crops, shuffle_strips
from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.protocol import lr_at, rded_batch_size, rded_protocol
from dmcondense.evaluation.sequential import train_network
from dmcondense.io import read_synthetic
from dmcondense.methods.rded import RealisticDiverseSelection, select_crops, stitch
from dmcondense.models.registry import build_model

UNIT = Normaliser([0.0], [1.0])  # network input = pixels in [0, 1]


# --- selection and stitching -------------------------------------------------------------------


def test_each_image_keeps_its_lowest_loss_crop_and_the_lowest_images_come_first() -> None:
    losses = torch.tensor([[[0.9, 0.2, 0.5], [0.1, 0.8, 0.3], [0.7, 0.6, 0.4], [2.0, 1.5, 3.0]]])
    best, ranked = select_crops(losses, count=3)
    assert best.tolist() == [[1, 0, 2, 1]]  # the argmin over each image's crops
    assert ranked.tolist() == [[1, 0, 2]]  # images by their best loss: 0.1, 0.2, 0.4 (not 1.5)


def test_stitching_puts_crop_k_in_tile_k() -> None:
    ipc, factor = 2, 2
    crops = torch.arange(ipc * factor**2, dtype=torch.float32).view(1, -1, 1, 1, 1)
    crops = crops.expand(1, ipc * factor**2, 1, 3, 3)
    stored = stitch(crops, factor, ipc)[0]  # [ipc, 1, 6, 6]
    for image in range(ipc):
        for tile in range(factor**2):
            row, col = divmod(tile, factor)
            patch = stored[image, 0, 3 * row : 3 * row + 3, 3 * col : 3 * col + 3]
            assert (patch == tile * ipc + image).all()  # tile t of image i: ranked crop t ipc + i


class Brightness(nn.Module):
    """A hand-made observer for 2 classes: logit of class 1 = 10 x mean input, of class 0 = 0;
    so class 1's cross-entropy falls as a crop gets brighter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bright = self.scale * x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(bright), bright], dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def selector(ipc: int, crop_factor: int, **knobs) -> RealisticDiverseSelection:
    net = Brightness()
    pool = [(net.state_dict(), net.state_dict())]
    init = torch.zeros(2 * ipc, 1, 8, 8)
    return RealisticDiverseSelection(net, NoAugment(), init, 2, UNIT, pool=pool,
                                     crop_factor=crop_factor, **knobs)  # fmt: skip


def test_the_selector_keeps_the_brightest_images_of_a_class_brightest_first() -> None:
    # Images of constant brightness: every crop of one scores the same, so the kept images are
    # the brightest, ranked; with factor 2 the best ipc go to tile 0, the next to tile 1, ...
    ipc, factor = 1, 2
    m = selector(ipc, factor, num_crop=3)
    values = torch.tensor([40, 200, 120, 10, 250, 90], dtype=torch.uint8)
    real = values.view(1, 6, 1, 1, 1).expand(1, 6, 1, 8, 8).clone()
    real = torch.cat([real, real])  # classes 0 and 1 get the same images
    chosen, kept = m.select(0, torch.tensor([0, 1]), real)
    tiles = chosen[1, 0, 0].unfold(0, 4, 4).unfold(1, 4, 4).mean(dim=(2, 3))  # [2, 2] means
    assert torch.allclose(tiles.flatten() * 255, torch.tensor([250.0, 200, 120, 90]), atol=1e-3)
    # Class 0's loss rises with brightness: its darkest images, darkest first.
    tiles0 = chosen[0, 0, 0].unfold(0, 4, 4).unfold(1, 4, 4).mean(dim=(2, 3))
    assert torch.allclose(tiles0.flatten() * 255, torch.tensor([10.0, 40, 90, 120]), atol=1e-3)
    assert torch.all(kept[1][1:] >= kept[1][:-1])  # ascending losses


def test_the_selector_keeps_each_images_lowest_loss_crop() -> None:
    # Left half dark, right half bright: class 1 prefers the crop that sees the most of the
    # right half; the kept crop is never darker than any other crop of the image.
    m = selector(1, 1, num_crop=5)
    real = torch.zeros(2, 3, 1, 8, 8, dtype=torch.uint8)
    real[..., 4:] = 255
    chosen, kept = m.select(0, torch.tensor([0, 1]), real)
    boxes = crop_boxes(2 * 3 * 5, 8, 8, m.crop_scale, m.crop_ratio,
                       torch.Generator().manual_seed(0))  # fmt: skip
    assert boxes.shape == (30, 4)
    images = UNIT.to_input(real[1]).repeat_interleave(5, dim=0)
    from dmcondense.rng import generator

    every = crop_boxes(2 * 3 * 5, 8, 8, m.crop_scale, m.crop_ratio,
                       generator(m.seed, "rded-crops", 0)).view(2, 15, 4)  # fmt: skip
    crops = resized_crops(images, every[1], 8).view(3, 5, 1, 8, 8)
    brightest = crops.mean(dim=(2, 3, 4)).max()
    assert torch.isclose(chosen[1, 0].mean(), brightest)


# --- the batched crops and RDED's training augmentation ----------------------------------------


def test_a_whole_image_box_resizes_to_the_image_and_boxes_fit() -> None:
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    whole = torch.tensor([[0, 0, 16, 16]] * 4)
    assert torch.allclose(resized_crops(images, whole, 16), images, atol=1e-5)
    boxes = crop_boxes(500, 16, 16, (0.08, 1.0), (1.0, 1.0), torch.Generator().manual_seed(2))
    top, left, h, w = boxes.unbind(1)
    assert (h == w).all() and (top >= 0).all() and (top + h <= 16).all() and (left + w <= 16).all()
    assert h.min() < 8 and h.max() > 12  # area shares from 0.08 to 1


def test_patch_shuffling_moves_whole_strips() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    columns = shuffle_strips(x, torch.tensor([[0.9, 0.1]]), dim=3)  # swap the two halves
    assert torch.equal(columns[0, 0, :, :2], x[0, 0, :, 2:])
    rows = shuffle_strips(x, torch.tensor([[0.9, 0.1]]), dim=2)
    assert torch.equal(rows[0, 0, :2], x[0, 0, 2:])
    aug = PatchShuffleCrop(factor=1)  # at factor 1 only the flip changes anything
    y = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    params = aug.sample(6, torch.Generator().manual_seed(4))
    out = aug.apply(y, params)
    for i in range(6):
        expected = y[i].flip(-1) if params["flip"][i] < 0.5 else y[i]
        assert torch.allclose(out[i], expected, atol=1e-5)


# --- the protocol --------------------------------------------------------------------------------


def test_the_rded_protocol_follows_their_schedule_and_batch_sizes() -> None:
    p = rded_protocol(epochs=300)
    assert lr_at(0, p) == pytest.approx(1e-3)
    assert lr_at(300, p) == pytest.approx(0.5e-3)  # their quarter-period cosine ends at half
    assert lr_at(150, p) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert [rded_batch_size(10 * ipc, 10) for ipc in (1, 10, 50)] == [10, 50, 100]
    assert rded_batch_size(100 * 10, 100) == 100 and rded_batch_size(100 * 50, 100) == 200
    assert rded_batch_size(3, 10) == 3


class CountingTeacher(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.clone())
        return self.net(x)


def test_the_teacher_relabels_every_training_batch_on_the_fly() -> None:
    g = torch.Generator().manual_seed(5)
    images = torch.rand(20, 1, 28, 28, generator=g)
    labels = torch.arange(10).repeat(2)
    teacher = CountingTeacher(build_model("convnet", 1, 10, 28, width=4, depth=2))
    student = build_model("convnet", 1, 10, 28, width=4, depth=2)
    protocol = rded_protocol(epochs=3, batch_size=6)
    protocol = type(protocol)(**{**protocol.__dict__, "labels": "relabel", "temperature": 20.0})
    train_network(student, images, labels, protocol=protocol, seed=0, index=0,
                  normaliser=UNIT, teacher=teacher)  # fmt: skip
    assert len(teacher.calls) == 3 * math.ceil(20 / 6)  # once a batch, every epoch
    # It labels what the student sees: augmented (flipped, CutMixed) batches, not the stored
    # images, so no labelled batch is a plain slice of the set.
    stored = {tuple(img.flatten()[:5].tolist()) for img in images}
    seen = [tuple(img.flatten()[:5].tolist()) for batch in teacher.calls for img in batch]
    assert sum(s not in stored for s in seen) > 0


# --- the run ------------------------------------------------------------------------------------


def rded_run(tmp_path: Path, name: str, *extra: str):
    return train(*tiny("method=rded", "ipc=2", "batch_real=6", "pool.size=1", "pool.epochs=1",
                       "pool.build=auto", f"pool.root={tmp_path / 'pools'}",
                       f"hydra.run.dir={tmp_path / name}", "logger=csv", *extra))  # fmt: skip


def test_a_run_takes_one_step_writes_its_outputs_and_resumes_to_the_same_set(
    tmp_path: Path,
) -> None:
    first = rded_run(tmp_path, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "first"
    for name in ("synthetic.pt", "synthetic.png", "results.json", "checkpoints/last.ckpt"):
        assert (folder / name).exists(), name
    record = read_synthetic(folder)
    assert record["step"] == 1 and record["images"].shape == (20, 1, 28, 28)
    init = record["images"][0].clone()
    # Resumed after its step (killed while scoring): no second selection, the same set.
    resumed = rded_run(tmp_path, "first", "resume=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = read_synthetic(folder)
    assert torch.equal(again["images"], record["images"]) and again["step"] == 1
    assert init.abs().sum() > 0


def test_a_killed_selection_restarts_to_the_same_set() -> None:
    real_images = torch.randint(0, 256, (2, 5, 1, 8, 8), dtype=torch.uint8,
                                generator=torch.Generator().manual_seed(6))  # fmt: skip

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            batch = {"step": 0, "classes": torch.tensor([0, 1]), "images": real_images[None]}
            return DataLoader([batch], batch_size=None)

    def fit(m: RealisticDiverseSelection) -> None:
        trainer = L.Trainer(accelerator="cpu", max_steps=5, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)  # fmt: skip
        trainer.fit(m, datamodule=Data())
        assert trainer.global_step == 1  # one step, then it stops

    whole = selector(1, 1, num_crop=2)
    fit(whole)
    killed = selector(1, 1, num_crop=2)
    calls = {"n": 0}
    score = killed.crop_losses

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # between the classes
            raise KeyboardInterrupt
        return score(*args, **kwargs)

    killed.crop_losses = dies
    with pytest.raises(KeyboardInterrupt):
        killed.select(0, torch.tensor([0, 1]), real_images)
    restarted = selector(1, 1, num_crop=2)
    fit(restarted)
    assert torch.equal(restarted.synthetic, whole.synthetic)
    assert not torch.equal(whole.synthetic, torch.zeros_like(whole.synthetic))


def test_relabel_without_the_rded_protocol_gets_one_line() -> None:
    run = train(*tiny("eval.labels=relabel"))
    assert run.returncode == 2 and "eval.protocol=rded" in run.error_lines[-1]
    assert len(run.error_lines) == 1
