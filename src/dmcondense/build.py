"""Turn a composed config into the run's objects: data, networks, augmentation, trainer.

Both entry points use these, so `train` and `evaluate` read a config the same way.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.imageset import ImageSet
from dmcondense.data.sources import SOURCES
from dmcondense.data.statistics import channel_statistics, statistics_sample
from dmcondense.data.streaming import STREAMING_SOURCES, ImageFiles, StreamingClassDataModule
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
    """In memory (uint8, moved once to the device), or with dataset.streaming=true read from
    disk step by step: only the sampled images are decoded, in dataset.num_workers workers."""
    d = cfg.dataset
    if d.source not in SOURCES:
        raise ConfigError(
            f"unknown dataset.source '{d.source}'; choose one of {', '.join(SOURCES)}"
        )
    source_kwargs = {}
    if d.source == "imagefolder":
        source_kwargs = {"image_size": d.image_size, "strict": bool(cfg.get("strict", False))}
    root = d.get("path") or cfg.data_dir
    common = {
        "source": d.source,
        "data_dir": str(Path(root).expanduser()),
        "num_classes": d.num_classes,
        "batch_real": cfg.batch_real,
        "iterations": cfg.iterations,
        "seed": cfg.seed,
        "download": d.download,
        "source_kwargs": source_kwargs,
    }
    if not d.get("streaming", False):
        return ClassBatchDataModule(**common)
    if d.source not in STREAMING_SOURCES:
        raise ConfigError(
            f"dataset.streaming=true works for {' and '.join(STREAMING_SOURCES)}, not "
            f"'{d.source}' (it fits in memory); set dataset.streaming=false"
        )
    return StreamingClassDataModule(
        **common,
        channels=d.channels,
        image_size=d.image_size,
        num_workers=int(d.get("num_workers", 2)),
        strict=bool(cfg.get("strict", False)),
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


def fill_dataset_facts(cfg: DictConfig, train: ImageSet | ImageFiles) -> None:
    """Class names and mean/std the config leaves null come from the data itself."""
    d = cfg.dataset
    if d.class_names is None:
        d.class_names = list(train.class_names)
    if d.mean is None or d.std is None:  # from a fixed-seed sample of at most 2,000 images
        mean, std = channel_statistics(statistics_sample(train))
        d.mean = [round(m, 4) for m in mean]
        d.std = [round(s, 4) for s in std]
    channels = train.channels if isinstance(train, ImageFiles) else train.images.shape[1]
    if len(d.mean) != channels or d.channels != channels:
        raise ConfigError(
            f"dataset.channels={d.channels} and {len(d.mean)} mean values, but the images have "
            f"{channels} channels; fix the dataset config"
        )


def trainer(cfg: DictConfig, run_dir: Path, callbacks: list) -> L.Trainer:
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    # The bar reads the logged loss, a host-device sync: on a GPU refresh it every N steps.
    progress = TQDMProgressBar(refresh_rate=cfg.get("progress_every", 1))
    return instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=[*callbacks, progress],
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
