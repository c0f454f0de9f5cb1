"""Checks of a composed config that need no torch: run before the heavy imports, so a wrong
value, data folder, `steps` or memory method answers in a second, as one line (ConfigError)."""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dmcondense import CONF_DIR
from dmcondense.errors import ConfigError, require_positive

EXPORT_FORMATS = ("imagefolder", "tensors")
# The trainer precisions a condensation can run under, and Lightning's short names for them.
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}
DETERMINISTIC = (False, True, "warn", None)
IMAGEFOLDER_LAYOUT = "<path>/train/<class>/<image> and <path>/test/<class>/<image>"


def check_config(cfg: DictConfig) -> None:
    """All checks below; reads the config, never changes it."""
    validate(cfg)
    check_image_folder(cfg)


def missing_keys(node: object, prefix: str = "") -> set[str]:
    """Dotted keys left as ??? (read unresolved: OmegaConf.missing_keys trips over an
    interpolation that points at a missing value)."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        keys = (missing_keys(v, f"{prefix}.{k}" if prefix else str(k)) for k, v in node.items())
        return set().union(*keys)
    return {prefix} if node == "???" else set()


def validate(cfg: DictConfig) -> None:
    missing = missing_keys(cfg)
    if cfg.dataset.get("source") == "imagefolder":
        missing.discard("dataset.num_classes")  # counted from the folder
        if "dataset.path" in missing:
            raise ConfigError(
                f"dataset=imagefolder needs path=<folder> holding {IMAGEFOLDER_LAYOUT}"
            )
    if missing:
        key = sorted(missing)[0]
        raise ConfigError(f"{key} has no value; set {key}=... on the command line")
    require_positive(
        ipc=cfg.ipc,
        iterations=cfg.iterations,
        batch_real=cfg.batch_real,
        **{"eval.num_models": cfg.eval.num_models, "eval.epochs": cfg.eval.epochs},
    )
    check_factor(cfg)
    check_manual_optimisation(cfg)
    check_trainer_numerics(cfg)
    if cfg.init not in ("real", "noise", "correct"):
        raise ConfigError(
            f"init must be 'real', 'noise' or 'correct' (method=datm's), got '{cfg.init}'"
        )
    if cfg.export is not None and cfg.export not in EXPORT_FORMATS:
        raise ConfigError(
            f"unknown export '{cfg.export}'; choose export=null or "
            f"export={' | '.join(EXPORT_FORMATS)}"
        )


def check_manual_optimisation(cfg: DictConfig) -> None:
    """Every method steps its pixels by hand (manual optimisation), which Lightning's gradient
    clipping and gradient accumulation do not support: one line instead of its traceback."""
    trainer = cfg.get("trainer") or {}
    for key, unset in (("gradient_clip_val", (None, 0)), ("accumulate_grad_batches", (None, 1))):
        if trainer.get(key) not in unset:
            raise ConfigError(
                f"trainer.{key}={trainer.get(key)} is not supported: the methods step their "
                f"images by hand (manual optimisation); remove it"
            )


def check_trainer_numerics(cfg: DictConfig) -> None:
    """trainer.precision one of PRECISIONS: under *-true (bf16-true, 16-true, 64-true) Lightning
    converts the pixels to that type, where an update smaller than the pixel's last bit is lost
    (and the embedding network, no child module, stays fp32); trainer.deterministic one of
    false, true, warn."""
    trainer = cfg.get("trainer") or {}
    precision = str(trainer.get("precision", "32-true"))
    if PRECISION_ALIASES.get(precision, precision) not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={precision} is not supported: the synthetic images are learned "
            f"in fp32 and only the networks may run in lower precision; use "
            f"{', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}"
        )
    if trainer.get("deterministic") not in DETERMINISTIC:
        raise ConfigError(
            f"trainer.deterministic must be true, false or warn, got {trainer.get('deterministic')}"
        )


def check_factor(cfg: DictConfig, largest: int = 8) -> None:
    """synthetic.factor must cut the data set's images into whole tiles; one line names the
    factors (up to `largest`) that do."""
    factor = cfg.synthetic.factor
    size = cfg.dataset.get("image_size")
    height, width = (size, size) if isinstance(size, int) else tuple(size or (0, 0))
    if not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"synthetic.factor must be a whole number of 1 or more, got {factor}")
    if not height or (height % factor == 0 and width % factor == 0):
        return
    works = [f for f in range(1, largest + 1) if height % f == 0 and width % f == 0]
    raise ConfigError(
        f"synthetic.factor={factor} does not cut {height}x{width} images into whole tiles; "
        f"factors that work for this size: {', '.join(map(str, works))}"
    )


def check_image_folder(cfg: DictConfig) -> None:
    """dataset=imagefolder: the folder has train/ and test/, each with class folders."""
    d = cfg.dataset
    if d.source != "imagefolder":
        return
    root = Path(str(d.path)).expanduser()
    fix = f"set path= to a folder holding {IMAGEFOLDER_LAYOUT}"
    if not root.exists():
        raise ConfigError(f"data folder {root} does not exist; {fix}")
    if not root.is_dir():
        raise ConfigError(f"data path {root} is a file, not a folder; {fix}")
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            what = "is empty" if not any(root.iterdir()) else f"has no {split}/ folder"
            raise ConfigError(f"data folder {root} {what}; {fix}")
        classes = [p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if not classes:
            raise ConfigError(f"{split_dir} holds no class folders; {fix}")


# --- scoring saved sets (python -m dmcondense.evaluate) ---

BASELINES = ("random", "herding", "kcenter", "whole")
SCORES = ("lrs", "ars")


def requested_scores(cfg: DictConfig) -> list[str]:
    """scores= as a list of names (one name alone is taken as a list of one)."""
    value = cfg.get("scores")
    if value is None:
        return []
    return [str(v) for v in value] if OmegaConf.is_list(value) else [str(value)]


def check_evaluate_config(cfg: DictConfig) -> None:
    """The evaluate job's keys: exactly one of condensed= (or its old spelling synthetic=) and
    baseline=, a known baseline, positive counts."""
    condensed = cfg.condensed if cfg.condensed is not None else cfg.get("synthetic")
    if (condensed is None) == (cfg.baseline is None):
        raise ConfigError("give exactly one of condensed=RUN_DIR_OR_FILE or baseline=NAME")
    if cfg.condensed is not None and cfg.get("synthetic") is not None:
        raise ConfigError("synthetic= is the old spelling of condensed=; give only condensed=")
    if cfg.baseline is not None and cfg.baseline not in BASELINES:
        raise ConfigError(
            f"unknown baseline '{cfg.baseline}'; choose one of {', '.join(BASELINES)}"
        )
    wanted = requested_scores(cfg)
    for name in wanted:
        if name not in SCORES:
            raise ConfigError(f"unknown score '{name}'; choose scores from {', '.join(SCORES)}")
    if wanted and condensed is None:
        raise ConfigError("scores= rate condensed sets; give condensed=RUN_DIR_OR_FILE")
    require_positive(
        whole_epochs=cfg.whole_epochs,
        ipc=cfg.ipc, num_exp=cfg.num_exp,
        **{"eval.num_models": cfg.eval.num_models, "eval.epochs": cfg.eval.epochs},
    )  # fmt: skip


# --- continual learning (python -m dmcondense.continual) ---

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


SCORE_STEPS = ("all", "last")  # continual: after which steps the memories are scored


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
    if cfg.score_steps not in SCORE_STEPS:
        raise ConfigError(
            f"score_steps must be one of {', '.join(SCORE_STEPS)}, not '{cfg.score_steps}'"
        )
    if cfg.coreset_train_epochs is None or int(cfg.coreset_train_epochs) < 0:
        raise ConfigError(f"coreset_train_epochs must be 0 or more, got {cfg.coreset_train_epochs}")
    check_trainer_numerics(cfg)
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


# --- architecture search (python -m dmcondense.nas) ---

NAS_PROXIES = ("condensed", "random", "fraction")
SPACE_KNOBS = ("depth", "width", "activation", "norm", "pooling")


def check_nas_config(cfg: DictConfig) -> None:
    """The nas keys: a condensed set, known proxies, a space of non-empty knob lists (depth and
    width positive whole numbers; the names of activations, norms and poolings are checked by
    the job against the ConvNet's, which needs torch), `space.sample` all or a count the space
    holds, positive budgets."""
    if cfg.condensed is None:
        raise ConfigError("give condensed=RUN_DIR_OR_FILE: the condensed set to search with")
    proxies = list(cfg.proxies) if OmegaConf.is_list(cfg.proxies) else [cfg.proxies]
    if not proxies:
        raise ConfigError(f"proxies is empty; choose from: {', '.join(NAS_PROXIES)}")
    for name in proxies:
        if name not in NAS_PROXIES:
            raise ConfigError(f"unknown proxy '{name}'; choose from: {', '.join(NAS_PROXIES)}")
    size = 1
    for knob in SPACE_KNOBS:
        values = cfg.space[knob]
        if not OmegaConf.is_list(values) or len(values) == 0:
            raise ConfigError(f"space.{knob} must be a non-empty list, e.g. space.{knob}=[...]")
        for value in values if knob in ("depth", "width") else ():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"space.{knob} holds {value!r}; give positive whole numbers")
        size *= len(values)
    sample = cfg.space.sample
    if str(sample) != "all" and (not isinstance(sample, int) or not 1 <= sample <= size):
        raise ConfigError(
            f"space.sample must be 'all' or a count from 1 to the space's {size} candidates, "
            f"got {sample}"
        )
    if not 0 < float(cfg.fraction) <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {cfg.fraction}")
    require_positive(**{
        "proxy.epochs": cfg.proxy.epochs, "proxy.num_models": cfg.proxy.num_models,
        "ground_truth.epochs": cfg.ground_truth.epochs,
        "ground_truth.num_models": cfg.ground_truth.num_models, "bootstrap": cfg.bootstrap,
    })  # fmt: skip
