"""The GPU paths, pinned on the CPU (issue 35; docs/howto/gpu-acceptance.md): where the final
scoring runs, which GPU a process uses, one process at a time for downloads and pools, no
host-device sync in a step or an evaluation epoch, one round of real images at a time, and every
rank stopping on a non-finite set."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers.hostsync import HostSyncs
from helpers.inprocess import evaluation_device, extra_callbacks, tiny, train
from omegaconf import OmegaConf

from dmcondense.data.normalise import Normaliser
from dmcondense.errors import NonFiniteLossError
from dmcondense.evaluation.batched import VmapStack, train_stack
from dmcondense.evaluation.protocol import idc_protocol, make_augmenter
from dmcondense.evaluation.sequential import train_network
from dmcondense.glue.callbacks import SyntheticWriter
from dmcondense.models.convnet import ConvNet

SENTINEL = torch.device("cpu", 0)  # a CPU device that module.device (plain "cpu") never is


def test_final_scoring_runs_on_the_jobs_evaluation_device(tmp_path: Path) -> None:
    """Lightning's teardown moves the module to the CPU when fit ends: the final scoring must
    use the job's evaluation device, and results.json says which it was."""
    with evaluation_device(SENTINEL) as received:
        run = train(*tiny(), f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert received == [SENTINEL]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["evaluation"]["device"] == str(SENTINEL)


# --- finding 7: which GPU, and one process at a time -------------------------------------------
def gpu_config(devices: object) -> OmegaConf:
    return OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": devices}})


@pytest.mark.parametrize(
    ("devices", "env", "expected"),
    [
        (1, {}, "cuda:0"),
        ([3], {}, "cuda:3"),
        ("2,5", {"LOCAL_RANK": "1"}, "cuda:5"),
        ([1, 2], {"SLURM_LOCALID": "1"}, "cuda:2"),
        (4, {"LOCAL_RANK": "2"}, "cuda:2"),
    ],
)
def test_evaluation_device_is_this_processs_gpu(
    monkeypatch, devices: object, env: dict, expected: str
) -> None:
    from helpers.inprocess import build_job

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert str(build_job.eval_device(gpu_config(devices))) == expected


def locked_by_another(folder: Path) -> bool:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_pool_is_built_by_one_process_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """Every rank of a SLURM job runs the job's pre-fit code: the pool's training holds a lock,
    so one rank builds and the others wait, then find it built."""
    from dmcondense.jobs import pretrain as pretrain_job

    seen = []

    def build_pool(pool, **kwargs):
        seen.append(pool.folder.is_dir() and locked_by_another(pool.folder))  # its key's folder
        raise Stop  # the rest of the run is not this test's

    monkeypatch.setattr(pretrain_job, "build_pool", build_pool)
    with pytest.raises(Stop):
        train(
            *tiny(
                "method=ncfm", "pool.size=1", "pool.build=auto", f"pool.root={tmp_path / 'pools'}"
            ),
            f"hydra.run.dir={tmp_path / 'run'}",
        )
    assert seen == [True]


def test_experts_are_built_by_one_process_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """The experts, the pools' twin: under experts.build=auto every rank runs the pre-fit code,
    and one trains the experts while the others wait, then find them built."""
    from dmcondense.jobs import experts as experts_job

    seen = []

    def build_experts(store, **kwargs):
        seen.append(store.folder.is_dir() and locked_by_another(store.folder))  # its key's folder
        raise Stop  # the rest of the run is not this test's

    monkeypatch.setattr(experts_job, "build_experts", build_experts)
    with pytest.raises(Stop):
        train(
            *tiny(
                "method=mtt", "experts.size=1", "experts.epochs=2", "experts.build=auto",
                f"experts.root={tmp_path / 'experts'}", "method.max_start_epoch=1",
                "method.expert_epochs=1",
            ),
            f"hydra.run.dir={tmp_path / 'run'}",
        )  # fmt: skip
    assert seen == [True]


def test_download_is_made_by_one_process_at_a_time(tmp_path: Path) -> None:
    from dmcondense.data.download import downloading

    with downloading("thing", "https://example.invalid/thing", tmp_path, "thing.tar"):
        assert locked_by_another(tmp_path)


# --- finding 5: no host-device sync in a step ---------------------------------------------------
class Window(L.Callback):
    """Records the host syncs from the start of step `first` to the start of the next step (the
    step, the callbacks after it, Lightning's logging and progress), then stops the run."""

    def __init__(self, first: int = 1) -> None:
        self.first, self.mode = first, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.first:
            self.mode = HostSyncs()
            self.mode.__enter__()
        elif batch_idx == self.first + 1:
            self.mode.__exit__(None, None, None)
            raise Stop


class Stop(BaseException):
    pass


POOL = "{pool}"
METHODS = {
    "dm": [],
    "dc": ["method=dc", "method.outer_loop=2", "method.inner_loop=2", "method.batch_train=4"],
    "dsa": ["method=dsa", "method.outer_loop=2", "method.inner_loop=2", "method.batch_train=4"],
    "m3d": ["method=m3d"],
    "idm": ["method=idm", "method.initial_networks=2", "method.model_train_steps=1",
            "method.batch_train=8"],
    "ncfm": ["method=ncfm", "method.num_freqs=16", "pool.size=1", "pool.epochs=1",
             f"pool.root={POOL}", "pool.build=auto"],
    "dance": ["method=dance", "pool.size=1", "pool.epochs=1", f"pool.root={POOL}",
              "pool.build=auto"],
}  # fmt: skip
# What a method reads on the host once a step, by design; nothing else may sync.
# NCFM: its plateau scheduler compares the iteration's loss on the host.
ALLOWED: dict[str, list[tuple[str, str]]] = {"ncfm": [("sync", "TensorBase.__float__")]}


# DM and DSA in the default suite (DSA's inner loop holds the draws that synced); the rest slow.
@pytest.mark.parametrize(
    "method",
    [m if m in ("dm", "dsa") else pytest.param(m, marks=pytest.mark.slow) for m in METHODS],
)
def test_a_step_makes_no_host_sync(tmp_path: Path, method: str) -> None:
    window = Window(first=2)  # past the first steps' one-off work; not a progress-line step
    args = [a.replace(POOL, str(tmp_path / "pools")) for a in METHODS[method]]
    overrides = tiny("ipc=2", "iterations=40", "save_every=100", "log_images_every=100", *args)
    with extra_callbacks(window):
        try:
            run = train(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
        except Stop:
            run = None
    assert run is None, run.stderr[-3000:]
    found = list(zip(window.mode.events, window.mode.places, strict=True))
    assert window.mode.events == ALLOWED.get(method, []), found


def test_an_evaluation_epoch_makes_no_host_sync() -> None:
    """The sequential and the batched trainers' epochs, with DSA and CutMix on every batch (the
    test accuracy is read once a network, after its training: not here)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(20, 1, 8, 8, generator=g)
    labels = torch.arange(4).repeat_interleave(5)
    protocol = idc_protocol(epochs=2, dsa_strategy="crop_flip", cutmix_p=1.0)
    protocol = dataclasses.replace(protocol, batch_size=8)
    normaliser = Normaliser([0.5], [0.25])
    nets = [ConvNet(1, 4, 8, width=4, depth=1) for _ in range(2)]
    with HostSyncs() as sequential:
        train_network(nets[0], images, labels, protocol=protocol, seed=0, index=0,
                      normaliser=normaliser)  # fmt: skip
    stack = VmapStack(nets, images.device)
    with HostSyncs() as batched:
        train_stack(stack, [0, 1], images, labels, protocol=protocol, seed=0,
                    normaliser=normaliser, augmenter=make_augmenter(protocol),
                    num_classes=4)  # fmt: skip
    assert sequential.events == []
    assert batched.events == []


# --- finding 12: every rank stops on a non-finite set -------------------------------------------
def test_a_non_finite_set_stops_every_rank(tmp_path: Path) -> None:
    """A rank other than zero checks the pixels too, and the ranks agree through a reduce."""
    reduced = []
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: reduced.append(reduce_op) or t)
    trainer = SimpleNamespace(global_step=2, is_global_zero=False, strategy=strategy)
    module = SimpleNamespace(
        stored_normalised=lambda: torch.tensor([0.0, float("nan")]), lr_img=1.0
    )
    writer = SyntheticWriter(tmp_path, {}, every=2)
    with pytest.raises(NonFiniteLossError):
        writer.on_train_batch_end(trainer, module, None, None, 0)
    assert reduced == ["max"]


# --- finding 9: one round of real images at a time ----------------------------------------------
def test_gradient_matching_holds_one_rounds_real_images(tmp_path: Path, monkeypatch) -> None:
    """DC/DSA match `outer_loop` real batches a step: each round's images are gathered when the
    round needs them (the same draws), so a round's batch owns one round's bytes, not all."""
    from dmcondense.methods.gradient_matching import GradientMatching

    held, round_loss = [], GradientMatching.round_loss

    def recorded(self, net, step, round, classes, real):
        held.append((tuple(real.shape), real.untyped_storage().nbytes(), real.clone()))
        return round_loss(self, net, step, round, classes, real)

    monkeypatch.setattr(GradientMatching, "round_loss", recorded)
    rounds, batch_real = 3, 4
    run = train(*tiny("method=dc", f"method.outer_loop={rounds}", "method.inner_loop=1",
                      "iterations=1", f"batch_real={batch_real}", "eval.num_models=1"),
                f"hydra.run.dir={tmp_path}")  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    one_round = (10, batch_real, 1, 28, 28)  # mnist_sample: 10 classes of 1 x 28 x 28
    assert [shape for shape, _, _ in held] == [one_round] * rounds
    assert [nbytes for _, nbytes, _ in held] == [math.prod(one_round)] * rounds  # uint8
    assert not torch.equal(held[0][2], held[1][2])  # each round its own draw


# --- finding 6: DDP ranks wait for rank zero's scoring outside their collectives ----------------
@pytest.mark.slow
def test_ddp_ranks_wait_for_a_periodic_evaluation_longer_than_the_timeout(
    tmp_path: Path, monkeypatch
) -> None:
    """Rank 0 scores for longer than the process group's timeout (cut to 2 s once training
    starts; the scoring made 2 s longer still) while rank 1 would wait in its next step's
    all-reduce; the run ends, with the images of one process."""
    from helpers.inprocess import other_ranks_as_processes
    from helpers.short_timeout import TIMEOUT, ShortTimeout

    from dmcondense.glue.periodic_evaluation import PeriodicEvaluation
    from dmcondense.io import load_synthetic

    evaluate = PeriodicEvaluation.evaluate

    def slow_evaluate(self, trainer, module):  # rank 0 runs in this process
        time.sleep(TIMEOUT.total_seconds() + 2)
        return evaluate(self, trainer, module)

    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]))
    args = tiny("ipc=2", "iterations=2")
    single = train(*args, f"hydra.run.dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr[-2000:]
    monkeypatch.setattr(PeriodicEvaluation, "evaluate", slow_evaluate)
    with extra_callbacks(ShortTimeout()), other_ranks_as_processes("helpers.short_timeout"):
        ddp = train(*args, "eval.every=1", "trainer=ddp_cpu", "trainer.devices=2",
                    f"hydra.run.dir={tmp_path / 'two'}")  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    (one, _), (two, _) = load_synthetic(tmp_path / "one"), load_synthetic(tmp_path / "two")
    torch.testing.assert_close(two.tensors[0], one.tensors[0], atol=1e-5, rtol=0)


def test_ddp_sums_the_logged_loss_only_on_the_steps_the_logger_writes() -> None:
    """Lightning's sync_dist reduce waits in a barrier on the host: under DDP the loss is summed
    over the ranks on the logger's steps only (every step on one process, with no sync)."""
    from dmcondense.methods.base import CondensationMethod

    def logged(world_size: int, steps: range) -> list[tuple[int, bool]]:
        calls = []
        module = SimpleNamespace(trainer=SimpleNamespace(world_size=world_size,
                                                         log_every_n_steps=5))  # fmt: skip
        module.log = lambda name, value, **kw: calls.append((step, kw["sync_dist"]))
        for step in steps:
            module.trainer.global_step = step
            CondensationMethod.log_loss(module, torch.tensor(1.0))
        return calls

    assert logged(2, range(1, 11)) == [(5, True), (10, True)]
    assert logged(1, range(1, 4)) == [(1, False), (2, False), (3, False)]
