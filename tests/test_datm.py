"""DATM's own pieces on hand-made cases: the correct-only initialisation and its soft labels,
the widening start-epoch window, the loss-threshold skip and the GSAM step of its experts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.inprocess import evaluate, tiny, train, train_killed_after
from torch import nn

from dmcondense.errors import ConfigError
from dmcondense.io import read_synthetic
from dmcondense.methods.datm_parts import (
    check_window,
    first_correct,
    keep_update,
    masked_step,
    soft_cross_entropy,
    soft_label_init,
    start_epoch_bound,
)
from dmcondense.models.gsam import gsam_step

# --- the initialisation ------------------------------------------------------------------------


def test_first_correct_takes_expert_zeros_correct_images_in_shuffled_order() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    positions = torch.tensor([3, 0, 2, 1, 1, 3, 0, 2])  # shuffled order within each class
    correct = torch.tensor([
        [1, 1, 0, 1, 0, 1, 1, 1],  # expert 0
        [1, 1, 1, 1, 1, 1, 1, 1],  # expert 1 (never reached: expert 0 gets enough right)
    ]).bool()  # fmt: skip
    chosen = first_correct(correct, labels, positions, ipc=2)
    # class 0: expert 0 gets 0, 1, 3 right; shuffled order 1 (pos 0), 3 (pos 1), 0 (pos 3)
    # class 1: expert 0 gets 5, 6, 7 right; shuffled order 6 (pos 0), 7 (pos 2), 5 (pos 3)
    assert chosen.tolist() == [[1, 3], [6, 7]]


def test_first_correct_falls_back_to_the_next_expert_then_to_the_rest() -> None:
    labels = torch.zeros(5, dtype=torch.long)
    positions = torch.tensor([4, 3, 2, 1, 0])
    correct = torch.tensor([
        [1, 0, 0, 0, 0],  # expert 0: only image 0
        [0, 1, 0, 1, 0],  # expert 1: images 1 and 3
    ]).bool()  # fmt: skip
    # ipc 3: image 0 (expert 0), then expert 1's in shuffled order: 3 (pos 1), 1 (pos 3);
    # returned in shuffled order: 3, 1, 0.
    assert first_correct(correct, labels, positions, ipc=3).tolist() == [[3, 1, 0]]
    # ipc 5: the two that no expert gets right come last, and all is then in shuffled order.
    assert first_correct(correct, labels, positions, ipc=5).tolist() == [[4, 3, 2, 1, 0]]
    with pytest.raises(ConfigError, match="fewer than ipc=6"):
        first_correct(correct, labels, positions, ipc=6)


def test_soft_labels_average_only_the_experts_that_are_right() -> None:
    logits = torch.tensor([
        [[3.0, 1.0], [0.0, 2.0], [5.0, 0.0]],  # expert 0: right on images 0 and 1
        [[1.0, 0.0], [4.0, 1.0], [2.0, 1.0]],  # expert 1: right on image 0 only
    ])  # fmt: skip
    labels = torch.tensor([0, 1, 1])
    init = soft_label_init(logits, labels)
    assert torch.equal(init[0], torch.tensor([2.0, 0.5]))  # mean of both, unscaled
    assert torch.equal(init[1], torch.tensor([0.0, 2.0]))  # expert 0's alone
    assert torch.equal(init[2], torch.tensor([3.5, 0.5]))  # nobody right: mean of all


def test_soft_cross_entropy_is_cross_entropy_against_softmax_targets() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    targets = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
    expected = torch.nn.functional.cross_entropy(logits, targets.softmax(1))
    assert torch.allclose(soft_cross_entropy(logits, targets), expected)
    # a sharp target is the hard cross-entropy
    hard = torch.tensor([[0.0, 1e4, 0.0], [0.0, 0.0, 1e4]])
    assert torch.allclose(
        soft_cross_entropy(logits, hard),
        torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2])),
    )


# --- the window ---------------------------------------------------------------------------------


def test_the_window_widens_from_its_first_bound_to_the_max() -> None:
    # CIFAR-10 IPC 10: current_max_start_epoch 10, max_start_epoch 20, expansion_end_epoch 1000
    bounds = [start_epoch_bound(it, 20, 10, 1000) for it in (0, 99, 100, 550, 999, 1000, 5000)]
    assert bounds == [10, 10, 11, 15, 19, 20, 20]
    # Sequential_Generation False: the max from the start
    assert start_epoch_bound(0, 4) == 4 and start_epoch_bound(10**6, 4) == 4


def test_window_checks_say_what_to_change() -> None:
    check_window(0, 20, 10, 2, 22)
    with pytest.raises(ConfigError, match="min_start_epoch"):
        check_window(10, 20, 10, 2, 50)
    with pytest.raises(ConfigError, match="passes the experts' 20 epochs"):
        check_window(0, 20, None, 2, 20)
    with pytest.raises(ConfigError, match="expansion_end"):
        start_epoch_bound(3, 20, 10, 0)


# --- the threshold ------------------------------------------------------------------------------


def _stepped(loss_value: float, threshold: float, steps: int = 3):
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        (w.square().sum() * loss_value).backward()
        masked_step(opt, keep_update(torch.tensor(loss_value), threshold))
    return w.detach(), opt.state.get(w, {}).get("momentum_buffer")


def test_a_loss_over_the_threshold_steps_nothing() -> None:
    w, buf = _stepped(1.2, threshold=1.1)
    assert torch.equal(w, torch.tensor([1.0, -2.0]))
    assert buf is None or torch.equal(buf, torch.zeros(2))
    nan = keep_update(torch.tensor(float("nan")), 1.0)
    assert not bool(nan)


def test_a_loss_within_the_threshold_steps_as_plain_sgd() -> None:
    w, buf = _stepped(0.9, threshold=1.1)
    ref = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([ref], lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        (ref.square().sum() * 0.9).backward()
        opt.step()
    assert torch.equal(w, ref.detach())
    assert torch.equal(buf, opt.state[ref]["momentum_buffer"])


def test_a_skipped_first_step_leaves_momentum_as_if_fresh() -> None:
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    ref = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    opt_ref = torch.optim.SGD([ref], lr=0.1, momentum=0.9)
    opt.zero_grad()
    w.square().sum().backward()
    masked_step(opt, torch.tensor(False))  # skipped
    for p, o in ((w, opt), (ref, opt_ref)):
        for _ in range(2):
            o.zero_grad()
            p.square().sum().backward()
            masked_step(o, torch.tensor(True))
    assert torch.equal(w.detach(), ref.detach())


# --- GSAM ---------------------------------------------------------------------------------------


def _gsam_by_hand(w: torch.Tensor, x: torch.Tensor, rho: float, alpha: float, lr: float):
    """GSAM on loss(w) = sum((x @ w)^2) / 2 with its gradient written out."""

    def grad(v):
        return x.T @ (x @ v)

    g = grad(w)
    e = rho * g / (torch.linalg.vector_norm(w.abs() * g) + 1e-12) * w.square()
    h = grad(w + e)
    cos = (g * h).sum() / (h.norm() * g.norm() + 1e-12)
    vertical = g - cos * g.norm() * h / (h.norm() + 1e-12)
    return w - lr * (h - alpha * vertical)


def test_gsam_step_equals_a_hand_computation() -> None:
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]], dtype=torch.float64)
    w0 = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    opt = torch.optim.SGD([w], lr=0.05)

    def closure():
        opt.zero_grad()
        loss = (x @ w).square().sum() / 2
        loss.backward()
        return loss

    loss = gsam_step([w], closure, opt, rho=0.5, alpha=0.3)
    assert torch.allclose(w.detach(), _gsam_by_hand(w0, x, 0.5, 0.3, 0.05), atol=1e-12)
    assert torch.allclose(loss, (x @ w0).square().sum() / 2)
    # rho 0: both gradients agree, the orthogonal part is 0, and it is a plain SGD step
    w.data.copy_(w0)
    gsam_step([w], closure, opt, rho=0.0, alpha=0.3)
    assert torch.allclose(w.detach(), w0 - 0.05 * x.T @ (x @ w0), atol=1e-12)


def test_gsam_second_pass_leaves_batchnorm_statistics() -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1] * 4)
    calls = []

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        calls.append(net[1].running_mean.clone())
        return loss

    gsam_step(list(net.parameters()), closure, opt, rho=0.05, alpha=0.4, model=net)
    assert net[1].num_batches_tracked.item() == 2
    assert torch.equal(calls[0], calls[1])  # the second pass moved nothing
    assert net[1].momentum == 0.1  # and the momentum is back


# --- soft labels travel with the set -----------------------------------------------------------


def _pattern_set(num_classes: int = 3, per_class: int = 4):
    """Images that a small network separates at once: class c lights up row block c."""
    images = torch.zeros(num_classes * per_class, 1, 8, 8, dtype=torch.uint8)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    for c in range(num_classes):
        images[labels == c, :, 2 * c : 2 * c + 2, :] = 255
    return images, labels


def test_a_set_trains_on_its_own_soft_labels_every_epoch() -> None:
    from dmcondense.data.normalise import Normaliser
    from dmcondense.evaluation.protocol import Protocol
    from dmcondense.evaluation.score import train_networks

    images, labels = _pattern_set()
    normaliser = Normaliser([0.5], [0.5])
    train = normaliser.to_input(images)
    protocol = Protocol(epochs=10, lr=0.1, batch_size=12, augment="none")
    common = dict(num_models=1, protocol=protocol, seed=0, normaliser=normaliser,
                  backend="loop", num_classes=3)  # fmt: skip
    hard = train_networks("mlp", train, labels, images, labels, **common)
    # Soft labels that name the next class: trained on them, the network is wrong on every
    # image it is tested on with the true labels.
    shifted = torch.nn.functional.one_hot((labels + 1) % 3, 3).float()
    soft = train_networks("mlp", train, shifted, images, labels, **common)
    assert hard.item() == 1.0 and soft.item() == 0.0


def test_own_soft_labels_keep_every_epoch_under_the_soft_protocol(monkeypatch) -> None:
    # eval.labels=soft ends a teacher's labels with hard ones (protocol.HARD_TAIL); a set's own
    # soft labels are its labels and train every epoch under either setting.
    from dmcondense.data.normalise import Normaliser
    from dmcondense.evaluation import sequential
    from dmcondense.evaluation.protocol import Protocol
    from dmcondense.evaluation.score import train_networks

    targets_of_epochs = []

    def recording(labels, soft_targets, protocol, epoch):
        targets, temperature = epoch_targets(labels, soft_targets, protocol, epoch)
        targets_of_epochs.append(targets.dim())
        return targets, temperature

    epoch_targets = sequential.epoch_targets
    monkeypatch.setattr(sequential, "epoch_targets", recording)
    images, labels = _pattern_set()
    normaliser = Normaliser([0.5], [0.5])
    own = torch.nn.functional.one_hot(labels, 3).float() * 0.7 + 0.1
    for kind in ("hard", "soft"):
        protocol = Protocol(epochs=40, lr=0.1, batch_size=12, augment="none", labels=kind)
        train_networks("mlp", normaliser.to_input(images), own, images, labels, num_models=1,
                       protocol=protocol, seed=0, normaliser=normaliser, backend="loop",
                       num_classes=3)  # fmt: skip
    assert targets_of_epochs == [2] * 80


# --- method=datm on the engine ------------------------------------------------------------------


@pytest.fixture(scope="module")
def experts_root(tmp_path_factory) -> Path:
    """One folder of experts for the module's runs (the first run trains them)."""
    return tmp_path_factory.mktemp("datm-experts")


