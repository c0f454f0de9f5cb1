"""The evaluate job: build the training sets (saved synthetic sets or baseline selections),
train fresh networks on each with the protocol, and write the table.

results.json (evaluate):
    what                      "condensed <path>" or "baseline <name> (ipc N)"
    dataset, ipc, seed        the setting
    experiments               synthetic sets (or baseline selections) scored
    networks_per_experiment   eval.num_models
    epochs                    training epochs of each network
    evaluation                what each architecture's networks trained with
    seconds                   wall time of the job
    results                   {set: {architecture: {mean, std, accuracies}}}: test accuracy in
                              percent, mean and population std over every network of every
                              experiment; the set is the method that condensed it, or the
                              baseline's name
results.csv: one row per set and architecture: set, architecture, mean, std, networks.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError, DmcondenseWarning
from dmcondense.evaluation.score import LabelledImages
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import load_synthetic
from dmcondense.jobs import build
from dmcondense.jobs.common import (
    accuracy_rows,
    load_data,
    load_test,
    quiet_library_chatter,
    select_real,
    write_results,
)


def condensed_paths(cfg: DictConfig) -> list[str] | None:
    """condensed= as a list of paths; `synthetic=` is its old spelling, still read this release."""
    value = cfg.condensed
    if cfg.get("synthetic") is not None:  # evaluate.yaml sets it null: given, it is a path
        warnings.warn(
            "synthetic=PATH is now condensed=PATH (synthetic.* holds the multi-formation "
            "settings); the old spelling stops working in the next release",
            DmcondenseWarning,
            stacklevel=2,
        )
        value = cfg.synthetic
    if value is None:
        return None
    return [str(p) for p in value] if OmegaConf.is_list(value) else [str(value)]


def synthetic_sets(
    paths: list[str], cfg: DictConfig
) -> tuple[list[LabelledImages], DictConfig, DatasetSpec, int, str]:
    """The saved sets (their training images), the data set config and facts they were condensed
    from (they are scored on its test split), their IPC and the method that made them."""
    sets, dataset, spec, ipc, method = [], None, None, None, None
    for path in paths:
        loaded, meta = load_synthetic(path)
        saved = meta["config"]["dataset"]
        if spec is not None and saved["name"] != spec.name:
            raise ConfigError(f"{path} was condensed from {saved['name']}, not {spec.name}")
        dataset = OmegaConf.merge(cfg.dataset, saved)
        spec = DatasetSpec.from_config(dataset)
        ipc = meta["ipc"]
        method = method or meta.get("method", "synthetic")  # files before 0.2 do not say
        sets.append(tuple(loaded.tensors))
    return sets, dataset, spec, ipc, method


def baseline_sets(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec
) -> list[LabelledImages]:
    """num_exp selections of `baseline`, experiment e drawn with seed + e."""
    train = dm.train_set
    sets = []
    for exp in range(cfg.num_exp):
        seed = cfg.seed + exp
        index = select_real(
            cfg, train, spec, cfg.baseline, seed, ("baseline-random",), ("kcenter",)
        )
        images = train.decode(index)
        sets.append((images if cfg.baseline == "whole" else spec.normaliser.to_input(images),
                     train.labels[index]))  # fmt: skip
    return sets


def run(cfg: DictConfig) -> Path:
    """Score the saved sets or the baseline; `cfg` was checked by check_evaluate_config."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    quiet_library_chatter()
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    paths = condensed_paths(cfg)
    ipc = cfg.ipc
    if paths is not None:
        sets, dataset, spec, ipc, name = synthetic_sets(paths, cfg)
        what = f"condensed {', '.join(paths)}"
        dm = build.datamodule(cfg, dataset)
        dm.prepare_data()
    else:
        dataset, name = cfg.dataset, cfg.baseline
        dm = load_data(cfg)
        spec = resolve_spec(cfg.dataset, dm.train_set)
        sets, what = baseline_sets(cfg, dm, spec), f"baseline {cfg.baseline} (ipc {ipc})"
    test = load_test(dm, dataset)
    plan = build.evaluation_plan(
        cfg, spec, epochs=cfg.whole_epochs if cfg.baseline == "whole" else None
    )
    results = plan.summaries(
        {name: sets}, test, spec.normaliser, build.eval_device(cfg), progress=True
    )
    epochs = {arch: protocol.epochs for arch, protocol in plan.protocols.items()}
    summary = {
        "what": what, "dataset": spec.name, "ipc": ipc, "seed": cfg.seed,
        "eval_protocol": plan.protocol_name,
        "experiments": len(sets), "networks_per_experiment": plan.num_models,
        "epochs": next(iter(epochs.values())) if len(set(epochs.values())) == 1 else epochs,
        "evaluation": plan.record(),
        "seconds": round(time.time() - started, 1), "results": results,
    }  # fmt: skip
    rows = accuracy_rows(results)
    write_results(run_dir, summary, rows)
    print(
        f"{what} on {spec.name}: {len(sets)} experiment(s) x {plan.num_models} "
        f"networks, {summary['epochs']} epochs"
    )
    print(f"{'set':<10}{'architecture':<14}{'accuracy %':>12}")
    for row in rows:
        print(f"{row['set']:<10}{row['architecture']:<14}{row['mean']:>7.2f} +- {row['std']:.2f}")
    print(f"wall time {summary['seconds']:.0f} s")
    print(f"run folder: {run_dir}")
    return run_dir
