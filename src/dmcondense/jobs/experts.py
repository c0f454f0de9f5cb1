"""The experts job: train (or finish, or reuse) the expert trajectories of a data set and model,
and say where they are.

The folder is keyed by what made the experts (jobs/build.py: expert_store); every expert already
there is read and checked before any is trained, so a truncated file or a folder made for another
data set or model stops the job with one line and nothing is overwritten.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from dmcondense.atomic import exclusive
from dmcondense.augment import DSA
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.jobs import build
from dmcondense.jobs.common import load_data, load_test, quiet_library_chatter
from dmcondense.methods.datm_parts import correct_only_indices, flat_forward
from dmcondense.models.experts import ExpertStore, build_experts, expert_bytes
from dmcondense.rng import generator


def make_experts(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec, size: int | None = None
) -> tuple[ExpertStore, int, float]:
    """(the store, how many experts this call trained, the seconds it took): the experts
    0..size-1 (default experts.size) the folder lacks are trained on the data module's training
    split, on the trainer's device."""
    store = build.expert_store(cfg, spec)
    store.check_all()  # before reading the data: a bad folder answers at once
    train = dm.train_set
    if not hasattr(train, "images"):
        raise ConfigError(
            "training experts reads the training split into memory; set dataset.streaming=false"
        )
    recipe = build.expert_recipe(cfg)
    augment = None
    if recipe.augment != "none":
        try:
            augment = DSA(strategy=recipe.augment)
        except ValueError as error:
            raise ConfigError(f"experts.augment: {error}") from error
    test = load_test(dm, cfg.dataset)
    started = time.time()
    # As for pools: every rank of a SLURM job runs the pre-fit code; one trains the experts on
    # its own GPU, the others wait, then find them built.
    with exclusive(store.folder.parent):
        trained = build_experts(
            store,
            make_network=lambda: build.embedding_network(cfg, spec),
            size=int(cfg.experts.size) if size is None else size,
            images=train.images,
            labels=train.labels,
            normalise=spec.normaliser.to_input_fused,
            augment=augment,
            recipe=recipe,
            seed=int(cfg.experts.seed),
            device=build.eval_device(cfg),
            test=(test.images, test.labels),
        )
    return store, trained, time.time() - started


def correct_initial_images(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """init=correct (DATM's samples_predicted_correctly): the stored set starts as the first ipc
    real images of each class, in a shuffle drawn from generator(seed, "init"), that the experts'
    last snapshots classify correctly (expert 0 first, the next ones only where a class lacks
    images; datm_parts.correct_only_indices); returns (normalised images, their indices)."""
    if not build.uses_experts(cfg):
        raise ConfigError(
            "init=correct starts from real images the experts classify correctly: use it with a "
            "method that has experts (method=datm or method=mtt), or init=real"
        )
    if int(cfg.synthetic.factor) != 1:
        raise ConfigError(
            "init=correct starts one real image a stored image: set synthetic.factor=1"
        )
    train = dm.train_set
    if not hasattr(train, "images"):
        raise ConfigError(
            "init=correct reads the training split into memory; set dataset.streaming=false"
        )
    experts = build.ready_experts(cfg, spec).trajectories(int(cfg.experts.size))
    device = build.eval_device(cfg)
    net = build.embedding_network(cfg, spec).to(device).eval()  # their labelling net: eval mode
    indices = correct_only_indices(
        flat_forward(net),
        [e["trajectory"][-1] for e in experts],
        train.images.to(device),
        train.labels,
        int(cfg.ipc),
        generator(cfg.seed, "init"),
        normalise=spec.normaliser.to_input_fused,
    )
    return spec.normaliser.to_input(dm.real_images(indices)), indices


def run(cfg: DictConfig) -> Path:
    started = time.time()
    build.check_experts(cfg)  # a bad size answers before the data loads
    quiet_library_chatter()
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    dm = load_data(cfg)
    spec = resolve_spec(cfg.dataset, dm.train_set)
    store, trained, _ = make_experts(cfg, dm, spec)
    size, epochs = int(cfg.experts.size), int(cfg.experts.epochs)
    per_expert = expert_bytes(build.embedding_network(cfg, spec), epochs)
    print(
        f"{size} experts ({trained} trained now, {size - trained} reused) in "
        f"{time.time() - started:.0f} s; {per_expert / 1e6:.2f} MB an expert "
        f"({epochs + 1} snapshots)"
    )
    print(f"experts: {store.folder}")
    return store.folder
