"""MTT: the normalised trajectory loss against a hand computation on a linear network, its
gradient reaching the pixels and the step size; the memory-bounded unroll against the plain one;
kill and resume bit for bit with the step size; the set carries its step size, which
eval.protocol=mtt trains at in train and evaluate alike; DDP refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers.inprocess import evaluate, steps_seen, tiny, train, train_killed_after

from dmcondense.augment import DSA, NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError
from dmcondense.io import read_synthetic
from dmcondense.methods.mtt import (
    TrajectoryMatching,
    checkpointed_loss_and_grads,
    trajectory_loss,
    unrolled_loss,
)
from dmcondense.models.registry import build_model
from dmcondense.rng import generator


def linear_forward(params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A linear network without bias, W [D, K] flattened into `params`."""
    return x.flatten(1) @ params.view(x[0].numel(), -1)


def test_the_trajectory_loss_is_the_hand_computed_one_and_reaches_pixels_and_step_size() -> None:
    g = torch.Generator().manual_seed(0)
    d, k, n = 6, 3, 5
    x = torch.randn(n, 1, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(n) % k
    start = torch.randn(d * k, generator=g, dtype=torch.float64)
    target = torch.randn(d * k, generator=g, dtype=torch.float64)
    lr = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)

    def by_hand(x, lr):
        # two SGD steps on the mean cross-entropy: grad W = x^T (softmax(x W) - onehot) / n
        w = start.view(d, k)
        flat = x.flatten(1)
        for _ in range(2):
            p = torch.softmax(flat @ w, dim=1)
            w = w - lr * flat.T @ (p - F.one_hot(y, k).double()) / n
        end = w.reshape(-1)
        return ((end - target) ** 2).sum() / ((start - target) ** 2).sum()

    loss = unrolled_loss(linear_forward, start, target, lr, lambda i: (x, y), steps=2)
    assert torch.allclose(loss, by_hand(x, lr), rtol=1e-12, atol=0)
    loss.backward()
    assert x.grad.abs().sum() > 0 and lr.grad.abs() > 0
    # the gradients are those of the hand-computed loss (so the second-order terms are in)
    gx, glr = torch.autograd.grad(by_hand(x, lr), (x, lr))
    assert torch.allclose(x.grad, gx, rtol=1e-10) and torch.allclose(lr.grad, glr, rtol=1e-10)
    assert trajectory_loss(start, start, target) == 1.0  # no step: no progress


