"""What the jobs share: quiet logs, loading the data, the initial images, choosing real images
(baselines and continual memories), the resolved config, and writing result tables."""

from __future__ import annotations

import csv
import io
import logging
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dmcondense.atomic import atomic_write_json
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.imageset import TrainingSplit
from dmcondense.data.spec import DatasetSpec, inferred_facts, resolve_spec
from dmcondense.errors import ConfigError
from dmcondense.evaluation.baselines import (
    embed_features,
    select_herding,
    select_kcenter,
    select_random,
    select_whole,
)
from dmcondense.io import atomic_write
from dmcondense.jobs import build
from dmcondense.rng import generator
from dmcondense.synthetic import SyntheticImages


def _not_an_advert(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


def quiet_library_chatter() -> None:
    """Lightning prints its INFO lines through its own stderr handler and again through Hydra's
    (console and train.log): keep Hydra's only, so stderr holds warnings and errors alone.
    Drop an advertising tip and a deprecation warning of Lightning's own internals."""
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if isinstance(handler, logging.StreamHandler):
                lightning_logger.removeHandler(handler)
    # The same function object each time: addFilter ignores a repeat (jobs of a sweep).
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_not_an_advert)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # Every method steps by hand (manual optimisation) and checkpoints the state after a step
    # on purpose: a resumed run starts the next step from it.
    warnings.filterwarnings(
        "ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps"
    )
    # The run folder always holds Hydra's record, so the CSV logger's "not empty" notice is noise.
    warnings.filterwarnings(
        "ignore", message=r"Experiment logs directory .* exists and is not empty"
    )


def dataset_spec(cfg: DictConfig, train: TrainingSplit) -> DatasetSpec:
    """The run's frozen data set facts; when the config left some open (an image folder's
    classes, channels, mean and std), one line says what the images gave."""
    spec = resolve_spec(cfg.dataset, train)
    line = inferred_facts(cfg.dataset, spec)
    if line:
        print(line, flush=True)
    return spec


def load_data(
    cfg: DictConfig, dataset: DictConfig | None = None, classes: list[int] | None = None
) -> ClassBatchDataModule:
    """The DataModule, set up (`dataset` and `classes` as in build.datamodule). The loaders'
    complaints about the files they read become one-line ConfigErrors before anything runs."""
    dm = build.datamodule(cfg, dataset, classes)
    d = cfg.dataset if dataset is None else dataset
    try:
        dm.prepare_data()
        dm.setup("fit")
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{d.name} data: {data_problem(error, d)}") from error
    return dm


def load_test(dm: ClassBatchDataModule, dataset: DictConfig) -> object:
    """The test split, read now, so a bad file stops the run before condensing."""
    try:
        return dm.load("test")
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(f"{dataset.name} data: {data_problem(error, dataset)}") from error


def data_problem(error: ValueError, dataset: DictConfig) -> str:
    message = str(error).strip().splitlines()[0]
    if dataset.get("strict") and ("not an image file" in message or "cannot decode" in message):
        message += "; fix or remove that file, or set strict=false to skip unreadable files"
    return message


def initial_images(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec, init: str, factor: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting stored set (`init`: real | noise) and the indices of the real images it was
    drawn from. With multi-formation `factor` f, each stored image packs f^2 real images, each
    downsampled into its tile. The real draw is made either way: with factor 1 it is the
    random-real baseline of this run.
    """
    per_stored = factor**2
    counts = dm.train_set.class_counts()
    fewest = int(counts.min())
    if fewest < cfg.ipc * per_stored:
        name = dm.train_set.class_names[int(counts.argmin())]
        needed = f"ipc={cfg.ipc}" + (f" x {per_stored} tiles" if factor > 1 else "")
        raise ConfigError(
            f"class '{name}' has only {fewest} training images but {needed} with init=real; "
            f"set ipc={fewest // per_stored} or lower, or add images to that class"
        )
    indices = dm.index.sample(cfg.ipc * per_stored, generator(cfg.seed, "init")).flatten()
    real = spec.normaliser.to_input(dm.real_images(indices))
    decoder = SyntheticImages(spec.num_classes, cfg.ipc, factor)
    real = decoder.encode(real, cfg.synthetic.init_resize)
    if init == "noise":
        g = generator(cfg.seed, "init-noise")
        return torch.randn(real.shape, generator=g), indices
    return real, indices


def select_real(
    cfg: DictConfig,
    train: TrainingSplit,
    spec: DatasetSpec,
    how: str,
    seed: int,
    random_key: tuple,
    kcenter_key: tuple,
) -> torch.Tensor:
    """Indices of `ipc` training images a class chosen `how` (random | herding | kcenter), or of
    every image (whole). Random and k-center draw from generator(seed, *random_key) and
    generator(seed, *kcenter_key): the evaluate job's baselines and the continual job's memories
    name their own."""
    if how == "random":
        return select_random(train.labels, cfg.ipc, generator(seed, *random_key))
    if cfg.dataset.get("streaming"):
        raise ConfigError(
            f"baseline={how} needs the whole training split in memory, but "
            "dataset.streaming=true keeps it on disk; set dataset.streaming=false"
        )
    if how == "whole":
        return select_whole(train.labels)
    features = embed_features(
        train.decode(torch.arange(len(train))), spec.normaliser, seed=seed,
        image_size=spec.image_size, channels=spec.channels, num_classes=spec.num_classes,
        train_epochs=cfg.coreset_train_epochs, train_labels=train.labels,
        device=build.eval_device(cfg),
        model_kwargs=OmegaConf.to_container(cfg.eval.architectures.convnet, resolve=True),
    )  # fmt: skip
    try:
        if how == "herding":
            return select_herding(features, train.labels, cfg.ipc)
        return select_kcenter(features, train.labels, cfg.ipc, generator(seed, *kcenter_key))
    except ValueError as error:  # a class with fewer images than ipc
        raise ConfigError(f"{spec.name} data: {error}; set ipc lower") from error


def resolved_config(cfg: DictConfig, spec: DatasetSpec) -> dict:
    """The run's config as plain values, with the data set's facts as resolved (config.yaml,
    synthetic.pt, the loggers' hyper-parameters)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["dataset"].update(spec.facts())
    return resolved


def write_results(
    run_dir: Path, summary: dict, rows: list[dict], columns: list[str] | None = None
) -> None:
    """results.json (the summary) and results.csv (the rows, one a line, under `columns`, or
    the first row's keys), each atomically."""
    atomic_write_json(run_dir / "results.json", summary, indent=2)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run_dir / "results.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))


def accuracy_rows(results: dict) -> list[dict]:
    """{set: {architecture: summary}} -> one row per set and architecture."""
    return [
        {"set": name, "architecture": arch, "mean": r["mean"], "std": r["std"],
         "networks": len(r["accuracies"])}
        for name, by_arch in results.items()
        for arch, r in by_arch.items()
    ]  # fmt: skip
