"""One evaluation job: build the training sets (saved synthetic sets or baseline selections),
train fresh networks on each with the protocol, and write the table.

results.json (evaluate):
    what                      "synthetic <path>" or "baseline <name> (ipc N)"
    dataset, ipc, seed        the setting
    experiments               synthetic sets (or baseline selections) scored
    networks_per_experiment   eval.num_models
    epochs                    training epochs of each network
    seconds                   wall time of the job
    results                   {architecture: {mean, std, accuracies}}: test accuracy in percent,
                              mean and population std over every network of every experiment
results.csv: one row per architecture: architecture, mean, std, networks.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dmcondense import build
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.errors import ConfigError, require_positive
from dmcondense.evaluation.baselines import (
    embed_features,
    select_herding,
    select_kcenter,
    select_random,
    select_whole,
)
from dmcondense.evaluation.protocol import (
    accuracy_summary,
    as_network_input,
    channel_stats,
    train_networks,
)
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import atomic_write, load_synthetic
from dmcondense.rng import generator

BASELINES = ("random", "herding", "kcenter", "whole")


def normalised(images_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    return as_network_input(images_uint8, *channel_stats(mean, std, images_uint8.device))


def synthetic_sets(cfg: DictConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    paths = cfg.synthetic if OmegaConf.is_list(cfg.synthetic) else [cfg.synthetic]
    sets = []
    for path in paths:
        dataset, meta = load_synthetic(path)
        images, labels = dataset.tensors
        # The set is scored on the test split of the data it was condensed from.
        saved = meta["config"]["dataset"]
        if sets and saved["name"] != cfg.dataset.name:
            raise ConfigError(f"{path} was condensed from {saved['name']}, not {cfg.dataset.name}")
        cfg.dataset = OmegaConf.merge(cfg.dataset, saved)
        cfg.ipc = meta["ipc"]
        sets.append((images, labels))
    return sets


def baseline_sets(
    cfg: DictConfig, dm: ClassBatchDataModule
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    train = dm.train_set
    mean, std = list(cfg.dataset.mean), list(cfg.dataset.std)
    sets = []
    for exp in range(cfg.num_exp):
        seed = cfg.seed + exp
        if cfg.baseline == "whole":
            index = select_whole(train.labels)
        elif cfg.baseline == "random":
            index = select_random(train.labels, cfg.ipc, generator(seed, "baseline-random"))
        else:
            features = embed_features(
                train.images, mean, std, seed=seed, image_size=cfg.dataset.image_size,
                channels=cfg.dataset.channels, num_classes=cfg.dataset.num_classes,
                train_epochs=cfg.coreset_train_epochs, train_labels=train.labels,
                model_kwargs=build.model_kwargs(cfg, "convnet"),
            )  # fmt: skip
            if cfg.baseline == "herding":
                index = select_herding(features, train.labels, cfg.ipc)
            else:
                index = select_kcenter(features, train.labels, cfg.ipc, generator(seed, "kcenter"))
        images = train.images[index] if cfg.baseline == "whole" else normalised(
            train.images[index], mean, std
        )  # fmt: skip
        sets.append((images, train.labels[index]))
    return sets


def table_rows(results: dict) -> list[dict]:
    return [
        {"architecture": name, "mean": r["mean"], "std": r["std"], "networks": len(r["accuracies"])}
        for name, r in results.items()
    ]


def run(cfg: DictConfig) -> Path:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    if (cfg.synthetic is None) == (cfg.baseline is None):
        raise ConfigError("give exactly one of synthetic=RUN_DIR_OR_FILE or baseline=NAME")
    if cfg.baseline is not None and cfg.baseline not in BASELINES:
        raise ConfigError(
            f"unknown baseline '{cfg.baseline}'; choose one of {', '.join(BASELINES)}"
        )
    require_positive(
        ipc=cfg.ipc, num_exp=cfg.num_exp,
        **{"eval.num_models": cfg.eval.num_models, "eval.epochs": cfg.eval.epochs},
    )  # fmt: skip
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    if cfg.synthetic is not None:
        sets, what = synthetic_sets(cfg), f"synthetic {cfg.synthetic}"
    dm = build.datamodule(cfg)
    dm.prepare_data()
    if cfg.synthetic is None:
        dm.setup("fit")
        build.fill_dataset_facts(cfg, dm.train_set)
        sets, what = baseline_sets(cfg, dm), f"baseline {cfg.baseline} (ipc {cfg.ipc})"
    test = dm.load("test")
    mean, std = list(cfg.dataset.mean), list(cfg.dataset.std)
    epochs = cfg.whole_epochs if cfg.baseline == "whole" else cfg.eval.epochs
    protocol = build.protocol(cfg, epochs=epochs)
    results = {}
    for model_name in cfg.eval.models:
        accuracies = torch.cat([
            train_networks(
                model_name, images, labels, test.images, test.labels,
                num_models=cfg.eval.num_models, protocol=protocol, seed=cfg.seed + exp,
                mean=mean, std=std, model_kwargs=build.model_kwargs(cfg, model_name),
                num_classes=cfg.dataset.num_classes, progress=True,
            )
            for exp, (images, labels) in enumerate(sets)
        ])  # fmt: skip
        results[model_name] = accuracy_summary(accuracies)
    summary = {
        "what": what, "dataset": cfg.dataset.name, "ipc": cfg.ipc, "seed": cfg.seed,
        "experiments": len(sets), "networks_per_experiment": cfg.eval.num_models,
        "epochs": epochs, "seconds": round(time.time() - started, 1), "results": results,
    }  # fmt: skip
    rows = table_rows(results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(
        run_dir / "results.json", lambda t: Path(t).write_text(json.dumps(summary, indent=2))
    )
    atomic_write(run_dir / "results.csv", lambda t: Path(t).write_text(buffer.getvalue()))
    print(
        f"{what} on {cfg.dataset.name}: {len(sets)} experiment(s) x {cfg.eval.num_models} "
        f"networks, {epochs} epochs"
    )
    print(f"{'architecture':<14}{'accuracy %':>12}")
    for row in rows:
        print(f"{row['architecture']:<14}{row['mean']:>7.2f} +- {row['std']:.2f}")
    print(f"wall time {summary['seconds']:.0f} s")
    print(f"run folder: {run_dir}")
    return run_dir
