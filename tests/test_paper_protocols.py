"""The papers' evaluation protocols by name (eval.protocol=dsa|dc|idc|ncfm) and CutMix."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from dmcondense.augment import DSA
from dmcondense.cli import CONF_DIR
from dmcondense.data.normalise import Normaliser
from dmcondense.data.sources import load_split
from dmcondense.errors import ConfigError
from dmcondense.evaluation import cutmix as cutmix_module
from dmcondense.evaluation.cutmix import CutMixDraw, cutmix, draw_cutmix
from dmcondense.evaluation.plan import EvaluationPlan
from dmcondense.evaluation.protocol import lr_at, make_augmenter, make_optimizer
from dmcondense.evaluation.score import train_networks
from dmcondense.jobs import build

MNIST = Normaliser([0.1307], [0.3081])


def composed(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# protocol -> epochs, batch, optimizer (class, lr, momentum or None, weight decay), augment,
# DSA strategy, CutMix p, and the learning rate of every epoch.
EXPECTED = {
    "dsa": dict(
        overrides=["eval.epochs=10"], batch=256, optimizer=(torch.optim.SGD, 0.01, 0.9, 5e-4),
        augment="dsa", strategy="color_crop_cutout_flip_scale_rotate", cutmix_p=0.0,
        lrs=[0.01] * 5 + [0.001] * 5,
    ),
    "idc": dict(
        # 2 * 12 // 3 = 8 and 5 * 12 // 6 = 10
        overrides=["eval.epochs=12"], batch=64, optimizer=(torch.optim.SGD, 0.01, 0.9, 5e-4),
        augment="idc", strategy="color_crop_cutout_flip_scale_rotate", cutmix_p=0.5,
        lrs=[0.01] * 8 + [0.002] * 2 + [0.0004] * 2,
    ),
    "ncfm": dict(
        # milestones 2, 4, 6, 8 of 10 epochs
        overrides=["eval.ncfm_epochs=10"], batch=128,
        optimizer=(torch.optim.AdamW, 1e-3, None, 0.01),
        augment="idc", strategy="color_crop_flip_scale_rotate", cutmix_p=0.5,
        lrs=[1e-3] * 2 + [5e-4] * 2 + [2.5e-4] * 2 + [1.25e-4] * 2 + [6.25e-5] * 2,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_protocol_schedule_optimizer_augmentation_and_batch_match_the_table(name) -> None:
    expected = EXPECTED[name]
    cfg = composed(f"eval.protocol={name}", "eval.models=[convnet,mlp]", *expected["overrides"])
    chosen = build.protocols(cfg, spec=None)
    assert set(chosen) == {"convnet", "mlp"}
    protocol = chosen["convnet"]
    assert protocol.batch_size == expected["batch"]
    assert protocol.augment == expected["augment"]
    assert protocol.dsa_strategy == expected["strategy"]
    assert protocol.cutmix_p == expected["cutmix_p"]
    assert [lr_at(e, protocol) for e in range(protocol.epochs)] == pytest.approx(
        expected["lrs"], rel=1e-12
    )
    kind, lr, momentum, weight_decay = expected["optimizer"]
    optimizer = make_optimizer([torch.zeros(2, requires_grad=True)], protocol)
    assert type(optimizer) is kind
    group = optimizer.param_groups[0]
    assert group["lr"] == pytest.approx(lr)
    assert group["weight_decay"] == pytest.approx(weight_decay)
    if momentum is not None:
        assert group["momentum"] == pytest.approx(momentum)
    augmenter = make_augmenter(protocol)
    assert isinstance(augmenter, DSA)
    assert augmenter.choice == ("idc" if expected["augment"] == "idc" else "one")


def test_the_plan_records_the_new_fields_for_results_json() -> None:
    cfg = composed("eval.protocol=ncfm")
    plan = EvaluationPlan(
        protocol_name="ncfm", architectures={"convnet": {}},
        protocols=build.protocols(cfg, spec=None), num_models=1, backend="loop", seed=0,
    )  # fmt: skip
    record = plan.record()
    assert record["protocol"] == "ncfm"
    ran = record["architectures"]["convnet"]
    assert ran["optimizer"] == "adamw"
    assert ran["lr_schedule"] == "fifths"
    assert ran["cutmix_p"] == 0.5
    assert ran["epochs"] == 2000 and ran["batch_size"] == 128


def test_an_unknown_protocol_gets_one_line_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as error:
        build.check_evaluation(composed("eval.protocol=idk"))
    message = str(error.value)
    assert "\n" not in message
    assert "dsa, dc, idc, ncfm" in message
    with pytest.raises(ConfigError, match="eval.cutmix_p"):
        build.check_evaluation(composed("eval.protocol=idc", "eval.cutmix_p=50"))


def two_flat_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Image 0 all zeros (class 0), image 1 all ones (class 2): a pasted pixel shows."""
    images = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    return images, torch.tensor([0, 2])


