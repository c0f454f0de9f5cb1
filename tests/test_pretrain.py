"""Pretrained pools: a finished pool is reused, a stopped one resumes with the networks it lacks
(and ends as an unbroken one does), bad folders and sizes get one line and nothing is
overwritten; the pretrain job says where the pool is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.inprocess import pretrain

from dmcondense.errors import ConfigError
from dmcondense.models import pretrained
from dmcondense.models.pretrained import PoolRecipe, PretrainedPool, build_pool, pool_manifest
from dmcondense.models.registry import build_model

RECIPE = PoolRecipe(epochs=2, batch_size=8, augment="color_crop", cutmix=0.5)
DATASET = {"name": "tiny", "channels": 1, "image_size": 8, "num_classes": 4}
KNOBS = {"width": 4, "depth": 1}


def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 8, 8), generator=g, dtype=torch.uint8)
    return images, torch.arange(24) % 4


def make_network() -> torch.nn.Module:
    return build_model("convnet", 1, 4, 8, **KNOBS)


def shift(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A stand-in augmentation that draws from its generator."""
    return images + 0.01 * torch.randn(images.shape, generator=g)


def pool_in(folder: Path, dataset: dict = DATASET) -> PretrainedPool:
    return PretrainedPool(folder, pool_manifest(dataset, "convnet", KNOBS, RECIPE, seed=0))


def build(pool: PretrainedPool, size: int) -> int:
    images, labels = tiny_data()
    return build_pool(pool, make_network, size, images, labels, lambda x: x.float() / 255, shift,
                      RECIPE, seed=0, log=lambda line: None)  # fmt: skip


@pytest.fixture
def count_trainings(monkeypatch) -> list[int]:
    trained = []
    real = pretrained.train_network

    def counting(*args, **kwargs):
        trained.append(kwargs.get("index", args[-1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrained, "train_network", counting)
    return trained


def test_a_finished_pool_is_reused(tmp_path: Path, count_trainings) -> None:
    pool = pool_in(tmp_path / "pool")
    assert build(pool, 2) == 2 and count_trainings == [0, 1]
    written = {p.name: p.read_bytes() for p in pool.folder.iterdir()}
    assert set(written) == {"pool.json", "network_000.pt", "network_001.pt",
                            "network_000.cost.json", "network_001.cost.json"}  # fmt: skip
    assert build(pool, 2) == 0 and count_trainings == [0, 1]  # nothing trained again
    assert {p.name: p.read_bytes() for p in pool.folder.iterdir()} == written
    pairs = pool.load(2)
    assert len(pairs) == 2
    initial, trained = pairs[0]
    assert set(initial) == set(make_network().state_dict())
    assert not torch.equal(initial["classifier.weight"], trained["classifier.weight"])
    assert not torch.equal(pairs[0][0]["classifier.weight"], pairs[1][0]["classifier.weight"])


def test_a_stopped_pool_resumes_with_the_networks_it_lacks(tmp_path: Path, monkeypatch) -> None:
    real = pretrained.train_network
    calls = []

    def stopped_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while training network 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pretrained, "train_network", stopped_at_the_second)
    stopped = pool_in(tmp_path / "stopped")
    with pytest.raises(KeyboardInterrupt):
        build(stopped, 3)
    assert stopped.finished() == [0]  # the finished network was written as it finished
    assert not list(stopped.folder.glob("*.tmp"))

    trained = []
    monkeypatch.setattr(pretrained, "train_network",
                        lambda *a, **k: (trained.append(a[-1]), real(*a, **k)))  # fmt: skip
    assert build(stopped, 3) == 2 and trained == [1, 2]
    whole = pool_in(tmp_path / "whole")
    monkeypatch.setattr(pretrained, "train_network", real)
    build(whole, 3)
    for (a_init, a_trained), (b_init, b_trained) in zip(
        stopped.load(3), whole.load(3), strict=True
    ):
        for key in a_init:
            assert torch.equal(a_init[key], b_init[key])
            assert torch.equal(a_trained[key], b_trained[key])


def test_a_truncated_network_stops_with_one_line_and_nothing_is_overwritten(tmp_path: Path) -> None:
    pool = pool_in(tmp_path / "pool")
    build(pool, 2)
    path = pool.network_path(1)
    path.write_bytes(path.read_bytes()[:100])
    before = {p.name: p.read_bytes() for p in pool.folder.iterdir()}
    with pytest.raises(ConfigError, match="network_001.pt is unreadable") as error:
        build(pool, 3)
    assert "\n" not in str(error.value) and "truncated" in str(error.value)
    assert {p.name: p.read_bytes() for p in pool.folder.iterdir()} == before


def test_a_pool_of_another_data_set_stops_with_one_line(tmp_path: Path) -> None:
    build(pool_in(tmp_path / "pool"), 1)
    other = pool_in(tmp_path / "pool", {**DATASET, "name": "other"})
    before = {p.name: p.read_bytes() for p in other.folder.iterdir()}
    with pytest.raises(ConfigError, match=r"another pool: dataset.name \(this run: 'other'"):
        build(other, 2)
    assert {p.name: p.read_bytes() for p in other.folder.iterdir()} == before


def test_the_pretrain_job_reports_what_making_its_pool_cost(tmp_path: Path) -> None:
    job = ["model.width=8", "pool.size=1", "pool.epochs=1", f"pool.root={tmp_path / 'pools'}"]
    result = pretrain(*job, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    found = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (found["job"], found["size"], found["trained_now"], found["reused"]) == ("pool", 1, 1, 0)
    made = PretrainedPool(found["folder"], {}).making_cost(0)
    assert found["making_seconds"] == made["seconds"] and found["unrecorded"] == []
    assert found["making_peak_mib"] == made["peak_mib"]


def test_the_pretrain_job_refuses_a_size_of_zero_in_one_line(tmp_path: Path) -> None:
    result = pretrain("pool.size=0", f"pool.root={tmp_path}",
                      f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: pool.size must be 1 or more, got 0; set pool.size=N"
    ]


def test_the_pretrain_job_refuses_a_folder_made_for_another_model(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    manifest = {"format": 1, "dataset": {"name": "cifar10"}, "model": "convnet"}
    (folder / "pool.json").write_text(json.dumps(manifest))
    result = pretrain(f"pool.dir={folder}", "pool.size=1", "pool.epochs=1",
                      f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder / 'pool.json'} was made for")
    assert "dataset.channels" in lines[0]
    assert sorted(p.name for p in folder.iterdir()) == ["pool.json"]
