"""Checks of a composed config that need no torch: run before the heavy imports, so a wrong
value or data folder answers in a second, as one line (ConfigError)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dmcondense.errors import ConfigError, require_positive

EXPORT_FORMATS = ("imagefolder",)
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
    if cfg.init not in ("real", "noise"):
        raise ConfigError(f"init must be 'real' or 'noise', got '{cfg.init}'")
    if cfg.export is not None and cfg.export not in EXPORT_FORMATS:
        raise ConfigError(
            f"unknown export '{cfg.export}'; choose export=null or "
            f"export={' | '.join(EXPORT_FORMATS)}"
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
