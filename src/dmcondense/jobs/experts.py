"""The experts job: train (or finish, or reuse) the expert trajectories of a data set and model
(jobs/network_store.py), and say where they are; and DATM's start from the real images the
experts classify correctly."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.spec import DatasetSpec
from dmcondense.errors import ConfigError
from dmcondense.jobs import build, network_store
from dmcondense.methods.datm_parts import correct_only_indices
from dmcondense.methods.mtt import flat_forward
from dmcondense.models.experts import ExpertStore, build_experts, expert_bytes
from dmcondense.rng import generator


def make_experts(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec, size: int | None = None
) -> tuple[ExpertStore, int]:
    """(the store, how many experts this call trained): the experts 0..size-1 (default
    experts.size) the folder lacks are trained on the data module's training split, on the
    trainer's device."""
    store = build.expert_store(cfg, spec)
    recipe = build.expert_recipe(cfg)
    augment = None if recipe.augment == "none" else recipe.augment
    trained = network_store.fill(
        cfg, dm, spec, store, build_experts, recipe, augment, size, doing="training experts"
    )
    return store, trained


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
    train = network_store.training_split(dm, "init=correct")
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


def snapshot_bytes(cfg: DictConfig, spec: DatasetSpec) -> str:
    """The end of the job's summary: what one expert costs on disk."""
    epochs = int(cfg.experts.epochs)
    per_expert = expert_bytes(build.embedding_network(cfg, spec), epochs)
    return f"; {per_expert / 1e6:.2f} MB an expert ({epochs + 1} snapshots)"


def run(cfg: DictConfig) -> Path:
    return network_store.run(cfg, "experts", make_experts, "experts", snapshot_bytes)
