"""NCFM: the characteristic-function loss against a hand computation, the interpolated pool
network, one global step an iteration, kill-and-resume with the sampling network, the one-line
errors, and (slow) its accuracy on the MNIST sample."""

from __future__ import annotations

import cmath
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.inprocess import train

from dmcondense.augment import DSA
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError, NonFiniteLossError
from dmcondense.glue.callbacks import FiniteLossGuard, SyntheticWriter
from dmcondense.methods import ncfm as ncfm_module
from dmcondense.methods.ncfm import CharacteristicFunctionMatching, cf_loss
from dmcondense.models.init import reset_parameters
from dmcondense.models.registry import build_model
from dmcondense.rng import generator

MNIST = Normaliser([0.1307], [0.3081])


# --- the loss ----------------------------------------------------------------------------------


def hand_loss(real, synthetic, freqs, alpha, beta, scale):
    """The loss of one class with Python complex numbers, frequency by frequency."""

    def unit(rows):
        return [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in rows]

    def phi(rows, t):
        return sum(
            cmath.exp(1j * sum(a * b for a, b in zip(t, f, strict=True))) for f in rows
        ) / len(rows)

    real, synthetic = unit(real), unit(synthetic)
    terms = []
    for t in freqs:
        r, s = phi(real, t), phi(synthetic, t)
        amplitude = (abs(r) - abs(s)) ** 2
        phase = 2 * (abs(r) * abs(s) - (r * s.conjugate()).real)
        terms.append(math.sqrt(alpha * amplitude + beta * phase))
    return scale * sum(terms) / len(terms)


def test_the_loss_equals_a_hand_computation() -> None:
    real = [[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0]]
    synthetic = [[0.2, -1.0, 1.0], [1.5, 1.0, -0.5], [0.0, 1.0, 1.0]]
    freqs = [[0.5, -1.0, 2.0], [1.5, 0.2, -0.7], [-2.0, 1.0, 0.1], [0.3, 0.3, 0.3]]
    for alpha, beta, scale in ((0.5, 0.5, 300.0), (1.0, 0.0, 1.0), (0.2, 0.9, 2.0)):
        got = cf_loss(torch.tensor([real]), torch.tensor([synthetic]), torch.tensor(freqs),
                      alpha, beta, scale)  # fmt: skip
        assert got.shape == (1,)
        assert got.item() == pytest.approx(hand_loss(real, synthetic, freqs, alpha, beta, scale),
                                           rel=1e-5)  # fmt: skip


