"""Turn a composed config into the run's objects: data, networks, augmentation, trainer.

Both entry points use these, so `train` and `evaluate` read a config the same way.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.imageset import ImageSet
from dmcondense.data.sources import SOURCES
from dmcondense.errors import ConfigError
from dmcondense.evaluation.protocol import Protocol
from dmcondense.models.registry import MODELS, build_model


def model_kwargs(cfg: DictConfig, name: str) -> dict:
    """Constructor knobs for `name`: the model group's knobs when it names the same family."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    family = model.pop("name")
    if name == family:
        return model
    if name.split("_")[0] == family.split("_")[0]:  # convnet <-> convnet_bn: same knobs but norm
        model.pop("norm", None)
        return model
    return {}


def embedding_network(cfg: DictConfig) -> torch.nn.Module:
    name = cfg.model.name
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    d = cfg.dataset
    try:
        net = build_model(name, d.channels, d.num_classes, d.image_size, **model_kwargs(cfg, name))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model {name}: {error}") from error
    if not hasattr(net, "embed"):
        raise ConfigError(f"model '{name}' has no embed(); use convnet or convnet_bn to condense")
    return net


def augmenter(cfg: DictConfig):
    try:
        return instantiate(cfg.augment)
    except Exception as error:  # Hydra wraps the constructor's ValueError/TypeError
        cause = error.__cause__ or error
        raise ConfigError(f"augment: {cause}") from error


def datamodule(cfg: DictConfig) -> ClassBatchDataModule:
    d = cfg.dataset
    if d.source not in SOURCES:
        raise ConfigError(
            f"unknown dataset.source '{d.source}'; choose one of {', '.join(SOURCES)}"
        )
    source_kwargs = {}
    if d.source == "imagefolder":
        source_kwargs = {"image_size": d.image_size, "strict": bool(cfg.get("strict", False))}
    root = d.get("path") or cfg.data_dir
    return ClassBatchDataModule(
        source=d.source,
        data_dir=str(Path(root).expanduser()),
        num_classes=d.num_classes,
        batch_real=cfg.batch_real,
        iterations=cfg.iterations,
        seed=cfg.seed,
        download=d.download,
        source_kwargs=source_kwargs,
    )


def protocol(cfg: DictConfig, epochs: int | None = None) -> Protocol:
    e = cfg.eval
    return Protocol(
        epochs=epochs or e.epochs,
        lr=e.lr,
        momentum=e.momentum,
        weight_decay=e.weight_decay,
        batch_size=e.batch_size,
        augment=e.augment,
    )


def fill_dataset_facts(cfg: DictConfig, train: ImageSet) -> None:
    """Class names and mean/std the config leaves null come from the data itself."""
    d = cfg.dataset
    if d.class_names is None:
        d.class_names = list(train.class_names)
    if d.mean is None or d.std is None:
        pixels = train.images.float().div(255).transpose(0, 1).flatten(1)  # [C, N*H*W]
        d.mean = [round(float(m), 4) for m in pixels.mean(1)]
        d.std = [round(float(s), 4) for s in pixels.std(1)]
    if len(d.mean) != train.images.shape[1] or d.channels != train.images.shape[1]:
        raise ConfigError(
            f"dataset.channels={d.channels} and {len(d.mean)} mean values, but the images have "
            f"{train.images.shape[1]} channels; fix the dataset config"
        )


def trainer(cfg: DictConfig, run_dir: Path, callbacks: list) -> L.Trainer:
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    return instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