def test_the_checkpointed_unroll_gives_the_unrolled_loss_and_gradients() -> None:
    net = build_model("convnet", 1, 4, 8, width=4, depth=2)
    names = [(n, p.shape, p.numel()) for n, p in net.named_parameters()]

    def forward(params, x):
        views, at = {}, 0
        for name, shape, numel in names:
            views[name] = params[at : at + numel].view(shape)
            at += numel
        return torch.func.functional_call(net, views, (x,))

    g = torch.Generator().manual_seed(1)
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    target = start + 0.05 * torch.randn(start.shape, generator=g)
    images = torch.randn(8, 1, 8, 8, generator=g)
    labels = torch.arange(8) % 4
    augment = DSA("color_crop_cutout_flip_scale_rotate")
    draws = [augment.sample(4, generator(0, "t", i), one_family=True) for i in range(5)]
    rows = [torch.randperm(8, generator=generator(0, "rows", i))[:4] for i in range(5)]

    def batches(leaf):
        return lambda i: (augment.apply(leaf[rows[i]], draws[i]), labels[rows[i]])

    a_images = images.clone().requires_grad_(True)
    a_lr = torch.tensor(0.02, requires_grad=True)
    plain = unrolled_loss(forward, start, target, a_lr, batches(a_images), steps=5)
    plain.backward()
    b_images = images.clone().requires_grad_(True)
    b_lr = torch.tensor(0.02, requires_grad=True)
    loss, (g_images, g_lr) = checkpointed_loss_and_grads(
        forward, start, target, b_lr, batches(b_images), 5, [b_images, b_lr]
    )
    assert torch.allclose(loss, plain.detach(), rtol=1e-5)
    assert torch.allclose(g_images, a_images.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(g_lr, a_lr.grad, rtol=1e-4)
    assert a_images.grad.abs().sum() > 0 and a_lr.grad.abs() > 0


@pytest.fixture(scope="module")
def experts_root(tmp_path_factory) -> Path:
    """One folder of experts for the module's runs (the first run trains them)."""
    return tmp_path_factory.mktemp("experts")


def mtt_run(root: Path, *more: str) -> list[str]:
    return tiny(
        "method=mtt", "ipc=2", "iterations=6", "save_every=2", "logger=csv",
        f"experts.root={root}", "experts.size=1", "experts.epochs=2",
        "experts.build=auto", "method.syn_steps=3", "method.expert_epochs=1",
        "method.max_start_epoch=2", "lr_img=100", "method.lr_lr=1e-3", *more,
    )  # fmt: skip


def test_mtt_stopped_after_a_checkpoint_resumes_bit_for_bit(tmp_path: Path, experts_root) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    # checkpoint: the hand-made gradients' path (the plain unroll's is the base's usual backward)
    args = mtt_run(experts_root, "method.memory=checkpoint")
    assert train_killed_after(4, *args, f"hydra.run.dir={killed}") == [1, 2, 3, 4]
    with steps_seen() as resumed_steps:
        resumed = train(*args, "resume=last", f"hydra.run.dir={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_steps == [5, 6]
    assert train(*args, f"hydra.run.dir={whole}").returncode == 0
    a, b = read_synthetic(killed), read_synthetic(whole)
    assert torch.equal(a["images"], b["images"]) and a["lr"] == b["lr"]
    assert a["lr"] != 0.01  # the step size learned
    states = [
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=False) for d in (killed, whole)
    ]
    sa, sb = (s["auxiliary"]["step_size"]["state"] for s in states)
    assert torch.equal(sa["value"], sb["value"])
    assert torch.equal(
        sa["optimizer"]["state"][0]["momentum_buffer"],
        sb["optimizer"]["state"][0]["momentum_buffer"],
    )


def test_the_learned_step_size_trains_the_evaluation_in_train_and_evaluate(
    tmp_path: Path, experts_root
) -> None:
    run = tmp_path / "run"
    args = mtt_run(experts_root, "iterations=2", "eval.epochs=2", "dataset.zca=true")
    result = train(*args, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    record = read_synthetic(run)
    assert record["zca"] is not None and record["config"]["eval"]["protocol"] == "mtt"
    trained = json.loads((run / "results.json").read_text())
    assert trained["learned_lr"] == record["lr"]
    again = evaluate(f"condensed={run}", "eval.protocol=mtt", "eval.epochs=2", "eval.num_models=1",
                     "model.width=8", f"hydra.run.dir={tmp_path / 'ev'}")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    scored = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert scored["results"]["mtt"] == trained["results"]["mtt"]


def test_a_method_without_a_step_size_under_eval_protocol_mtt_stops_in_one_line(tmp_path) -> None:
    result = train(*tiny("eval.protocol=mtt", f"hydra.run.dir={tmp_path}"))
    assert result.returncode == 2
    assert len(result.error_lines) == 1 and "learned step size" in result.error_lines[0]


def tiny_mtt(**knobs) -> TrajectoryMatching:
    net = build_model("convnet", 1, 2, 4, width=4, depth=1)
    size = sum(p.numel() for p in net.parameters())
    expert = {"trajectory": torch.zeros(3, size), "names": [n for n, _ in net.named_parameters()]}
    return TrajectoryMatching(
        net, NoAugment(), torch.zeros(2, 1, 4, 4), 2, Normaliser([0.5], [0.25]),
        experts=[expert], **{"expert_epochs": 1, "max_start_epoch": 2, **knobs},
    )  # fmt: skip


def test_mtt_refuses_ddp_in_one_line_and_experts_too_short_for_its_window() -> None:
    module = tiny_mtt()
    module.trainer = SimpleNamespace(world_size=2, strategy=None)
    with pytest.raises(ConfigError) as error:
        module.on_fit_start()
    assert str(error.value).startswith("method=mtt runs on one process: the unroll trains on")
    with pytest.raises(ConfigError, match="reach epoch 3, but the experts have 2 epochs"):
        tiny_mtt(max_start_epoch=2, expert_epochs=2)


def test_a_start_window_beyond_the_experts_stops_before_any_expert_is_trained(tmp_path) -> None:
    result = train(*tiny("method=mtt", f"experts.root={tmp_path / 'experts'}",
                         "experts.build=auto", f"hydra.run.dir={tmp_path / 'run'}"))  # fmt: skip
    assert result.returncode == 2 and len(result.error_lines) == 1
    assert "reach expert epoch 27, but experts.epochs=4" in result.error_lines[0]
    assert not (tmp_path / "experts").exists()