def datm_run(root: Path, *more: str) -> list[str]:
    return tiny(
        "method=datm", "ipc=2", "iterations=6", "save_every=2", "logger=csv",
        f"experts.root={root}", "experts=default", "experts.size=1", "experts.epochs=2",
        "experts.build=auto",
        "method.syn_steps=3", "method.expert_epochs=1", "method.max_start_epoch=2",
        "method.initial_max_start_epoch=1", "method.expansion_end=3", "lr_img=100",
        "method.lr_lr=1e-3", "method.threshold=10", *more,
    )  # fmt: skip


def test_datm_stopped_after_a_checkpoint_resumes_bit_for_bit(tmp_path: Path, experts_root) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = datm_run(experts_root)
    assert train_killed_after(4, *args, f"hydra.run.dir={killed}") == [1, 2, 3, 4]
    resumed = train(*args, "resume=last", f"hydra.run.dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert train(*args, f"hydra.run.dir={whole}").returncode == 0
    a, b = read_synthetic(killed), read_synthetic(whole)
    assert torch.equal(a["images"], b["images"]) and a["lr"] == b["lr"]
    assert torch.equal(a["soft_labels"], b["soft_labels"])
    states = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=False)["auxiliary"]
              for d in (killed, whole)]  # fmt: skip
    sa, sb = (s["soft_labels"]["state"] for s in states)
    assert torch.equal(sa["value"], sb["value"])
    momentum = [s["optimizer"]["state"][0]["momentum_buffer"] for s in (sa, sb)]
    assert torch.equal(*momentum) and momentum[0].abs().sum() > 0  # the labels learned


