"""DANCE: its loss on a hand-made case, the middle encoder at l = 0 and l = 1, the calibration
step's gradient (the pixels only), one global step an iteration, kill-and-resume bit-identical,
and its own pool recipe (another key than NCFM's)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from helpers.inprocess import train

from dmcondense.augment import DSA
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.normalise import Normaliser
from dmcondense.methods.dance import DualViewAlignment, dance_loss
from dmcondense.models.init import reset_parameters
from dmcondense.models.registry import build_model
from dmcondense.rng import generator

MNIST = Normaliser([0.1307], [0.3081])


def test_the_loss_is_the_squared_distance_of_the_class_means_by_hand() -> None:
    real = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 2.0]])  # mean (2, 1, 1)
    synthetic = torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, -1.0], [2.0, -2.0, 3.0]])  # (1, 0, 1)
    assert dance_loss(real, synthetic).item() == pytest.approx(1.0 + 1.0 + 0.0)
    assert dance_loss(real, real[[1, 0]]).item() == 0.0  # the same set in another order


def random_state(net: torch.nn.Module, seed: int) -> dict:
    reset_parameters(net, torch.Generator().manual_seed(seed))
    return {k: v.clone() for k, v in net.state_dict().items()}


def module(ipc: int = 1, **knobs) -> DualViewAlignment:
    net = build_model("convnet", 1, 10, 28, width=4, depth=2)
    pool = [(random_state(net, 2 * i), random_state(net, 2 * i + 1)) for i in range(3)]
    pixels = torch.rand(10 * ipc, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    init = (pixels - 0.1307) / 0.3081
    knobs = {"lr_img": 0.05, "seed": 3, **knobs}
    return DualViewAlignment(net, DSA("color_crop_cutout"), init, 10, MNIST, pool=pool, factor=2,
                             **knobs)  # fmt: skip


def fit(m: DualViewAlignment, steps: int, ckpt: str | None = None) -> L.Trainer:
    dm = ClassBatchDataModule("mnist_sample", "", 10, 8, 12, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(m, datamodule=dm, ckpt_path=ckpt)
    return trainer


@pytest.mark.parametrize(("mix", "stage"), [(0.0, "trained"), (1.0, "initial")])
def test_the_middle_encoder_at_the_ends_of_l_is_the_trained_or_the_initial_network(
    mix, stage, monkeypatch
) -> None:
    m = module()
    monkeypatch.setattr(m, "pool_draw", lambda step: (2, mix))
    net, calibrator = m.pool_networks(0)
    initial, trained = m._pool[2]
    expected = trained if stage == "trained" else initial
    for value, weight in zip(net.state_dict().values(), expected, strict=True):
        assert torch.equal(value, weight)
    for value, weight in zip(calibrator.state_dict().values(), trained, strict=True):
        assert torch.equal(value, weight)  # the expert is always the trained network


def test_the_calibration_steps_gradient_reaches_only_the_pixels() -> None:
    m = module(ipc=2)
    _, calibrator = m.pool_networks(0)
    pool_before = [[t.clone() for t in pair[1]] for pair in m._pool.networks]
    c = 4
    images = m.class_images(c)
    logits = calibrator(m.augment(images, generator(0, "test")))
    F.cross_entropy(logits, torch.full((images.shape[0],), c)).backward()
    assert all(p.grad is None and not p.requires_grad for p in calibrator.parameters())
    assert all(p.grad is None for p in m.embed_net.parameters())
    rows = m.synthetic.grad.flatten(1).abs().sum(1)
    assert (rows[c * 2 : (c + 1) * 2] > 0).all()  # this class's stored images ...
    assert rows.sum() == rows[c * 2 : (c + 1) * 2].sum()  # ... and nothing else
    # After whole iterations (matching and calibration) the pool is what it was.
    fit(m, steps=2)
    for pair, before in zip(m._pool.networks, pool_before, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(pair[1], before, strict=True))
    assert [p for p in m.parameters()] == [m.synthetic]


@pytest.mark.parametrize(("calibration_weight", "steps_per_iteration"), [(1.0, 20), (0.0, 10)])
def test_one_global_step_is_one_iteration_of_sgd_steps(calibration_weight, steps_per_iteration):
    m = module(calibration_weight=calibration_weight)
    updates = []
    real_step = torch.optim.SGD.step

    def counting_step(optimizer, *args, **kwargs):
        updates.append(optimizer.param_groups[0]["momentum"])
        return real_step(optimizer, *args, **kwargs)

    torch.optim.SGD.step = counting_step
    try:
        start = m.synthetic.detach().clone()
        trainer = fit(m, steps=3)
    finally:
        torch.optim.SGD.step = real_step
    assert updates == [0.5] * (3 * steps_per_iteration)  # a step a class (and a calibration)
    assert trainer.global_step == 3
    assert not torch.equal(m.synthetic, start)
    assert m.synthetic.min() >= 0 and m.synthetic.max() <= 1


def test_kill_and_resume_is_bit_identical(tmp_path: Path) -> None:
    whole = module()
    fit(whole, steps=6)
    killed = module()
    trainer = fit(killed, steps=4)
    ckpt = tmp_path / "step4.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 4
    assert "momentum_buffer" in str(saved["optimizer_states"][0]["state"][0])
    assert list(saved["state_dict"]) == ["synthetic", "labels"]  # the pool is data, not saved
    resumed = module()
    trainer = fit(resumed, steps=6, ckpt=str(ckpt))
    assert trainer.global_step == 6
    assert torch.equal(resumed.synthetic, whole.synthetic)
    assert not torch.equal(killed.synthetic, whole.synthetic)  # the last 2 steps moved it


def test_a_run_without_its_pool_names_the_dance_pool_and_its_own_key(tmp_path: Path) -> None:
    ncfm = train("method=ncfm", "ipc=1", f"pool.root={tmp_path / 'pools'}",
                 f"hydra.run.dir={tmp_path / 'ncfm'}")  # fmt: skip
    dance = train("method=dance", "ipc=1", f"pool.root={tmp_path / 'pools'}",
                  f"hydra.run.dir={tmp_path / 'dance'}")  # fmt: skip
    assert ncfm.returncode == dance.returncode == 2
    line = dance.stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith("error: the pretrained pool for mnist_sample")
    assert "python -m dmcondense.pretrain dataset=mnist_sample model=convnet pool=dance" in line[0]
    assert "pool=dance" not in ncfm.stderr
    folder = line[0].split("(")[1].split(")")[0]
    assert folder not in ncfm.stderr  # batches of 64, not 128: another recipe, another folder
