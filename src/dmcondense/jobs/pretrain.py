"""The pretrain job: train (or finish, or reuse) the pool of pretrained networks of a data set
and model (jobs/network_store.py), and say where it is; and the teacher soft labels read from
the pool."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.spec import DatasetSpec
from dmcondense.jobs import build, network_store
from dmcondense.models.pretrained import PretrainedPool, build_pool


def make_pool(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec, size: int | None = None
) -> tuple[PretrainedPool, int]:
    """(the pool, how many networks this call trained): the networks 0..size-1 (default
    pool.size) the folder lacks are trained on the data module's training split, on the
    trainer's device."""
    pool = build.pretrained_pool(cfg, spec)
    recipe = build.pool_recipe(cfg)
    trained = network_store.fill(
        cfg, dm, spec, pool, build_pool, recipe, recipe.augment, size, doing="pretraining"
    )
    return pool, trained


def teacher(cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec) -> nn.Module | None:
    """The teacher of eval.labels=soft and relabel (None under hard labels): the trained weights
    of network 0 of the run's pretrained pool, as the NCFM authors take theirs (and RDED's
    observer is). A missing network stops the run with the pretrain command, or under
    pool.build=auto is trained first."""
    if cfg.eval.get("labels", "hard") not in ("soft", "relabel"):
        return None
    build.check_pool(cfg)
    if cfg.pool.build == "auto":
        make_pool(cfg, dm, spec, size=1)
    pool = build.ready_pool(cfg, spec, count=1)
    net = build.embedding_network(cfg, spec)
    net.load_state_dict(pool.read(0)["trained"])
    return net.eval()


def run(cfg: DictConfig) -> Path:
    return network_store.run(cfg, "pool", make_pool, "pretrained networks")
