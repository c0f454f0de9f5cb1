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

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dmcondense import build
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError, require_positive
from dmcondense.evaluation.baselines import (
    embed_features,
    select_herding,
    select_kcenter,
    select_random,
    select_whole,
)
from dmcondense.evaluation.protocol import accuracy_summary
from dmcondense.evaluation.score import LabelledImages, score
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import atomic_write, load_synthetic
from dmcondense.rng import generator

BASELINES = ("random", "herding", "kcenter", "whole")


def synthetic_sets(cfg: DictConfig) -> tuple[list[LabelledImages], DictConfig, DatasetSpec, int]:
    """The saved sets (their training images), the data set config and facts they were condensed
    from (they are scored on its test split), and their IPC."""
    paths = cfg.synthetic if OmegaConf.is_list(cfg.synthetic) else [cfg.synthetic]
    sets, dataset, spec, ipc = [], None, None, None
    for path in paths:
        loaded, meta = load_synthetic(path)
        saved = meta["config"]["dataset"]
        if spec is not None and saved["name"] != spec.name:
            raise ConfigError(f"{path} was condensed from {saved['name']}, not {spec.name}")
        dataset = OmegaConf.merge(cfg.dataset, saved)
        spec = DatasetSpec.from_config(dataset)
        ipc = meta["ipc"]
        sets.append(tuple(loaded.tensors))
    return sets, dataset, spec, ipc


def baseline_sets(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec
) -> list[LabelledImages]:
    train = dm.train_set
    if cfg.baseline in ("herding", "kcenter", "whole") and cfg.dataset.get("streaming"):
        raise ConfigError(
            f"baseline={cfg.baseline} needs the whole training split in memory, but "
            "dataset.streaming=true keeps it on disk; set dataset.streaming=false"
        )
    sets = []
    for exp in range(cfg.num_exp):
        seed = cfg.seed + exp
        if cfg.baseline == "whole":
            index = select_whole(train.labels)
        elif cfg.baseline == "random":
            index = select_random(train.labels, cfg.ipc, generator(seed, "baseline-random"))
        else:
            features = embed_features(
                train.images, spec.normaliser, seed=seed, image_size=spec.image_size,
                channels=spec.channels, num_classes=spec.num_classes,
                train_epochs=cfg.coreset_train_epochs, train_labels=train.labels,
                model_kwargs=OmegaConf.to_container(cfg.eval.architectures.convnet, resolve=True),
            )  # fmt: skip
            if cfg.baseline == "herding":
                index = select_herding(features, train.labels, cfg.ipc)
            else:
                index = select_kcenter(features, train.labels, cfg.ipc, generator(seed, "kcenter"))
        images = train.decode(index)
        sets.append((images if cfg.baseline == "whole" else spec.normaliser.to_input(images),
                     train.labels[index]))  # fmt: skip
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
    build.check_evaluation(cfg)
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    ipc = cfg.ipc
    if cfg.synthetic is not None:
        sets, dataset, spec, ipc = synthetic_sets(cfg)
        what = f"synthetic {cfg.synthetic}"
        dm = build.datamodule(cfg, dataset)
        dm.prepare_data()
    else:
        dm = build.datamodule(cfg)
        dm.prepare_data()
        dm.setup("fit")
        spec = resolve_spec(cfg.dataset, dm.train_set)
        sets, what = baseline_sets(cfg, dm, spec), f"baseline {cfg.baseline} (ipc {ipc})"
    test = dm.load("test")
    epochs = cfg.whole_epochs if cfg.baseline == "whole" else cfg.eval.epochs
    name = cfg.baseline or "synthetic"
    scores = score(
        {name: sets}, build.architectures(cfg), build.protocols(cfg, spec, epochs=epochs), test,
        cfg.seed, num_models=cfg.eval.num_models, normaliser=spec.normaliser,
        backend=build.eval_backend(cfg), device=build.eval_device(cfg), progress=True,
    )[name]  # fmt: skip
    results = {arch: accuracy_summary(acc) for arch, acc in scores.items()}
    summary = {
        "what": what, "dataset": spec.name, "ipc": ipc, "seed": cfg.seed,
        "eval_protocol": cfg.eval.protocol,
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
        f"{what} on {spec.name}: {len(sets)} experiment(s) x {cfg.eval.num_models} "
        f"networks, {epochs} epochs"
    )
    print(f"{'architecture':<14}{'accuracy %':>12}")
    for row in rows:
        print(f"{row['architecture']:<14}{row['mean']:>7.2f} +- {row['std']:.2f}")
    print(f"wall time {summary['seconds']:.0f} s")
    print(f"run folder: {run_dir}")
    return run_dir
