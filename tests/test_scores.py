"""Soft labels (eval.labels=soft), the robust scores (scores=[lrs,ars]) and the learning-rate
search (eval.lr_search) of `python -m dmcondense.evaluate`, on the session's tiny run."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from helpers.inprocess import evaluate, watch_test_split

from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.protocol import Protocol, soft_epochs
from dmcondense.evaluation.score import train_networks
from dmcondense.evaluation.soft import corrected_soft_targets

TINY = ["model.width=8", "eval.epochs=2", "eval.num_models=1", "whole_epochs=1"]
MNIST = Normaliser([0.1307], [0.3081])


def test_soft_targets_keep_right_rows_and_replace_wrong_ones_by_one_hot_logits() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 0])  # the second row's top class (1) is wrong
    got = corrected_soft_targets(logits, labels, temperature=2.0)
    assert torch.allclose(got[0], F.softmax(torch.tensor([1.0, 0.0, -0.5]), dim=0))
    # the authors' correction sets the logits to the one-hot vector, then takes the softmax
    assert torch.allclose(got[1], F.softmax(torch.tensor([0.5, 0.0, 0.0]), dim=0))


def test_soft_labels_train_all_but_the_last_twentieth_of_the_epochs() -> None:
    assert soft_epochs(Protocol(epochs=2000, labels="soft")) == 1900  # NCFM's last 100 hard
    assert soft_epochs(Protocol(epochs=40, labels="soft")) == 38
    assert soft_epochs(Protocol(epochs=40)) == 0


class FixedTeacher(torch.nn.Module):
    """Logits `scale` x one-hot of the class it is told each image has (by its first pixel)."""

    def __init__(self, classes_by_image: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.classes, self.scale = classes_by_image, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = x[:, 0, 0, 0].round().long()  # the image's number, painted in
        return self.scale * F.one_hot(self.classes[index], 3).float() + 0 * self.weight


def tiny_set():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(12, 1, 8, 8, generator=g)
    images[:, 0, 0, 0] = torch.arange(12).float()
    labels = torch.arange(12) % 3
    test_images = torch.randint(0, 256, (9, 1, 8, 8), dtype=torch.uint8, generator=g)
    return images, labels, test_images, torch.arange(9) % 3


@pytest.mark.parametrize("backend", ["loop", "vmap", "ensemble"])
def test_a_teacher_that_agrees_with_the_labels_trains_as_hard_labels(backend) -> None:
    images, labels, test_images, test_labels = tiny_set()
    kwargs = dict(num_models=2, seed=0, normaliser=MNIST, backend=backend,
                  model_kwargs={"width": 4, "depth": 1}, num_classes=3)  # fmt: skip
    hard = Protocol(epochs=6, batch_size=4, augment="none", lr=0.1)
    soft = Protocol(epochs=6, batch_size=4, augment="none", lr=0.1, labels="soft")
    agrees = FixedTeacher(labels, scale=100.0)  # softmax is one-hot to float precision
    disagrees = FixedTeacher((labels + 1) % 3, scale=100.0)  # every row is corrected ...
    a = train_networks("convnet", images, labels, test_images, test_labels, protocol=hard,
                       **kwargs)  # fmt: skip
    b = train_networks("convnet", images, labels, test_images, test_labels, protocol=soft,
                       teacher=agrees, **kwargs)  # fmt: skip
    assert torch.allclose(a, b)
    # ... to softmax(one-hot): a soft target, so the networks train differently
    soft_wide = Protocol(epochs=6, batch_size=4, augment="none", lr=0.1, labels="soft",
                         temperature=0.5)  # fmt: skip
    c = train_networks("convnet", images, labels, test_images, test_labels, protocol=soft_wide,
                       teacher=disagrees, **kwargs)  # fmt: skip
    loop = train_networks("convnet", images, labels, test_images, test_labels,
                          protocol=soft_wide, teacher=disagrees,
                          **{**kwargs, "backend": "loop"})  # fmt: skip
    assert torch.allclose(c, loop, atol=1e-6)  # every trainer reads the soft targets alike


def test_lrs_and_ars_from_the_recorded_accuracies_and_the_whole_data_cache(
    tiny_run, tmp_path
) -> None:
    whole = tmp_path / "whole"
    out = tmp_path / "eval"
    args = [f"condensed={tiny_run.run_dir}", *TINY, "scores=[lrs,ars]",
            f"eval.whole_root={whole}"]  # fmt: skip
    result = evaluate(*args, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    announced = [line for line in result.stdout.splitlines() if "is not cached" in line]
    assert len(announced) == 1 and "about" in announced[0] and str(whole) in announced[0]
    summary = json.loads((out / "results.json").read_text())
    assert summary["labels"] == "hard"
    results = summary["results"]
    assert set(results) == {"dm", "random", "dm:hard", "whole:hard", "dm:noaug", "random:noaug"}

    def frac(name: str) -> float:
        return results[name]["convnet"]["mean"] / 100

    lrs = summary["scores"]["convnet"]["lrs"]
    assert lrs["hlr"] == pytest.approx(frac("whole:hard") - frac("dm:hard"), abs=1e-4)
    assert lrs["ior"] == pytest.approx(frac("dm") - frac("random"), abs=1e-4)
    alpha = 0.5 * lrs["ior"] - 0.5 * lrs["hlr"]
    e = math.e
    assert lrs["lrs"] == pytest.approx((math.exp(alpha) - 1 / e) / (e - 1 / e), abs=1e-5)
    ars = summary["scores"]["convnet"]["ars"]
    beta = 0.5 * (frac("dm") - frac("random")) + 0.5 * (frac("dm:noaug") - frac("random:noaug"))
    assert ars["beta"] == pytest.approx(beta, abs=1e-4)
    assert 0 <= lrs["lrs"] <= 1 and 0 <= ars["ars"] <= 1
    with open(out / "results.csv") as f:
        rows = {(row["set"], row["architecture"]): row for row in csv.DictReader(f)}
    assert float(rows[("lrs", "convnet")]["mean"]) == lrs["lrs"]
    assert rows[("lrs.hlr", "convnet")]["unit"] == "fraction"
    assert rows[("dm", "convnet")]["unit"] == "percent"
    # A second run reads the cache: the same whole-data accuracy, no training announced.
    again = evaluate(*args, "scores=[lrs]", f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not any("is not cached" in line for line in again.stdout.splitlines())
    cached = json.loads((tmp_path / "again" / "results.json").read_text())["results"]
    assert cached["whole:hard"] == results["whole:hard"]


@pytest.mark.parametrize("leak", [False, True])
def test_the_learning_rate_search_never_reads_the_test_split(tiny_run, tmp_path, leak) -> None:
    out = tmp_path / "eval"
    with watch_test_split(leak=leak) as watched:
        result = evaluate(f"condensed={tiny_run.run_dir}", *TINY, "eval.lr_search=[0.001,0.1]",
                          f"hydra.run.dir={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert watched["reads_after"]  # the final scoring does read it
    if leak:  # the watch catches a search handed the test split
        assert watched["reads_while_choosing"]
        return
    assert watched["reads_while_choosing"] == []
    searched = json.loads((out / "results.json").read_text())["lr_search"]["dm"]
    assert searched["chosen"] in (0.001, 0.1)
    assert set(searched["holdout_accuracy"]) == {"0.001", "0.1"}
    assert searched["holdout_images"] == 400  # a tenth of each class of the 4,000


def test_soft_labels_need_a_pool_or_build_it(tiny_run, tmp_path) -> None:
    pools = tmp_path / "pools"
    args = [f"condensed={tiny_run.run_dir}", *TINY, "eval.labels=soft", f"pool.root={pools}",
            "pool.epochs=1"]  # fmt: skip
    missing = evaluate(*args, f"hydra.run.dir={tmp_path / 'a'}")
    assert missing.returncode != 0
    line = missing.error_lines[-1]
    assert line.startswith("error: the pretrained pool for mnist_sample and convnet")
    assert "python -m dmcondense.pretrain" in line and "pool.size=1" in line
    built = evaluate(*args, "pool.build=auto", f"hydra.run.dir={tmp_path / 'b'}")
    assert built.returncode == 0, built.stderr[-2000:]
    summary = json.loads((tmp_path / "b" / "results.json").read_text())
    assert summary["labels"] == "soft"
    assert summary["evaluation"]["architectures"]["convnet"]["labels"] == "soft"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["scores=[lrs,fid]"], "error: unknown score 'fid'; choose scores from lrs, ars"),
        (["eval.labels=medium"], "error: unknown eval.labels 'medium'; choose one of hard, soft"),
        (["eval.lr_search=[0.01,-1]"], "error: eval.lr_search holds -1; give positive"),
        (["scores=lrs", "eval.whole=never"], "error: scores=[lrs] needs the whole-data accuracy"),
    ],
)
def test_bad_scores_labels_and_rates_answer_in_one_line(
    tiny_run, tmp_path, overrides, expected
) -> None:
    result = evaluate(f"condensed={tiny_run.run_dir}", *TINY, *overrides,
                      f"eval.whole_root={tmp_path / 'empty'}",
                      f"hydra.run.dir={tmp_path / 'eval'}")  # fmt: skip
    assert result.returncode != 0
    assert result.error_lines[-1].startswith(expected)


def test_soft_targets_change_what_a_network_learns() -> None:
    from dmcondense.evaluation.sequential import train_network
    from dmcondense.models.init import reset_parameters
    from dmcondense.models.registry import build_model
    from dmcondense.rng import generator

    images, labels, _, _ = tiny_set()
    protocol = Protocol(epochs=3, batch_size=4, augment="none", lr=0.1, labels="soft")

    def weights(soft: torch.Tensor | None) -> torch.Tensor:
        net = reset_parameters(build_model("convnet", 1, 3, 8, width=4, depth=1),
                               generator(0, "test-soft-net"))  # fmt: skip
        train_network(net, images, labels, protocol=protocol, seed=0, index=0,
                      normaliser=MNIST, soft_targets=soft)  # fmt: skip
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    hard_like = F.one_hot(labels, 3).float()
    assert torch.allclose(weights(None), weights(hard_like), atol=1e-6)
    assert not torch.allclose(weights(None), weights(torch.full((12, 3), 1 / 3)), atol=1e-3)
