"""One condensation job: data, initial set, Lightning fit, then the basic evaluation.

Everything the user can get wrong (config values, data folders and files) is checked before the
first output is written and reported as a ConfigError: one line, no traceback, no synthetic.pt
or results.json left behind. Only Hydra's own record (.hydra/, train.log) stays in the run folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dmcondense import build
from dmcondense.condense import tracking
from dmcondense.condense.callbacks import FiniteLossGuard, ImageLogger, SyntheticWriter
from dmcondense.condense.checkpoints import KeepPreviousCheckpointIO, resume_checkpoint
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError
from dmcondense.evaluation.callback import PeriodicEvaluation
from dmcondense.evaluation.protocol import accuracy_summary
from dmcondense.evaluation.score import score
from dmcondense.export import export_imagefolder
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import atomic_write
from dmcondense.methods.base import CondensationMethod
from dmcondense.rng import generator
from dmcondense.synthetic import SyntheticImages

RANDOM_LABEL = "(random real images, same budget)"
GRIDS_PER_RUN = 10  # image grids sent to the logger over a run, unless log_images_every is set


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
    # Manual-optimisation methods (DC, DSA, IDM) checkpoint the state after a step on purpose:
    # a resumed run starts the next step from it.
    warnings.filterwarnings(
        "ignore", message=r"Using ModelCheckpoint with manual optimization and every_n_train_steps"
    )
    # The run folder always holds Hydra's record, so the CSV logger's "not empty" notice is noise.
    warnings.filterwarnings(
        "ignore", message=r"Experiment logs directory .* exists and is not empty"
    )


def load_data(cfg: DictConfig):
    """The DataModule, set up, and the test split: read now, so a bad file stops the run before
    condensing rather than after it."""
    dm = build.datamodule(cfg)
    try:
        dm.prepare_data()
        dm.setup("fit")
        test = dm.load("test")
    except ConfigError:
        raise
    except ValueError as error:  # the loaders' complaints about the files they read
        message = str(error).strip().splitlines()[0]
        if cfg.dataset.get("strict") and (
            "not an image file" in message or "cannot decode" in message
        ):
            message += "; fix or remove that file, or set strict=false to skip unreadable files"
        raise ConfigError(f"{cfg.dataset.name} data: {message}") from error
    return dm, test


def initial_images(
    cfg: DictConfig, dm, spec: DatasetSpec, init: str, factor: int = 1
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
    real = SyntheticImages(spec.num_classes, cfg.ipc, factor).encode(
        real, cfg.synthetic.init_resize
    )
    if init == "noise":
        g = generator(cfg.seed, "init-noise")
        return torch.randn(real.shape, generator=g), indices
    return real, indices


def evaluate(
    cfg: DictConfig,
    sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    test,
    spec: DatasetSpec,
    device: torch.device | str = "cpu",
) -> dict:
    """Accuracy of eval.num_models fresh networks per architecture on each named set, trained
    on `device` (the condensation's)."""
    scores = score(
        {name: [images_labels] for name, images_labels in sets.items()},
        build.architectures(cfg),
        build.protocols(cfg, spec),
        test,
        cfg.seed,
        num_models=cfg.eval.num_models,
        normaliser=spec.normaliser,
        backend=build.eval_backend(cfg),
        device=device,
        progress=True,
    )
    return {
        name: {arch: accuracy_summary(acc) for arch, acc in by_arch.items()}
        for name, by_arch in scores.items()
    }


def resolved_config(cfg: DictConfig, spec: DatasetSpec) -> dict:
    """The run's config as plain values, with the data set's facts as resolved (config.yaml,
    synthetic.pt, the loggers' hyper-parameters)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["dataset"].update(spec.facts())
    return resolved


def run(cfg: DictConfig) -> Path:
    """Condense with the `method` group's module, then score the set; `cfg` was checked by
    `check_config` (the entry point does it before torch loads) and is never changed."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    quiet_library_chatter()
    build.check_evaluation(cfg)
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm, test = load_data(cfg)
    spec = resolve_spec(cfg.dataset, dm.train_set)
    init, init_indices = initial_images(cfg, dm, spec, cfg.init, cfg.synthetic.factor)
    module = build.method(cfg, spec, init)
    logger_kwargs = tracking.wandb_logger_kwargs(cfg)
    resolved = resolved_config(cfg, spec)
    metadata = {
        "class_names": list(spec.class_names),
        "mean": list(spec.mean),
        "std": list(spec.std),
        "init_indices": init_indices,
        "config": resolved,
    }
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        save_last=True,
        every_n_train_steps=cfg.save_every,
        save_top_k=0,
    )
    writer = SyntheticWriter(run_dir, metadata, cfg.save_every)
    callbacks = [
        # The guard runs first, so a non-finite set never replaces the last good synthetic.pt.
        FiniteLossGuard(every=math.gcd(10, cfg.save_every), writer=writer),
        writer,
        ImageLogger(cfg.log_images_every or max(1, cfg.iterations // GRIDS_PER_RUN)),
        checkpoints,
    ]
    if cfg.eval.every:
        callbacks.append(
            PeriodicEvaluation(
                cfg.eval.every,
                build.architectures(cfg),
                cfg.eval.num_models,
                build.protocols(cfg, spec),
                cfg.seed,
                backend=build.eval_backend(cfg),
            )
        )
    trainer = build.trainer(cfg, run_dir, callbacks, logger_kwargs, [KeepPreviousCheckpointIO()])
    ckpt = resume_checkpoint(cfg.resume, run_dir)
    tracking.log_config(trainer.loggers, resolved)
    try:
        summary = condense_and_score(
            cfg, spec, trainer, module, dm, test, init, ckpt, run_dir, started
        )
    except BaseException:
        with contextlib.suppress(Exception):  # never hide the error that stopped the run
            for note in tracking.close(trainer.loggers, failed=True):
                print(note, flush=True)
        raise
    notes = tracking.close(trainer.loggers)
    if summary is None:  # not rank zero
        return run_dir
    atomic_write(run_dir / "config.yaml", lambda tmp: OmegaConf.save(resolved, tmp))
    print_summary(cfg, summary, run_dir, notes)
    return run_dir


def condensed_label(summary: dict) -> str:
    if summary["factor"] == 1:
        return "(the condensed set)"
    return (
        f"(the condensed set: {summary['ipc']} stored images a class, decoded into "
        f"{summary['decoded_per_class']} by factor {summary['factor']})"
    )


def print_summary(cfg: DictConfig, summary: dict, run_dir: Path, notes: list[str]) -> None:
    """Accuracies, wall time, where things are; the last line names the run folder."""
    networks, epochs = cfg.eval.num_models, cfg.eval.epochs
    trained = (
        f"{epochs} epoch{'s' * (epochs != 1)}" if cfg.eval.protocol == "dsa" else "DC's protocol"
    )
    print(
        f"accuracy on the real test set ({networks} network{'s' * (networks != 1)} x "
        f"{trained} per set and model):"
    )
    for set_name, by_model in summary["results"].items():
        for model_name, r in by_model.items():
            label = RANDOM_LABEL if set_name == "random" else condensed_label(summary)
            print(f"{set_name:>8} {model_name:<12} {r['mean']:6.2f} +- {r['std']:.2f} %   {label}")
    print(
        f"wall time {summary['total_seconds']:.0f} s "
        f"(condensation {summary['condense_seconds']:.0f} s)"
    )
    if cfg.export:
        print(f"exported as image files: {run_dir / 'export'}")
    for note in notes:
        print(note)
    print(f"run folder: {run_dir}")


def condense_and_score(
    cfg: DictConfig,
    spec: DatasetSpec,
    trainer: L.Trainer,
    module: CondensationMethod,
    dm,
    test,
    init: torch.Tensor,
    ckpt: str | None,
    run_dir: Path,
    started: float,
) -> dict | None:
    """Fit, then (on rank zero) export, evaluate, write results.json; returns its content."""
    fit_started = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    condense_seconds = time.time() - started
    fit_seconds = time.time() - fit_started
    if not trainer.is_global_zero:
        return None
    tracking.log_synthetic_artifact(trainer.loggers, run_dir, spec.name)
    if cfg.export == "imagefolder":
        export_imagefolder(run_dir / "synthetic.pt", run_dir / "export")

    images, labels = module.decoded()
    # The random baseline: ipc real images a class at full size, the same stored pixels.
    same_draw = cfg.init == "real" and cfg.synthetic.factor == 1
    random_real = init if same_draw else initial_images(cfg, dm, spec, "real")[0]
    sets = {
        module.name: (images.cpu(), labels.cpu()),
        "random": (random_real, module.labels.cpu()),
    }
    results = evaluate(cfg, sets, test, spec, device=module.device)
    summary = {
        "dataset": spec.name,
        "method": module.name,
        "ipc": cfg.ipc,
        "factor": cfg.synthetic.factor,
        "decoded_per_class": module.synthetic_images.decoded_per_class,
        "iterations": cfg.iterations,
        "seed": cfg.seed,
        "eval_protocol": cfg.eval.protocol,
        "eval_epochs": cfg.eval.epochs,
        "eval_num_models": cfg.eval.num_models,
        "steps": trainer.global_step,
        "condense_seconds": round(condense_seconds, 1),
        "fit_seconds": round(fit_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "results": results,
    }
    atomic_write(
        run_dir / "results.json",
        lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"),
    )
    tracking.log_results(trainer.loggers, results, trainer.global_step, resolved_config(cfg, spec))
    return summary