def _experts_and_split(record: dict, root: Path):
    """The run's experts (their trajectories) and its training split, as the run read them."""
    from omegaconf import OmegaConf

    from dmcondense.data.spec import DatasetSpec
    from dmcondense.jobs import build

    cfg = OmegaConf.create(record["config"])
    spec = DatasetSpec.from_config(cfg.dataset)
    folders = list(root.iterdir())
    trajectories = [torch.load(p, weights_only=True)["trajectory"]
                    for p in sorted(folders[0].glob("expert_*.pt"))]  # fmt: skip
    dm = build.datamodule(cfg)
    dm.setup("fit")
    return cfg, spec, trajectories, dm.train_set


def test_init_correct_starts_from_images_the_experts_classify_correctly(
    tmp_path: Path, experts_root
) -> None:
    from dmcondense.jobs import build
    from dmcondense.methods.datm import initial_soft_labels
    from dmcondense.methods.mtt import flat_forward

    run = tmp_path / "run"
    # threshold -1: every loss passes it, so nothing steps and the set stays at its start
    assert train(*datm_run(experts_root, "method.threshold=-1", "iterations=2"),
                 f"hydra.run.dir={run}").returncode == 0  # fmt: skip
    record = read_synthetic(run)
    cfg, spec, trajectories, split = _experts_and_split(record, experts_root)
    chosen = record["init_indices"]
    assert torch.equal(split.labels[chosen], record["labels"])
    start = spec.normaliser.to_input(split.images[chosen])
    assert torch.equal(record["images"], start)  # no step was taken
    net = build.embedding_network(cfg, spec).eval()
    predicted = flat_forward(net)(trajectories[0][-1], start).argmax(1)
    assert torch.equal(predicted, record["labels"])  # expert 0 gets every starting image right
    assert record["lr"] == float(torch.tensor(cfg.method.lr_teacher))  # float32, unstepped
    labels = initial_soft_labels(net, trajectories, start, record["labels"], "correct")
    assert torch.equal(record["soft_labels"], labels)
    # The evaluate job reads them as the set's labels (probabilities), and scores the set.
    from hydra import compose, initialize_config_dir

    from dmcondense.cli import CONF_DIR
    from dmcondense.jobs.evaluate import synthetic_sets

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        ev = compose("evaluate", [f"condensed={run}"])
    (_, read), *_ = synthetic_sets([str(run)], ev)[0]
    assert torch.allclose(read, labels.softmax(1))
    scored = evaluate(f"condensed={run}", "eval.protocol=mtt", "eval.epochs=1",
                      "eval.num_models=1", f"hydra.run.dir={tmp_path / 'ev'}")  # fmt: skip
    assert scored.returncode == 0, scored.stderr[-3000:]


