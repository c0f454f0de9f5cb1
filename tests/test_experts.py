"""Expert trajectories (python -m dmcondense.experts): a killed run resumes with the experts it
lacks and ends with the trajectories an unbroken run writes; a truncated file stops in one line
naming it; finished experts are reused; what making each expert cost is kept beside it, and the
job's results.json reports it whether the experts were made now or by an earlier job (a garbled
record reads as unknown and stops nothing); the job refuses bad sizes in one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.inprocess import experts

from dmcondense.errors import ConfigError
from dmcondense.models import experts as expert_module
from dmcondense.models import network_store as store_module
from dmcondense.models.experts import (
    ExpertRecipe,
    ExpertStore,
    build_experts,
    expert_bytes,
    experts_manifest,
)
from dmcondense.models.registry import build_model

RECIPE = ExpertRecipe(epochs=2, batch_size=8)
DATASET = {"name": "tiny", "channels": 1, "image_size": 8, "num_classes": 4, "zca": None}
KNOBS = {"width": 4, "depth": 1}


def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 8, 8), generator=g, dtype=torch.uint8)
    return images, torch.arange(24) % 4


def make_network() -> torch.nn.Module:
    return build_model("convnet", 1, 4, 8, **KNOBS)


def shift(images: torch.Tensor, g: torch.Generator, one_family: bool = False) -> torch.Tensor:
    """A stand-in augmentation that draws from its generator."""
    return images + 0.01 * torch.randn(images.shape, generator=g)


def store_in(folder: Path) -> ExpertStore:
    return ExpertStore(folder, experts_manifest(DATASET, "convnet", KNOBS, RECIPE, seed=0))


def build(store: ExpertStore, size: int) -> int:
    images, labels = tiny_data()
    return build_experts(store, make_network, size, images, labels, lambda x: x.float() / 255,
                         shift, RECIPE, seed=0, log=lambda line: None)  # fmt: skip


def test_a_killed_experts_run_resumes_and_gives_the_same_trajectories(
    tmp_path: Path, monkeypatch
) -> None:
    real = expert_module.train_expert
    calls = []

    def killed_in_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while training expert 1
        return real(*args, **kwargs)

    monkeypatch.setattr(expert_module, "train_expert", killed_in_the_second)
    stopped = store_in(tmp_path / "stopped")
    with pytest.raises(KeyboardInterrupt):
        build(stopped, 3)
    assert stopped.finished() == [0]  # the finished expert was written as it finished
    assert not list(stopped.folder.glob("*.tmp"))
    monkeypatch.setattr(expert_module, "train_expert", real)
    assert build(stopped, 3) == 2
    whole = store_in(tmp_path / "whole")
    build(whole, 3)
    for a, b in zip(stopped.trajectories(3), whole.trajectories(3), strict=True):
        assert torch.equal(a["trajectory"], b["trajectory"])
    first = whole.trajectories(1)[0]
    net = make_network()
    assert first["trajectory"].shape == (
        RECIPE.epochs + 1,
        sum(p.numel() for p in net.parameters()),
    )
    assert first["names"] == [n for n, _ in net.named_parameters()]
    assert not torch.equal(first["trajectory"][0], first["trajectory"][-1])  # it trained
    assert expert_bytes(net, RECIPE.epochs) == first["trajectory"].numel() * 4
    assert build(whole, 3) == 0  # finished experts are reused


def test_a_truncated_expert_stops_with_one_line_naming_it(tmp_path: Path) -> None:
    store = store_in(tmp_path / "experts")
    build(store, 2)
    path = store.network_path(1)
    path.write_bytes(path.read_bytes()[:100])
    before = {p.name: p.read_bytes() for p in store.folder.iterdir()}
    with pytest.raises(ConfigError, match="expert_001.pt is unreadable") as error:
        build(store, 3)
    assert "\n" not in str(error.value) and "experts command" in str(error.value)
    assert {p.name: p.read_bytes() for p in store.folder.iterdir()} == before


def test_what_making_each_expert_cost_is_kept_beside_it_and_a_garbled_record_stops_nothing(
    tmp_path: Path,
) -> None:
    store = store_in(tmp_path / "experts")
    build(store, 2)
    assert sorted(p.name for p in store.folder.glob("*.cost.json")) == [
        "expert_000.cost.json",
        "expert_001.cost.json",
    ]
    first = store.making_cost(0)
    assert set(first) == {"seconds", "peak_mib"} and first["peak_mib"] > 0
    store.cost_path(1).write_text('{"index": 1, "seco')  # truncated
    assert store.making_cost(1) is None
    assert build(store, 3) == 1  # the build reads no cost: it trains the missing expert only
    assert store.making_total(3) == {"seconds": None, "peak_mib": None, "unrecorded": [1]}
    store.cost_path(2).write_text('{"index": 0, "seconds": 5.0, "peak_mib": 10.0}\n')
    assert store.making_cost(2) is None  # another member's record is not this one's
    store.cost_path(2).write_text('{"index": 2, "seconds": "5", "peak_mib": 10.0}\n')
    assert store.making_cost(2) is None
    assert len(store.trajectories(3)) == 3  # the run reads its experts as before


def tick_clock(step: float) -> SimpleNamespace:
    """A clock that moves `step` seconds at every reading."""
    now = [0.0]

    def read() -> float:
        now[0] += step
        return now[0]

    return SimpleNamespace(time=read)


def test_a_second_experts_job_reports_what_making_the_experts_cost_not_checking_them(
    tmp_path: Path, monkeypatch
) -> None:
    job = ["model.width=8", "experts.size=2", "experts.epochs=1", "experts.augment=none",
           f"experts.root={tmp_path / 'experts'}"]  # fmt: skip
    # Each expert reads the clock as it starts and as its training ends: 1000 s an expert.
    monkeypatch.setattr(store_module, "time", tick_clock(1000.0))
    made = experts(*job, f"hydra.run.dir={tmp_path / 'made'}")
    assert made.returncode == 0, made.stderr
    first = json.loads((tmp_path / "made" / "results.json").read_text())
    assert (first["size"], first["trained_now"], first["reused"]) == (2, 2, 0)
    assert first["making_seconds"] == 2000.0 and first["unrecorded"] == []
    assert first["making_peak_mib"] > 0 and first["job_peak_mib"] >= first["making_peak_mib"]
    monkeypatch.undo()
    again = experts(*job, f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr
    second = json.loads((tmp_path / "again" / "results.json").read_text())
    assert (second["trained_now"], second["reused"]) == (0, 2)
    assert (
        second["folder"]
        == first["folder"]
        == again.stdout.strip().splitlines()[-1].split(": ", 1)[1]
    )
    assert second["making_seconds"] == 2000.0  # the making, not this job's few seconds
    assert second["making_peak_mib"] == first["making_peak_mib"]
    assert second["job_seconds"] < 1000.0
    # A store made before the records were kept: its making cost is unknown, not zero.
    for path in Path(first["folder"]).glob("*.cost.json"):
        path.unlink()
    old = experts(*job, f"hydra.run.dir={tmp_path / 'old'}")
    assert old.returncode == 0, old.stderr
    third = json.loads((tmp_path / "old" / "results.json").read_text())
    assert third["making_seconds"] is None and third["making_peak_mib"] is None
    assert third["unrecorded"] == [0, 1]


def test_batchnorm_experts_keep_their_running_statistics(tmp_path: Path) -> None:
    store = ExpertStore(tmp_path, experts_manifest(DATASET, "convnet_bn", KNOBS, RECIPE, seed=0))
    images, labels = tiny_data()
    bn = lambda: build_model("convnet_bn", 1, 4, 8, **KNOBS)  # noqa: E731
    unit = lambda x: x.float() / 255  # noqa: E731
    build_experts(store, bn, 1, images, labels, unit, None, RECIPE, seed=0, log=lambda line: None)
    record = store.trajectories(1)[0]
    assert record["buffers"].shape[0] == RECIPE.epochs + 1
    assert not torch.equal(record["buffers"][0], record["buffers"][-1])


def test_the_experts_job_refuses_a_size_of_zero_in_one_line(tmp_path: Path) -> None:
    result = experts("experts.size=0", f"experts.root={tmp_path}",
                     f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: experts.size must be 1 or more, got 0; set experts.size=N"
    ]


def test_a_job_with_its_experts_built_does_not_wait_for_another_key_being_built(
    tmp_path: Path, monkeypatch
) -> None:
    """Ranks of one job take turns at one folder; jobs for different keys (another recipe, data
    set or width) under the same root do not wait on each other: a job whose experts are all
    there reads them at once while another key trains for an hour."""
    import threading
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from dmcondense.jobs import network_store

    images, labels = tiny_data()
    monkeypatch.setattr(
        network_store, "load_test", lambda dm, dataset: SimpleNamespace(images=None, labels=None)
    )
    monkeypatch.setattr(network_store.build, "eval_device", lambda cfg: "cpu")
    cfg = OmegaConf.create({"experts": {"size": 1, "seed": 0}, "dataset": {}})
    dm = SimpleNamespace(train_set=SimpleNamespace(images=images, labels=labels))
    spec = SimpleNamespace(normaliser=SimpleNamespace(to_input_fused=None))
    inside, release = threading.Event(), threading.Event()

    def training(store, **_):
        inside.set()
        release.wait(timeout=60)
        return 1

    def fill(folder: str, build_members) -> threading.Thread:
        store = ExpertStore(
            tmp_path / folder, experts_manifest(DATASET, "convnet", KNOBS, RECIPE, 0)
        )
        thread = threading.Thread(
            target=network_store.fill,
            args=(cfg, dm, spec, store, build_members, RECIPE, None, 1, "the experts job"),
        )
        thread.start()
        return thread

    other = fill("other-key", training)
    try:
        assert inside.wait(timeout=30)
        ready = fill("ready-key", lambda store, **_: 0)
        ready.join(timeout=10)
        assert not ready.is_alive(), "a job waited on another key's build"
    finally:
        release.set()
        other.join(timeout=30)
