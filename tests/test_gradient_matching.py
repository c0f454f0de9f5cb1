"""Gradient matching (DC, DSA): the distance, the loop table, the per-class gradients two ways,
the loop counts of one iteration, and bit-identical reruns."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from dmcondense.augment import DSA, NoAugment
from dmcondense.data.datamodule import ClassBatchDataModule, StepStream
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError
from dmcondense.methods.gradient_matching import (
    DatasetCondensation,
    GradientMatching,
    SiameseAugmentation,
    gradient_distance,
    loops_for,
)
from dmcondense.models.registry import build_model

MNIST = Normaliser([0.1307], [0.3081])


# --- the distance ------------------------------------------------------------------------------


def test_ours_is_zero_for_equal_gradients_two_per_row_for_opposite_and_ignores_biases() -> None:
    g = torch.Generator().manual_seed(0)
    conv = torch.randn(2, 4, 3, 3, 3, generator=g)  # [classes, out, in, kh, kw]: 4 rows a class
    linear = torch.randn(2, 5, 6, generator=g)  # 5 rows a class
    bias = torch.randn(2, 4, generator=g)
    assert torch.allclose(gradient_distance([conv, linear], [conv, linear], "ours"),
                          torch.zeros(2), atol=1e-5)  # fmt: skip
    opposite = gradient_distance([conv, linear], [-conv, -linear], "ours")
    assert torch.allclose(opposite, torch.full((2,), 2.0 * (4 + 5)), atol=1e-4)
    # A bias counts 0 whatever it holds; a weight row at right angles counts 1.
    assert torch.equal(gradient_distance([bias], [-bias], "ours"), torch.zeros(2))
    row = torch.tensor([[[1.0, 0.0]]])
    assert gradient_distance([row], [torch.tensor([[[0.0, 3.0]]])], "ours").item() == (
        pytest.approx(1.0)
    )


def test_mse_and_cos_work_on_all_gradients_concatenated() -> None:
    a = [torch.tensor([[1.0, 2.0]]), torch.tensor([[[3.0]]])]
    b = [torch.tensor([[0.0, 2.0]]), torch.tensor([[[1.0]]])]
    assert gradient_distance(a, b, "mse").item() == pytest.approx(1.0 + 0.0 + 4.0)
    cosine = (0 + 4 + 3) / ((1 + 4 + 9) ** 0.5 * (4 + 1) ** 0.5)
    assert gradient_distance(a, b, "cos").item() == pytest.approx(1 - cosine, abs=1e-5)
    with pytest.raises(ValueError, match="unknown distance 'foo'"):
        gradient_distance(a, b, "foo")


# --- the loop table ----------------------------------------------------------------------------


def test_loops_come_from_the_ipc_table_or_by_hand() -> None:
    assert loops_for(1, None, None) == (1, 1)
    assert loops_for(10, None, None) == (10, 50)
    assert loops_for(50, None, 3) == (50, 3)
    assert loops_for(7, 2, 4) == (2, 4)
    with pytest.raises(ConfigError) as error:
        loops_for(7, None, None)
    message = str(error.value)
    assert "ipc=7" in message and "1, 10, 20, 30, 40, 50" in message
    assert "method.outer_loop=N method.inner_loop=M" in message


# --- the module --------------------------------------------------------------------------------


def module(cls=DatasetCondensation, augment=None, ipc: int = 1, **kwargs) -> GradientMatching:
    net = build_model("convnet", 1, 10, 28, width=8, depth=2)
    init = torch.randn(10 * ipc, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    return cls(net, augment or NoAugment(), init, 10, MNIST, lr_img=0.1, seed=3, **kwargs)


def test_vmapped_class_gradients_equal_the_class_loop_to_rounding() -> None:
    m = module()
    net = m.draw_network(0)
    classes = torch.tensor([0, 2, 3])
    g = torch.Generator().manual_seed(2)
    real = torch.randn(3, 5, 1, 28, 28, generator=g)
    with torch.no_grad():
        batched = m.class_gradients_vmap(net, real, classes)
        looped = m.class_gradients_loop(net, real, classes)
    assert len(batched) == len(looped) == len(list(net.parameters()))
    for a, b in zip(batched, looped, strict=True):
        assert a.shape[0] == 3 and not a.requires_grad and not b.requires_grad
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Synthetic side: the gradients are differentiable, and both ways give the same image update.
    synthetic = torch.randn(3, 2, 1, 28, 28, generator=g, requires_grad=True)
    updates = []
    for gradients in (m.class_gradients_vmap, m.class_gradients_loop):
        distance = gradient_distance(batched, gradients(net, synthetic, classes), "ours").sum()
        updates.append(torch.autograd.grad(distance, synthetic)[0])
    torch.testing.assert_close(updates[0], updates[1], atol=1e-5, rtol=1e-3)
    assert updates[0].abs().sum() > 0


def fit(m: GradientMatching, steps: int = 1, batch_real: int = 6) -> L.Trainer:
    dm = ClassBatchDataModule("mnist_sample", "", 10, batch_real, steps, seed=0)
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(m, datamodule=dm)
    return trainer


def test_one_iteration_makes_outer_loop_updates_and_inner_loop_epochs_between() -> None:
    m = module(outer_loop=3, inner_loop=4)
    updates, epochs = [], []
    real_step = torch.optim.SGD.step

    def counting_step(optimizer, *args, **kwargs):
        if any(p is m.synthetic for group in optimizer.param_groups for p in group["params"]):
            updates.append(1)
        elif optimizer.param_groups[0]["lr"] == m.lr_net:
            epochs.append(1)  # one batch an epoch: 10 images, batch_train 256
        return real_step(optimizer, *args, **kwargs)

    torch.optim.SGD.step = counting_step
    try:
        trainer = fit(m, steps=2)
    finally:
        torch.optim.SGD.step = real_step
    assert len(updates) == 2 * 3  # outer_loop image updates an iteration
    assert len(epochs) == 2 * (3 - 1) * 4  # inner_loop epochs between them, none after the last
    assert trainer.global_step == 2  # one global step an iteration


@pytest.mark.parametrize(("cls", "augment"), [(DatasetCondensation, NoAugment()),
                                              (SiameseAugmentation, DSA())])  # fmt: skip
def test_reruns_are_bit_identical_and_the_seed_matters(cls, augment) -> None:
    torch.manual_seed(5)
    first = module(cls, augment, outer_loop=2, inner_loop=2)
    fit(first, steps=2)
    torch.manual_seed(6)  # other global state: only the named generators may count
    again = module(cls, augment, outer_loop=2, inner_loop=2)
    fit(again, steps=2)
    assert torch.equal(first.synthetic, again.synthetic)
    start = module(cls, augment).synthetic
    assert not torch.equal(first.synthetic, start)  # it moved
    other = cls(build_model("convnet", 1, 10, 28, width=8, depth=2), augment, start.detach(), 10,
                MNIST, lr_img=0.1, seed=4, outer_loop=2, inner_loop=2)  # fmt: skip
    fit(other, steps=2)
    assert not torch.equal(first.synthetic, other.synthetic)


def test_batchnorm_networks_match_class_by_class_with_frozen_statistics() -> None:
    net = build_model("convnet_bn", 1, 10, 28, width=8, depth=2)
    init = torch.randn(20, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    m = DatasetCondensation(net, NoAugment(), init, 10, MNIST, outer_loop=2, inner_loop=1)
    assert m.gradient_path() == "loop"
    fit(m, steps=1)
    assert torch.isfinite(m.synthetic).all()
    bn = next(mod for mod in m.embed_net.modules() if isinstance(mod, nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) > 0  # the statistics were set from real images


def test_bad_settings_get_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="unknown method.distance 'foo'; choose one of ours"):
        module(distance="foo")
    with pytest.raises(ConfigError, match="ipc=3"):
        module(ipc=3)
    assert module(ipc=3, outer_loop=2, inner_loop=5).outer_loop == 2

    class OnlyNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.GroupNorm(1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.norm(x).flatten(1)[:, :4]

    init = torch.zeros(4, 1, 28, 28)
    with pytest.raises(ConfigError, match="no parameters for gradient matching to compare"):
        DatasetCondensation(OnlyNorm(), NoAugment(), init, 4, MNIST, outer_loop=1, inner_loop=1)


def test_the_step_draws_one_real_batch_a_round() -> None:
    assert module(outer_loop=3, inner_loop=1).real_batches_per_step == 3
    dm = ClassBatchDataModule("mnist_sample", "", 10, 5, 1, seed=0)
    dm.setup()
    classes = torch.arange(10)
    (batch,) = list(StepStream(dm.index, classes, 5, 0, 0, 1, rounds=3))
    assert batch["indices"].shape == (3, 10, 5)
    (one,) = list(StepStream(dm.index, classes, 5, 0, 0, 1))
    assert one["indices"].shape == (1, 10, 5)  # one round, still with its axis
    assert torch.equal(batch["indices"][0], one["indices"][0])  # round 0 is the one-batch draw
    assert not torch.equal(batch["indices"][1], one["indices"][0])


@pytest.mark.parametrize(("inner_family", "one_family"), [("batch", True), ("image", False)])
def test_dsa_draws_a_family_a_class_when_matching_and_a_batch_in_the_inner_loop(
    monkeypatch, inner_family: str, one_family: bool
) -> None:
    drawn: list[tuple[int, bool, torch.Tensor]] = []
    original = DSA.sample

    def recording_sample(self, n, generator, one_family=False):
        params = original(self, n, generator, one_family)
        drawn.append((n, one_family, params["family"]))
        return params

    monkeypatch.setattr(DSA, "sample", recording_sample)
    m = module(SiameseAugmentation, DSA(), ipc=3, outer_loop=2, inner_loop=3,
               inner_family=inner_family, batch_train=16)  # fmt: skip
    fit(m, steps=2)
    matching = [d for d in drawn if d[0] == 10]  # one group a class (10 classes), Siamese
    inner = [d for d in drawn if d[0] != 10]  # 30 images in batches of 16 and 14
    assert len(matching) == 2 * 2 and not any(flag for _, flag, _ in matching)
    assert sorted({n for n, _, _ in inner}) == [14, 16] and len(inner) == 2 * 3 * 2
    assert all(flag == one_family for _, flag, _ in inner)
    one_each = [len(set(families.tolist())) == 1 for _, _, families in inner]
    assert all(one_each) if one_family else not any(one_each)
    with pytest.raises(ConfigError, match="unknown method.inner_family 'each'"):
        module(SiameseAugmentation, DSA(), inner_family="each")