def test_cutmix_pastes_the_box_and_mixes_labels_by_its_area() -> None:
    images, labels = two_flat_images()
    # A 2 x 3 box (6 of 16 pixels) from the partner: each image swaps it with the other.
    draw = CutMixDraw(apply=True, top=1, bottom=3, left=0, right=3, partner=torch.tensor([1, 0]))
    mixed, targets = cutmix(images, labels, num_classes=3, draw=draw)
    expected_first = torch.zeros(1, 4, 4)
    expected_first[:, 1:3, 0:3] = 1.0
    assert torch.equal(mixed[0], expected_first)
    assert torch.equal(mixed[1], 1.0 - expected_first)
    expected_targets = torch.tensor([[10 / 16, 0.0, 6 / 16], [6 / 16, 0.0, 10 / 16]])
    assert torch.allclose(targets, expected_targets)
    # Not applied: images untouched, one-hot targets.
    skipped = CutMixDraw(False, 1, 3, 0, 3, torch.tensor([1, 0]))
    same, one_hot = cutmix(images, labels, num_classes=3, draw=skipped)
    assert torch.equal(same, images)
    assert one_hot.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]


def test_drawn_cutmix_labels_follow_the_pasted_area_and_the_probability() -> None:
    images, labels = two_flat_images()
    applied = 0
    for i in range(200):
        g = torch.Generator().manual_seed(i)
        draw = draw_cutmix(2, 4, 4, probability=0.5, generator=g)
        mixed, targets = cutmix(images, labels, num_classes=3, draw=draw)
        applied += draw.apply
        # The share of image 0's pixels that came from image 1 is what its label gives class 2
        # (when the partner is itself, nothing visible changes and the label stays whole).
        from_partner = float(mixed[0].mean()) if int(draw.partner[0]) == 1 else 0.0
        partner_label_share = float(targets[0, 2])
        assert partner_label_share == pytest.approx(from_partner)
        assert targets.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert 70 < applied < 130  # p 0.5 over 200 batches
    never = [draw_cutmix(2, 4, 4, 0.0, torch.Generator().manual_seed(i)).apply for i in range(50)]
    assert not any(never)


def test_cutmix_draws_come_from_the_given_generator() -> None:
    first = draw_cutmix(8, 32, 32, 1.0, torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG must not matter
    again = draw_cutmix(8, 32, 32, 1.0, torch.Generator().manual_seed(5))
    assert (first.top, first.bottom, first.left, first.right) == (
        again.top, again.bottom, again.left, again.right,
    )  # fmt: skip
    assert torch.equal(first.partner, again.partner)


@pytest.mark.parametrize("name", ["idc", "ncfm"])
def test_trainers_cutmix_every_batch_with_probability_one(monkeypatch, name) -> None:
    """The sequential and the vmap trainer honour cutmix_p (p 1: every batch of every network)."""
    calls: list[tuple[int, int]] = []
    original = cutmix_module.draw_cutmix

    def counting_draw(batch_size, height, width, probability, generator):
        calls.append((batch_size, probability))
        return original(batch_size, height, width, probability, generator)

    monkeypatch.setattr("dmcondense.evaluation.sequential.draw_cutmix", counting_draw)
    monkeypatch.setattr("dmcondense.evaluation.batched.draw_cutmix", counting_draw)
    cfg = composed(f"eval.protocol={name}", "eval.epochs=2", "eval.ncfm_epochs=2",
                   "eval.cutmix_p=1.0")  # fmt: skip
    protocol = build.protocols(cfg, spec=None)["convnet"]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 1, 28, 28), generator=gen, dtype=torch.uint8)
    labels = torch.arange(20) % 4
    for backend in ("loop", "vmap"):
        calls.clear()
        train_networks("convnet", images, labels, images, labels, num_models=2,
                       protocol=protocol, seed=0, normaliser=MNIST, backend=backend,
                       model_kwargs={"width": 4})  # fmt: skip
        # 20 images in one batch (64 or 128), 2 epochs, 2 networks
        assert calls == [(20, 1.0)] * 4, backend


@pytest.mark.parametrize(
    ("name", "backend"), [("idc", "vmap"), ("ncfm", "vmap"), ("ncfm", "ensemble")]
)
def test_batched_and_sequential_agree_under_cutmix_and_adamw(name, backend) -> None:
    train = load_split("mnist_sample", None, "train")
    test = load_split("mnist_sample", None, "test")
    subset = torch.cat([torch.nonzero(train.labels == c).squeeze(1)[:10] for c in range(10)])
    cfg = composed(f"eval.protocol={name}", "eval.epochs=6", "eval.ncfm_epochs=6")
    protocol = build.protocols(cfg, spec=None)["convnet"]
    kwargs = dict(num_models=2, protocol=protocol, seed=1, normaliser=MNIST,
                  model_kwargs={"width": 8})  # fmt: skip
    images, labels = train.images[subset], train.labels[subset]
    test_images, test_labels = test.images[:300], test.labels[:300]
    sequential = train_networks("convnet", images, labels, test_images, test_labels,
                                backend="loop", **kwargs)  # fmt: skip
    batched = train_networks("convnet", images, labels, test_images, test_labels,
                             backend=backend, **kwargs)  # fmt: skip
    assert torch.allclose(batched, sequential, atol=0.01), (batched, sequential)
