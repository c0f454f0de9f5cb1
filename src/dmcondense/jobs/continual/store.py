"""A continual run's folder: what a resume must agree with, and each finished step's memory.

config.yaml                 the resolved config
memory/settings.json        what a resume must agree with (written at the first start)
memory/<method>/step_<k>/   synthetic.pt: the memory after step k, all classes seen so far
                            (load_synthetic); synthetic.png; result.json, written last: the
                            step is finished; checkpoints/ while the step condenses
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from dmcondense.data.spec import DatasetSpec
from dmcondense.errors import ConfigError
from dmcondense.io import atomic_write, read_synthetic, save_grid, save_synthetic
from dmcondense.jobs.common import resolved_config

RESUME_FREE_KEYS = ("resume", "memory", "progress_every", "reuse_host_memory", "data_dir")


@dataclass(frozen=True)
class Memory:
    """A learner's memory: normalised training images, labels (positions in the class order)
    and, per image, the index in the whole training split of the real image it was selected as
    or started from."""

    images: torch.Tensor
    labels: torch.Tensor
    source_indices: torch.Tensor

    @classmethod
    def empty(cls, spec: DatasetSpec) -> Memory:
        shape = (0, spec.channels, spec.image_size, spec.image_size)
        none = torch.zeros(0, dtype=torch.long)
        return cls(torch.zeros(shape), none, none)

    def add(self, images: torch.Tensor, labels: torch.Tensor, sources: torch.Tensor) -> Memory:
        return Memory(
            torch.cat([self.images, images.float()]),
            torch.cat([self.labels, labels.long()]),
            torch.cat([self.source_indices, sources.long()]),
        )


def unit_dir(run_dir: Path, method: str, step: int) -> Path:
    return run_dir / "memory" / method / f"step_{step:02d}"


def settings_of(cfg: DictConfig, spec: DatasetSpec, order: list[int]) -> dict:
    """What every figure of the run depends on (a resume must agree with it)."""
    resolved = resolved_config(cfg, spec)
    for key in RESUME_FREE_KEYS:
        resolved.pop(key, None)
    resolved["dataset"].pop("num_workers", None)
    return {"class_order": order, "config": resolved}


def first_difference(saved: object, now: object, prefix: str = "") -> str | None:
    """The first dotted key where two settings differ, or None."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in list(dict.fromkeys([*saved, *now])):
            found = first_difference(saved.get(key), now.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    return None if saved == now else prefix.rstrip(".") or "(all)"


def prepare_run_folder(cfg: DictConfig, run_dir: Path, settings: dict) -> None:
    """A fresh folder gets settings.json; a resume must find the same settings there."""
    path = run_dir / "memory" / "settings.json"
    if not path.is_file():
        if cfg.resume == "last":
            raise ConfigError(
                f"resume=last but {run_dir} holds no continual run (no {path}); pass its folder "
                f"as hydra.run.dir=<folder>, or use resume=auto to start afresh when there is none"
            )
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=1)))
        return
    if cfg.resume is None:
        raise ConfigError(
            f"{run_dir} already holds a continual run; continue it with resume=last, or set "
            f"hydra.run.dir= to a new folder"
        )
    saved = json.loads(path.read_text())
    key = first_difference(saved, json.loads(json.dumps(settings)))
    if key:
        raise ConfigError(
            f"cannot resume {run_dir}: it was run with another {key}; use the same settings, or "
            f"set hydra.run.dir= to a new folder"
        )


def read_finished(unit: Path) -> tuple[Memory, dict] | None:
    """The memory and result of a finished step, or None when it did not finish."""
    if not (unit / "result.json").is_file():
        return None
    record = read_synthetic(unit / "synthetic.pt")
    memory = Memory(record["images"], record["labels"], record["init_indices"])
    return memory, json.loads((unit / "result.json").read_text())


def write_finished(
    unit: Path, memory: Memory, result: dict, spec: DatasetSpec, meta: dict, config: dict
) -> None:
    """The memory (synthetic.pt, synthetic.png), then result.json: its presence marks the step
    finished, so a kill between the writes redoes the step."""
    seen = meta["classes"]
    per_class = memory.images.shape[0] // len(seen)
    save_synthetic(
        unit / "synthetic.pt",
        {
            "images": memory.images,
            "labels": memory.labels,
            "class_names": [spec.class_names[c] for c in seen],
            "mean": list(spec.mean),
            "std": list(spec.std),
            "ipc": per_class,
            "step": result["iterations"],
            "init_indices": memory.source_indices,
            "config": config,
            "continual": meta,
        },
    )
    save_grid(unit / "synthetic.png", spec.normaliser.to_unit(memory.images), per_class)
    atomic_write(
        unit / "result.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1))
    )
    shutil.rmtree(unit / "checkpoints", ignore_errors=True)  # the finished step needs none