def test_at_equal_weights_the_loss_is_a_scaled_mean_distance_of_the_functions() -> None:
    g = torch.Generator().manual_seed(0)
    real, synthetic, freqs = torch.randn(1, 6, 5, generator=g), torch.randn(1, 3, 5, generator=g), \
        torch.randn(7, 5, generator=g)  # fmt: skip

    def phi(x):
        x = x / x.norm(dim=-1, keepdim=True)
        return torch.exp(1j * (x[0].double() @ freqs.double().T)).mean(0)

    expected = 300 * (phi(real) - phi(synthetic)).abs().mean() / math.sqrt(2)
    assert cf_loss(real, synthetic, freqs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_classes_are_batched_with_their_own_or_shared_frequencies() -> None:
    g = torch.Generator().manual_seed(1)
    real, synthetic = torch.randn(3, 5, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    own, shared = torch.randn(3, 6, 4, generator=g), torch.randn(6, 4, generator=g)
    batched_own, batched_shared = cf_loss(real, synthetic, own), cf_loss(real, synthetic, shared)
    for c in range(3):
        one = cf_loss(real[c : c + 1], synthetic[c : c + 1], own[c])
        torch.testing.assert_close(batched_own[c : c + 1], one)
        one = cf_loss(real[c : c + 1], synthetic[c : c + 1], shared)
        torch.testing.assert_close(batched_shared[c : c + 1], one)


def test_equal_sets_give_zero_and_a_finite_gradient() -> None:
    g = torch.Generator().manual_seed(2)
    features, freqs = torch.randn(2, 4, 8, generator=g), torch.randn(16, 8, generator=g)
    synthetic = features.clone().requires_grad_(True)
    loss = cf_loss(features, synthetic, freqs).sum()
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(synthetic.grad).all()
    # Apart, the gradient is finite and not zero.
    moved = (features + 0.1).requires_grad_(True)
    cf_loss(features, moved, freqs).sum().backward()
    assert torch.isfinite(moved.grad).all() and moved.grad.abs().sum() > 0


# --- the module --------------------------------------------------------------------------------


def random_state(net: torch.nn.Module, seed: int) -> dict:
    reset_parameters(net, torch.Generator().manual_seed(seed))
    return {k: v.clone() for k, v in net.state_dict().items()}


def module(ipc: int = 1, **knobs) -> CharacteristicFunctionMatching:
    net = build_model("convnet", 1, 10, 28, width=4, depth=2)
    pool = [(random_state(net, 2 * i), random_state(net, 2 * i + 1)) for i in range(3)]
    pixels = torch.rand(10 * ipc, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    init = (pixels - 0.1307) / 0.3081
    knobs = {"num_freqs": 32, "lr_img": 0.01, "seed": 3, **knobs}
    return CharacteristicFunctionMatching(net, DSA("color_crop_cutout"), init, 10, MNIST,
                                          pool=pool, factor=2, **knobs)  # fmt: skip


def fit(
    m: CharacteristicFunctionMatching, steps: int, ckpt: str | None = None, callbacks=()
) -> L.Trainer:
    dm = ClassBatchDataModule("mnist_sample", "", 10, 8, 12, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=list(callbacks))  # fmt: skip
    trainer.fit(m, datamodule=dm, ckpt_path=ckpt)
    return trainer


def test_the_matching_network_interpolates_initial_and_trained_weights() -> None:
    m = module()
    mixes = set()
    for step in (0, 5):
        picks = generator(3, "pool-pick", step)
        index = int(torch.randint(3, (), generator=picks))
        mix = float(torch.rand((), generator=picks))
        mixes.add(mix)
        net, calibrator = m.pool_networks(step)
        initial, trained = m._pool[index]
        for value, a, b in zip(net.state_dict().values(), initial, trained, strict=True):
            assert torch.equal(value, mix * a + (1 - mix) * b)
        for value, b in zip(calibrator.state_dict().values(), trained, strict=True):
            assert torch.equal(value, b)
        assert 0 < mix < 1 and not torch.equal(net.classifier.weight, calibrator.classifier.weight)
    assert len(mixes) == 2  # each step draws its own


@pytest.mark.parametrize("pixels", ["unit", "normalised"])
def test_one_class_images_are_that_class_of_the_decoded_set(pixels) -> None:
    m = module(ipc=2, pixels=pixels)
    every_class = m.synthetic_images.per_class(m.training_images())
    assert every_class.shape[1] == 2 * 4  # factor 2: four tiles a stored image
    for c in (0, 3, 9):
        assert torch.equal(m.class_images(c), every_class[c])


@pytest.mark.parametrize(("calibration_weight", "steps_per_iteration"), [(1.0, 20), (0.0, 10)])
def test_one_global_step_is_one_iteration(calibration_weight, steps_per_iteration) -> None:
    m = module(calibration_weight=calibration_weight)
    updates = []
    real_step = torch.optim.AdamW.step

    def counting_step(optimizer, *args, **kwargs):
        updates.append(1)
        return real_step(optimizer, *args, **kwargs)

    torch.optim.AdamW.step = counting_step
    try:
        start = m.synthetic.detach().clone()
        trainer = fit(m, steps=3)
    finally:
        torch.optim.AdamW.step = real_step
    assert len(updates) == 3 * steps_per_iteration  # a step a class (and a calibration step)
    assert trainer.global_step == 3
    assert not torch.equal(m.synthetic, start)
    assert m.synthetic.min() >= 0 and m.synthetic.max() <= 1  # clamped under manual optimisation


def test_kill_and_resume_with_the_sampling_network_is_bit_identical(tmp_path: Path) -> None:
    whole = module(sampling_net=True, sampling_noise=4)
    fit(whole, steps=12)

    killed = module(sampling_net=True, sampling_noise=4)
    trainer = fit(killed, steps=8)
    ckpt = tmp_path / "step8.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 8 and list(saved["auxiliary"]) == ["sampling_net"]
    sampler_state = saved["auxiliary"]["sampling_net"]["state"]
    assert "momentum_buffer" in str(sampler_state["optimizer"]["state"][0])
    assert [k for k in saved["state_dict"]] == ["synthetic", "labels"]  # pool and sampler apart

    resumed = module(sampling_net=True, sampling_noise=4)
    trainer = fit(resumed, steps=12, ckpt=str(ckpt))
    assert trainer.global_step == 12
    assert torch.equal(resumed.synthetic, whole.synthetic)
    for a, b in zip(resumed.sampler.state_dict().values(), whole.sampler.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    # The sampling network learned, and is not among the image optimiser's parameters.
    fresh = module(sampling_net=True).sampler
    assert not torch.equal(fresh.layers[0].weight, whole.sampler.layers[0].weight)
    assert [p for p in whole.parameters()] == [whole.synthetic]


def test_a_resume_without_the_runs_sampling_network_gets_one_line() -> None:
    with_sampler = module(sampling_net=True)
    checkpoint: dict = {}
    with_sampler.on_save_checkpoint(checkpoint)
    assert list(checkpoint["auxiliary"]) == ["sampling_net"]  # the pool is data: not saved
    with pytest.raises(ConfigError) as error:
        module().on_load_checkpoint(checkpoint)
    assert str(error.value) == (
        "the checkpoint holds a sampling_net, which this method=ncfm run does not make; resume "
        "with method.sampling_net=true, as the run was made"
    )
    with pytest.raises(ConfigError) as error:
        module(sampling_net=True).on_load_checkpoint({})
    assert str(error.value) == (
        "the checkpoint holds no sampling_net; resume with method.sampling_net=false, as the run "
        "was made"
    )


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_set(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real_loss = ncfm_module.cf_loss

    def nan_from_the_third_iteration(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) > 2 * 10 else loss  # 10 classes an iteration

    monkeypatch.setattr(ncfm_module, "cf_loss", nan_from_the_third_iteration)
    m = module()
    metadata = {"class_names": [str(c) for c in range(10)], "mean": [0.1307], "std": [0.3081]}
    writer = SyntheticWriter(tmp_path, metadata, every=2)
    with pytest.raises(NonFiniteLossError, match="at step 2") as error:
        fit(m, steps=6, callbacks=[FiniteLossGuard(every=1, writer=writer), writer])
    assert "the last good synthetic set (step 2) is kept" in str(error.value)
    saved = torch.load(tmp_path / "synthetic.pt", weights_only=False)
    assert saved["step"] == 2 and torch.isfinite(saved["images"]).all()
    assert not torch.isfinite(m.synthetic).all()  # the set in memory did go bad


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"alpha": 0.0, "beta": 0.0}, "not both 0"),
        ({"optimizer": "adam"}, "unknown method.optimizer 'adam'"),
        ({"pool": []}, "python -m dmcondense.pretrain"),
    ],
)
def test_bad_knobs_get_one_line(knobs, message) -> None:
    net = build_model("convnet", 1, 10, 28, width=4, depth=2)
    pool = [(random_state(net, 0), random_state(net, 1))]
    knobs = {"pool": pool, **knobs}
    with pytest.raises(ConfigError, match=message) as error:
        CharacteristicFunctionMatching(net, DSA(), torch.zeros(10, 1, 28, 28), 10, MNIST, **knobs)
    assert "\n" not in str(error.value)


def test_a_run_without_a_pool_gives_the_pretrain_command(tmp_path: Path) -> None:
    result = train("method=ncfm", "ipc=1", f"pool.root={tmp_path / 'pools'}",
                   f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the pretrained pool for mnist_sample")
    assert "python -m dmcondense.pretrain dataset=mnist_sample model=convnet" in lines[0]
    assert f"pool.root={tmp_path / 'pools'}" in lines[0] and "pool.build=auto" in lines[0]
    assert not (tmp_path / "run" / "synthetic.pt").exists()


@pytest.mark.slow
def test_ncfm_beats_random_real_images_on_the_mnist_sample_at_ipc_1(tmp_path: Path) -> None:
    """The pool (2 networks x 1 epoch) is built first by pool.build=auto."""
    result = train(
        "method=ncfm", "ipc=1", "iterations=5", "method.num_freqs=256", "pool.size=2",
        "pool.epochs=1", "pool.build=auto", f"pool.root={tmp_path / 'pools'}", "eval.epochs=50",
        "logger=csv", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("pool network ") == 2
    scores = json.loads((tmp_path / "run" / "results.json").read_text())["results"]
    ncfm, random = scores["ncfm"]["convnet"]["mean"], scores["random"]["convnet"]["mean"]
    assert ncfm >= random + 10, (ncfm, random)
