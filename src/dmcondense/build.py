"""Turn a composed config into the run's objects: data, networks, augmentation, method, trainer.

Both entry points use these, so `train` and `evaluate` read a config the same way. Nothing here
edits the config.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.sources import SOURCES
from dmcondense.data.spec import DatasetSpec, configured_num_classes
from dmcondense.data.streaming import STREAMING_SOURCES, StreamingClassDataModule
from dmcondense.errors import ConfigError
from dmcondense.evaluation.protocol import Protocol, check_dsa_settings, dsa_augment
from dmcondense.evaluation.score import BACKENDS
from dmcondense.methods.base import CondensationMethod
from dmcondense.models.registry import MODELS, build_model, uses_batchnorm
from dmcondense.progress import StepLines
from dmcondense.progress import on_terminal as progress_on_terminal

EVAL_PROTOCOLS = ("dsa", "dc")


def model_knobs(cfg: DictConfig) -> dict:
    """The model group's constructor knobs (everything but its name)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("name")
    return model


def architectures(cfg: DictConfig) -> dict[str, dict]:
    """eval.models -> each one's constructor knobs, from eval.architectures."""
    known = cfg.eval.architectures
    unknown = [name for name in cfg.eval.models if name not in known]
    if unknown:
        raise ConfigError(
            f"unknown evaluation model '{unknown[0]}'; choose eval.models from {', '.join(known)}"
        )
    return {name: OmegaConf.to_container(known[name], resolve=True) for name in cfg.eval.models}


def eval_backend(cfg: DictConfig) -> str:
    if cfg.eval.backend not in BACKENDS:
        raise ConfigError(
            f"unknown eval.backend '{cfg.eval.backend}'; choose one of {', '.join(BACKENDS)}"
        )
    return cfg.eval.backend


def check_evaluation(cfg: DictConfig) -> None:
    """The eval group's choices, checked before anything runs (a typo answers before a long
    condensation rather than after it)."""
    eval_backend(cfg)
    architectures(cfg)
    check_dsa_settings(cfg.eval.dsa_family, cfg.eval.dsa_strategy)
    if cfg.eval.protocol not in EVAL_PROTOCOLS:
        raise ConfigError(
            f"unknown eval.protocol '{cfg.eval.protocol}'; choose one of "
            f"{', '.join(EVAL_PROTOCOLS)}"
        )


def eval_device(cfg: DictConfig) -> torch.device:
    """Where the evaluation networks train: the GPU when the trainer group asks for one."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA device is visible")
    return torch.device("cpu")


def embedding_network(cfg: DictConfig, spec: DatasetSpec) -> torch.nn.Module:
    name = cfg.model.name
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    shape = (spec.channels, spec.num_classes, spec.image_size)
    try:
        net = build_model(name, *shape, **model_knobs(cfg))
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


def method(cfg: DictConfig, spec: DatasetSpec, initial_images: torch.Tensor) -> CondensationMethod:
    """The `method` group's LightningModule, given what every method shares."""
    make = instantiate(cfg.method, _partial_=True)
    return make(
        embed_net=embedding_network(cfg, spec),
        augment=augmenter(cfg),
        initial_images=initial_images,
        num_classes=spec.num_classes,
        normaliser=spec.normaliser,
        lr_img=cfg.lr_img,
        momentum=cfg.momentum,
        seed=cfg.seed,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        factor=cfg.synthetic.factor,
    )


def datamodule(
    cfg: DictConfig, dataset: DictConfig | None = None, classes: list[int] | None = None
) -> ClassBatchDataModule:
    """In memory (uint8, moved once to the device), or with dataset.streaming=true read from
    disk step by step: only the sampled images are decoded, in dataset.num_workers workers.
    `dataset` replaces cfg.dataset (the evaluation job reads a saved set's data set); `classes`
    keeps those classes' training images only, relabelled 0.. in that order (continual steps)."""
    d = cfg.dataset if dataset is None else dataset
    if d.source not in SOURCES:
        raise ConfigError(
            f"unknown dataset.source '{d.source}'; choose one of {', '.join(SOURCES)}"
        )
    strict = bool(d.get("strict", False))
    source_kwargs = {}
    if d.source == "imagefolder":
        source_kwargs = {"image_size": d.image_size, "strict": strict}
    root = d.get("path") or cfg.data_dir
    common = {
        "source": d.source,
        "data_dir": str(Path(root).expanduser()),
        "num_classes": configured_num_classes(d),
        "batch_real": cfg.batch_real,
        "iterations": cfg.iterations,
        "seed": cfg.seed,
        "download": d.download,
        "source_kwargs": source_kwargs,
        "classes": classes,
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
        strict=strict,
    )


def protocols(cfg: DictConfig, spec: DatasetSpec, epochs: int | None = None) -> dict[str, Protocol]:
    """Each evaluated architecture's protocol (eval.protocol):
    dsa  the common protocol of the DSA and DM papers: eval.epochs (or `epochs`), DSA when
         eval.augment (families eval.dsa_strategy, one a batch or per image: eval.dsa_family)
    dc   as the DC paper scored its sets: 300 epochs without augmentation; MNIST 1,000 epochs
         with crop, scale and rotate; BatchNorm models 1,000 epochs with crop
    """
    check_evaluation(cfg)
    e = cfg.eval
    common = dict(lr=e.lr, momentum=e.momentum, weight_decay=e.weight_decay,
                  batch_size=e.batch_size)  # fmt: skip
    chosen = {}
    for name, knobs in architectures(cfg).items():
        if e.protocol == "dsa":
            augment = dsa_augment(e.dsa_family) if e.augment else "none"
            chosen[name] = Protocol(epochs=epochs or e.epochs, augment=augment,
                                    dsa_strategy=e.dsa_strategy, **common)  # fmt: skip
            continue
        shape = (spec.channels, spec.num_classes, spec.image_size)
        if uses_batchnorm(build_model(name, *shape, **knobs)):
            chosen[name] = Protocol(epochs=1000, augment="dc_batchnorm", **common)
        elif spec.name.startswith("mnist"):
            chosen[name] = Protocol(epochs=1000, augment="dc_mnist", **common)
        else:
            chosen[name] = Protocol(epochs=300, augment="none", **common)
    return chosen


def trainer(
    cfg: DictConfig,
    run_dir: Path,
    callbacks: list,
    logger_kwargs: dict | None = None,
    plugins: list | None = None,
) -> L.Trainer:
    """`logger_kwargs` go to the logger's constructor (W&B's offline mode); `plugins` to the
    Trainer (the checkpoint writer)."""
    logger = instantiate(cfg.logger, **(logger_kwargs or {})) if cfg.get("logger") else False
    # The bar reads the logged loss, a host-device sync: on a GPU refresh it every N steps.
    # Off a terminal (a log file), plain lines instead of a bar's carriage-return frames.
    progress = TQDMProgressBar(refresh_rate=cfg.get("progress_every", 1))
    on_terminal = progress_on_terminal()
    return instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=[*callbacks, progress if on_terminal else StepLines()],
        enable_progress_bar=on_terminal,
        plugins=plugins or [],
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
