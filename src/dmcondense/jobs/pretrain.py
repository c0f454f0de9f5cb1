"""The pretrain job: train (or finish, or reuse) the pool of pretrained networks of a data set
and model, and say where it is.

The pool's folder is keyed by what made it (jobs/build.py: pretrained_pool); every network
already there is read and checked before any is trained, so a truncated file or a folder made
for another data set or model stops the job with one line and nothing is overwritten.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from dmcondense.atomic import exclusive
from dmcondense.augment import DSA
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.jobs import build
from dmcondense.jobs.common import load_data, load_test, quiet_library_chatter
from dmcondense.models.pretrained import PretrainedPool, build_pool


def make_pool(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec, size: int | None = None
) -> tuple:
    """(the pool, how many networks this call trained): the networks 0..size-1 (default
    pool.size) the folder lacks are trained on the data module's training split, on the
    trainer's device."""
    pool: PretrainedPool = build.pretrained_pool(cfg, spec)
    pool.check_all()  # before reading the data: a bad folder answers at once
    train = dm.train_set
    if not hasattr(train, "images"):
        raise ConfigError(
            "pretraining reads the training split into memory; set dataset.streaming=false"
        )
    test = load_test(dm, cfg.dataset)
    recipe = build.pool_recipe(cfg)
    try:
        augment = DSA(strategy=recipe.augment)
    except ValueError as error:
        raise ConfigError(f"pool.augment: {error}") from error
    # Every rank of a SLURM job (and each rank Lightning's launcher starts) runs the job's
    # pre-fit code: one trains the pool on its own GPU, the others wait, then find it built.
    with exclusive(pool.folder.parent):
        trained = build_pool(
            pool,
            make_network=lambda: build.embedding_network(cfg, spec),
            size=int(cfg.pool.size) if size is None else size,
            images=train.images,
            labels=train.labels,
            normalise=spec.normaliser.to_input_fused,
            augment=augment,
            recipe=recipe,
            seed=int(cfg.pool.seed),
            device=build.eval_device(cfg),
            test=(test.images, test.labels),
        )
    return pool, trained


def teacher(cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec) -> nn.Module | None:
    """The teacher of eval.labels=soft (None under hard labels): the trained weights of network
    0 of the run's pretrained pool, as the NCFM authors take theirs. A missing network stops the
    run with the pretrain command, or under pool.build=auto is trained first."""
    if cfg.eval.get("labels", "hard") != "soft":
        return None
    build.check_pool(cfg)
    if cfg.pool.build == "auto":
        make_pool(cfg, dm, spec, size=1)
    pool = build.ready_pool(cfg, spec, count=1)
    net = build.embedding_network(cfg, spec)
    net.load_state_dict(pool.read(0)["trained"])
    return net.eval()


def run(cfg: DictConfig) -> Path:
    started = time.time()
    build.check_pool(cfg)  # a bad size answers before the data loads
    quiet_library_chatter()
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    dm = load_data(cfg)
    spec = resolve_spec(cfg.dataset, dm.train_set)
    pool, trained = make_pool(cfg, dm, spec)
    size = int(cfg.pool.size)
    print(
        f"{size} pretrained networks ({trained} trained now, {size - trained} reused) in "
        f"{time.time() - started:.0f} s"
    )
    print(f"pool: {pool.folder}")
    return pool.folder
