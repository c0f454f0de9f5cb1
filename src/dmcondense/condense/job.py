"""One condensation job: data, initial set, Lightning fit, then the basic evaluation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dmcondense import build
from dmcondense.condense.callbacks import FiniteLossGuard, ImageLogger, SyntheticWriter
from dmcondense.condense.module import DistributionMatching
from dmcondense.errors import ConfigError, require_positive
from dmcondense.evaluation.protocol import train_networks
from dmcondense.io import atomic_write
from dmcondense.rng import generator


def validate(cfg: DictConfig) -> None:
    require_positive(
        ipc=cfg.ipc,
        iterations=cfg.iterations,
        batch_real=cfg.batch_real,
        **{"eval.num_models": cfg.eval.num_models, "eval.epochs": cfg.eval.epochs},
    )
    if cfg.init not in ("real", "noise"):
        raise ConfigError(f"init must be 'real' or 'noise', got '{cfg.init}'")


def initial_images(cfg: DictConfig, dm, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting synthetic set and the indices of the real images it was drawn from.

    The real draw is made either way: it is the random-real baseline of this run.
    """
    counts = dm.train_set.class_counts()
    fewest = int(counts.min())
    if fewest < cfg.ipc:
        name = dm.train_set.class_names[int(counts.argmin())]
        raise ConfigError(
            f"class '{name}' has only {fewest} training images but ipc={cfg.ipc}; lower ipc "
            f"(at most {fewest}) or use init=noise"
            if cfg.init == "real"
            else f"class '{name}' has only {fewest} training images, fewer than ipc={cfg.ipc}"
        )
    indices = dm.index.sample(cfg.ipc, generator(cfg.seed, "init")).flatten()
    shape = (1, -1, 1, 1)
    mean_t, std_t = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
    real = (dm.real_images(indices).float() / 255 - mean_t) / std_t
    if cfg.init == "noise":
        g = generator(cfg.seed, "init-noise")
        return torch.randn(real.shape, generator=g), indices
    return real, indices


def evaluate(
    cfg: DictConfig, sets: dict[str, tuple[torch.Tensor, torch.Tensor]], test, mean, std
) -> dict:
    """Accuracy of eval.num_models fresh networks per architecture on each named set."""
    protocol = build.protocol(cfg)
    results = {}
    for set_name, (images, labels) in sets.items():
        for model_name in cfg.eval.models:
            acc = train_networks(
                model_name,
                images,
                labels,
                test.images,
                test.labels,
                num_models=cfg.eval.num_models,
                protocol=protocol,
                seed=cfg.seed,
                mean=mean,
                std=std,
                model_kwargs=build.model_kwargs(cfg, model_name),
                num_classes=cfg.dataset.num_classes,
                progress=True,
            )
            results.setdefault(set_name, {})[model_name] = {
                "mean": round(100 * float(acc.mean()), 2),
                "std": round(100 * float(acc.std(unbiased=False)), 2),
                "accuracies": [round(100 * float(a), 2) for a in acc],
            }
    return results


def run(cfg: DictConfig) -> Path:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    validate(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build.datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    build.fill_dataset_facts(cfg, dm.train_set)
    mean, std = list(cfg.dataset.mean), list(cfg.dataset.std)
    init, init_indices = initial_images(cfg, dm, mean, std)

    module = DistributionMatching(
        build.embedding_network(cfg),
        build.augmenter(cfg),
        init,
        cfg.dataset.num_classes,
        mean,
        std,
        lr_img=cfg.lr_img,
        momentum=cfg.momentum,
        seed=cfg.seed,
        channels_last=cfg.channels_last,
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    metadata = {
        "class_names": list(cfg.dataset.class_names),
        "mean": mean,
        "std": std,
        "init_indices": init_indices,
        "config": resolved,
    }
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        save_last=True,
        every_n_train_steps=cfg.save_every,
        save_top_k=0,
    )
    callbacks = [
        SyntheticWriter(run_dir, metadata, cfg.save_every),
        FiniteLossGuard(),
        ImageLogger(cfg.log_images_every),
        checkpoints,
    ]
    trainer = build.trainer(cfg, run_dir, callbacks)
    ckpt = cfg.resume
    if ckpt == "last":
        ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    condense_seconds = time.time() - started
    if not trainer.is_global_zero:
        return run_dir

    test = dm.load("test")
    labels = module.labels.cpu()
    sets = {
        "dm": (module.synthetic.detach().cpu(), labels),
        "random": (
            init
            if cfg.init == "real"
            else initial_images(OmegaConf.merge(cfg, {"init": "real"}), dm, mean, std)[0],
            labels,
        ),
    }
    results = evaluate(cfg, sets, test, mean, std)
    summary = {
        "dataset": cfg.dataset.name,
        "ipc": cfg.ipc,
        "iterations": cfg.iterations,
        "seed": cfg.seed,
        "eval_epochs": cfg.eval.epochs,
        "eval_num_models": cfg.eval.num_models,
        "condense_seconds": round(condense_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "results": results,
    }
    atomic_write(
        run_dir / "results.json",
        lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2) + "\n"),
    )
    atomic_write(run_dir / "config.yaml", lambda tmp: OmegaConf.save(resolved, tmp))
    for set_name, by_model in results.items():
        for model_name, r in by_model.items():
            print(
                f"{set_name:>8} {model_name:<12} {r['mean']:6.2f} +- {r['std']:.2f} % "
                f"({cfg.eval.num_models} networks, {cfg.eval.epochs} epochs)"
            )
    print(f"wall time {summary['total_seconds']:.0f} s (condensation {condense_seconds:.0f} s)")
    print(f"run folder: {run_dir}")
    return run_dir
