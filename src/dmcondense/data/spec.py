"""A data set's facts, resolved once per run and frozen: everything after reads them from here.

The config may leave class names, mean and std null (an image folder) and the class count ???;
they come from the training split, and the config itself is never edited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch
from omegaconf import DictConfig, OmegaConf

from dmcondense.data.imageset import TrainingSplit
from dmcondense.data.normalise import Normaliser
from dmcondense.data.statistics import channel_statistics, statistics_sample
from dmcondense.data.zca import ZCA, ZCANormaliser
from dmcondense.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    image_size: int
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # dataset.zca=true: the whitening fitted on the training split, which replaces the
    # per-channel normalisation as network input (data/zca.py)
    zca: ZCA | None = field(default=None, compare=False, repr=False)

    @cached_property
    def normaliser(self) -> Normaliser:
        """One normaliser for the run, so its per-device constants are made once."""
        if self.zca is not None:
            return ZCANormaliser(self.mean, self.std, self.zca)
        return Normaliser(self.mean, self.std)

    def zca_state(self) -> dict | None:
        """What synthetic.pt keeps of the whitening (None without one)."""
        return None if self.zca is None else self.zca.state_dict()

    def whitening_key(self) -> dict | None:
        """The whitening in a cache key (experts): its eps, None without one."""
        return None if self.zca is None else {"eps": self.zca.eps}

    @classmethod
    def from_config(cls, dataset: DictConfig | Mapping, zca: dict | None = None) -> DatasetSpec:
        """The spec a resolved dataset config states in full (a saved run's config); `zca`: the
        whitening's state a saved set carries (synthetic.pt), when it was condensed whitened."""
        d = dataset if isinstance(dataset, DictConfig) else OmegaConf.create(dict(dataset))
        if d.get("zca", False) and zca is None:
            raise ConfigError(
                "dataset.zca=true but the saved set holds no whitening; it was written before "
                "ZCA was recorded: condense it again"
            )
        return cls(
            name=str(d.name),
            channels=int(d.channels),
            image_size=int(d.image_size),
            num_classes=int(d.num_classes),
            class_names=tuple(d.class_names),
            mean=tuple(float(m) for m in d.mean),
            std=tuple(float(s) for s in d.std),
            zca=None if zca is None else ZCA.from_state(zca),
        )

    def facts(self) -> dict:
        """The resolved values as plain config entries (for config.yaml and results)."""
        return {
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
        }


def configured_num_classes(dataset: DictConfig) -> int | None:
    """dataset.num_classes, or None when it is left ??? to be counted from the data."""
    return None if OmegaConf.is_missing(dataset, "num_classes") else int(dataset.num_classes)


def resolve_spec(dataset: DictConfig | Mapping, train: TrainingSplit) -> DatasetSpec:
    """The data set's facts: the config's values, and the training split's for those it leaves
    open (mean/std from a fixed-seed sample of at most 2,000 images, rounded to 4 digits)."""
    if not isinstance(dataset, DictConfig):
        dataset = OmegaConf.create(dict(dataset))
    class_names = dataset.class_names
    class_names = list(train.class_names) if class_names is None else list(class_names)
    mean, std = dataset.mean, dataset.std
    if mean is None or std is None:
        mean, std = channel_statistics(statistics_sample(train))
        mean, std = [round(m, 4) for m in mean], [round(s, 4) for s in std]
    channels = train.channels
    if len(mean) != channels or dataset.channels != channels:
        raise ConfigError(
            f"dataset.channels={dataset.channels} and {len(mean)} mean values, but the images "
            f"have {channels} channels; fix the dataset config"
        )
    return DatasetSpec(
        name=str(dataset.name),
        channels=channels,
        image_size=int(dataset.image_size),
        num_classes=configured_num_classes(dataset) or train.num_classes,
        class_names=tuple(class_names),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        zca=fit_zca(dataset, train),
    )


def fit_zca(dataset: DictConfig, train: TrainingSplit) -> ZCA | None:
    """dataset.zca=true: the whitening of the whole training split (dataset.zca_eps), else
    None."""
    if not dataset.get("zca", False):
        return None
    eps = float(dataset.get("zca_eps", 0.1))
    if not eps > 0:
        raise ConfigError(f"dataset.zca_eps must be positive, got {eps}")
    return ZCA.fit(train.decode(torch.arange(len(train))), eps=eps)
