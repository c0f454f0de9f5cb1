"""Checks of a continual-learning config that need no torch: run before the heavy imports, so a
wrong `steps` or memory method answers in a second, as one line (ConfigError)."""

from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf

from dmcondense.cli import CONF_DIR
from dmcondense.errors import ConfigError, require_positive

# Memories made by choosing real images (evaluation/baselines.py) rather than by condensing.
SELECTIONS = ("random", "herding", "kcenter")
RESUME_CHOICES = (None, "last", "auto")


def condensation_methods() -> list[str]:
    """The `method` group's options: every method the engine can condense with."""
    return sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))


def memory_methods(cfg: DictConfig) -> list[str]:
    """cfg.memory as a list of known names, in the given order, each once.

    Accepts a list (`memory=[dm,random]`) or one string with commas (`'memory=dm,random'`)."""
    value = cfg.memory
    raw = list(value) if OmegaConf.is_list(value) else str(value).split(",")
    names = list(dict.fromkeys(str(name).strip() for name in raw if str(name).strip()))
    known = condensation_methods() + list(SELECTIONS)
    if not names:
        raise ConfigError(f"memory is empty; choose one or more of: {', '.join(known)}")
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown memory method '{name}'{hint}; choose from: {', '.join(known)}"
            )
    return names


def check_steps(steps: int, num_classes: int, dataset_name: str) -> None:
    """`steps` must split the classes into equal groups; the line names the steps that do."""
    require_positive(steps=steps)
    if num_classes % steps:
        divisors = [d for d in range(1, num_classes + 1) if num_classes % d == 0]
        raise ConfigError(
            f"steps={steps} does not divide the {num_classes} classes of {dataset_name}; "
            f"choose steps from: {', '.join(map(str, divisors))}"
        )


def check_continual_config(cfg: DictConfig) -> None:
    """The continual keys; `steps` against dataset.num_classes when the config states it (an
    image folder's count is checked once the folder is read)."""
    memory_methods(cfg)
    require_positive(steps=cfg.steps)
    if not OmegaConf.is_missing(cfg.dataset, "num_classes"):
        check_steps(int(cfg.steps), int(cfg.dataset.num_classes), str(cfg.dataset.name))
    if cfg.resume not in RESUME_CHOICES:
        raise ConfigError(
            f"continual runs resume a run folder's finished steps: resume=last (or auto, which "
            f"starts afresh when there are none), not '{cfg.resume}'; pass the folder as "
            f"hydra.run.dir=<folder>"
        )
    if cfg.coreset_train_epochs is None or int(cfg.coreset_train_epochs) < 0:
        raise ConfigError(f"coreset_train_epochs must be 0 or more, got {cfg.coreset_train_epochs}")
    trainer = cfg.trainer
    devices = trainer.get("devices", 1)
    several = (
        len(devices) > 1 if OmegaConf.is_list(devices) else isinstance(devices, int) and devices > 1
    )
    if str(trainer.get("strategy", "auto")).startswith("ddp") or several:
        raise ConfigError(
            "continual learning runs on one process (its steps run one after another); "
            "use trainer=cpu or trainer=gpu"
        )