def test_gsam_experts_have_their_own_key_and_train_by_gsam() -> None:
    from dmcondense.models.experts import ExpertRecipe, experts_manifest, train_expert

    sgd, gsam = ExpertRecipe(), ExpertRecipe(optimizer="gsam", rho=0.01, alpha=0.3)
    assert "optimizer" not in experts_manifest({}, "convnet", {}, sgd, 0)["recipe"]  # key kept
    assert experts_manifest({}, "convnet", {}, gsam, 0)["recipe"]["optimizer"] == "gsam"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(4).repeat(4)

    def trajectory(recipe: ExpertRecipe) -> torch.Tensor:
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
        torch.nn.init.constant_(net[1].weight, 0.01)
        torch.nn.init.constant_(net[1].bias, 0.0)
        return train_expert(net, images, labels, lambda x: x.float() / 255, None, recipe, 0, 0)[0]

    base = dict(epochs=2, batch_size=8, augment="none")
    plain = trajectory(ExpertRecipe(**base))
    # rho 0: GSAM's two gradients agree, so its step is SGD's (up to rounding)
    assert torch.allclose(trajectory(ExpertRecipe(**base, optimizer="gsam")), plain, atol=1e-6)
    sharp = trajectory(ExpertRecipe(**base, optimizer="gsam", rho=0.5, alpha=0.3, adaptive=False))
    assert not torch.allclose(sharp, plain, atol=1e-4)
