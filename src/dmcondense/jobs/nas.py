"""The nas job: architecture search with a condensed set as the proxy (the DM paper's application).

Every candidate ConvNet of the space trains on each proxy set (the condensed set, random real
images of the same IPC, a small fraction of the training split) and on the whole training split;
a proxy is good when it ranks the candidates as whole-data training does.

Run folder:
    search.json                the proxy settings; a rerun in this folder must match them
    candidates/<proxy>/<name>.json   one file per finished candidate and proxy (resume)
    nas.json, nas.csv, nas.png the report (written last)
Ground-truth cache (shared by every condensed set of one data set, space and budget):
    <ground_truth.cache>/<dataset>_<space>_e<epochs>x<networks>/budget.json and <name>.json
A cache folder whose budget.json differs from this run's budget stops the run with one line
(ground_truth.refresh=true retrains it instead).

nas.json:
    dataset, condensed, space, candidates   the setting and the candidates' names
    proxies          {proxy: {images, epochs, networks}}
    ground_truth     {folder, epochs, networks}
    rows             per candidate: knobs, {proxy}_accuracy, {proxy}_seconds, whole_accuracy,
                     whole_seconds (mean test accuracy in percent; training and test seconds)
    correlations     {proxy: {spearman, kendall}: {value, low, high}} (95% bootstrap intervals)
    selection        {proxy: chosen, its whole-data accuracy, the best one's, gap, rank}
    seconds          {proxy: training seconds of all candidates}, whole, and
                     time_saved {proxy: whole / proxy, and with the condensation time added}
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dmcondense.atomic import atomic_write, atomic_write_json
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError
from dmcondense.evaluation.baselines import select_random
from dmcondense.evaluation.nas import (
    Candidate,
    enumerate_space,
    rank_correlations,
    sample_space,
    selection,
    too_deep,
)
from dmcondense.evaluation.protocol import Protocol
from dmcondense.evaluation.score import LabelledImages, train_networks
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import load_synthetic
from dmcondense.jobs import build
from dmcondense.jobs.common import load_data, load_test, quiet_library_chatter
from dmcondense.models.convnet import ACTIVATIONS, GROUPNORM_GROUPS, NORMS, POOLINGS
from dmcondense.rng import derive_seed, generator


def run(cfg: DictConfig) -> Path:
    """The search in Hydra's run folder; `cfg` was checked by check_nas_config."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    quiet_library_chatter()
    run_search(cfg, run_dir)
    print(f"run folder: {run_dir}")
    return run_dir


def candidates_of(cfg: DictConfig) -> list[Candidate]:
    """The space's candidates, or `space.sample` of them drawn with generator(seed, "nas-sample");
    a candidate too deep for the data set's images stops the run here, before any training."""
    s = cfg.space
    for knob, valid in (("activation", ACTIVATIONS), ("norm", NORMS), ("pooling", POOLINGS)):
        for value in s[knob]:
            if value not in valid:
                raise ConfigError(
                    f"unknown space.{knob} '{value}'; choose from: {', '.join(valid)}"
                )
    space = enumerate_space(s.depth, s.width, s.activation, s.norm, s.pooling)
    count = None if str(s.sample) == "all" else int(s.sample)
    chosen = sample_space(space, count, generator(cfg.seed, "nas-sample"))
    image_size = int(cfg.dataset.image_size)
    vanishing = too_deep(chosen, image_size)
    if vanishing:
        raise ConfigError(
            f"candidate {vanishing[0].name} is too deep for {image_size}x{image_size} images "
            f"(its feature map vanishes; {len(vanishing)} of {len(chosen)} candidates do); "
            f"remove depth {vanishing[0].depth} and deeper from space.depth"
        )
    uneven = [c for c in chosen if c.norm == "groupnorm" and c.width % GROUPNORM_GROUPS]
    if uneven:
        raise ConfigError(
            f"candidate {uneven[0].name}: groupnorm splits the width into {GROUPNORM_GROUPS} "
            f"groups, which {uneven[0].width} channels do not divide; give space.width "
            f"multiples of {GROUPNORM_GROUPS} or drop groupnorm from space.norm"
        )
    return chosen


def check_matches(images: torch.Tensor, labels: torch.Tensor, spec: DatasetSpec, path: str) -> None:
    """The condensed set must fit the data set the candidates are scored on."""
    found = {"channels": images.shape[1], "image size": images.shape[-1],
             "classes": int(labels.max()) + 1}  # fmt: skip
    wanted = {"channels": spec.channels, "image size": spec.image_size,
              "classes": spec.num_classes}  # fmt: skip
    for fact, value in found.items():
        if value != wanted[fact]:
            raise ConfigError(
                f"the condensed set {path} does not match {spec.name}: {fact} {value} there, "
                f"{wanted[fact]} here; give dataset= the data set it was condensed from"
            )


def proxy_sets(
    cfg: DictConfig,
    dm: ClassBatchDataModule,
    spec: DatasetSpec,
    condensed: LabelledImages,
    ipc: int,
) -> dict[str, LabelledImages]:
    """The proxy training sets by name, in cfg.proxies' order: the condensed set itself, `ipc`
    random real images a class, or `fraction` of the training split (the same count a class)."""
    train = dm.train_set
    per_class_fraction = max(1, round(float(cfg.fraction) * len(train) / spec.num_classes))
    sets = {}
    for name in cfg.proxies:
        if name == "condensed":
            sets[name] = condensed
            continue
        count, stream = (ipc, "nas-random") if name == "random" else (per_class_fraction,
                                                                       "nas-fraction")  # fmt: skip
        try:
            index = select_random(train.labels, count, generator(cfg.seed, stream))
        except ValueError as error:
            raise ConfigError(f"proxy {name}: {error}; lower fraction=") from error
        sets[name] = (spec.normaliser.to_input(train.decode(index)), train.labels[index])
    return sets


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_json(path: Path, value: dict) -> None:
    atomic_write_json(path, value, indent=2)


def first_difference(stored: dict, wanted: dict) -> str | None:
    for key in sorted(set(stored) | set(wanted)):
        if stored.get(key) != wanted.get(key):
            return f"{key} {stored.get(key)!r} there, {wanted.get(key)!r} here"
    return None


def ground_truth_folder(cfg: DictConfig, spec: DatasetSpec, budget: dict) -> Path:
    """The cache folder of this data set, space and budget, checked against its budget.json."""
    g = cfg.ground_truth
    folder = Path(str(g.cache)) / (
        f"{spec.name}_{cfg.space.name}_e{int(g.epochs)}x{int(g.num_models)}"
    )
    stored = read_json(folder / "budget.json")
    difference = first_difference(stored, budget) if stored is not None else None
    if difference and not g.refresh:
        raise ConfigError(
            f"the ground-truth cache {folder} was made with another budget ({difference}); "
            f"set ground_truth.refresh=true to retrain it, or ground_truth.cache= to another folder"
        )
    if difference:
        print(f"ground truth: {folder} was made with another budget ({difference}); retraining")
        shutil.rmtree(folder)
    return folder


def train_candidate(
    candidate: Candidate, images, labels, test, *, protocol: Protocol, num_models: int,
    seed: int, spec: DatasetSpec, backend: str, device,
) -> dict:  # fmt: skip
    """Train `num_models` fresh networks of `candidate` (together where the backend batches
    one architecture's networks) and test them: {accuracy (mean %), accuracies, seconds}."""
    started = time.perf_counter()
    accuracies = train_networks(
        "convnet", images, labels, test.images, test.labels, num_models=num_models,
        protocol=protocol, seed=seed, normaliser=spec.normaliser, backend=backend,
        model_kwargs=candidate.knobs(), num_classes=spec.num_classes, device=device,
    )  # fmt: skip
    return {
        "accuracy": round(100 * float(accuracies.mean()), 2),
        "accuracies": [round(100 * float(a), 2) for a in accuracies],
        "seconds": round(time.perf_counter() - started, 2),
    }


def search_protocol(cfg: DictConfig, epochs: int) -> Protocol:
    """The DSA/DM papers' evaluation protocol with the eval group's constants and `epochs`."""
    e = cfg.eval
    return Protocol(epochs=epochs, lr=e.lr, momentum=e.momentum, weight_decay=e.weight_decay,
                    batch_size=e.batch_size, augment="dsa" if e.augment else "none")  # fmt: skip


def condensation_seconds(path: str) -> float | None:
    """The condensation time the run folder of the condensed set recorded, if it did."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    results = read_json(folder / "results.json")
    return results.get("condense_seconds") if results else None


def run_search(cfg: DictConfig, run_dir: Path) -> dict:
    """The whole search; returns nas.json's content."""
    path = str(cfg.condensed)
    candidates = candidates_of(cfg)
    try:
        dataset_condensed, meta = load_synthetic(path)
    except ValueError as error:  # not a synthetic.pt
        raise ConfigError(f"condensed={path}: {error}") from error
    condensed = tuple(dataset_condensed.tensors)
    dm = load_data(cfg)
    spec = resolve_spec(cfg.dataset, dm.train_set)
    check_matches(*condensed, spec, path)
    test = load_test(dm, cfg.dataset)
    device = build.eval_device(cfg)
    proxy_protocol = search_protocol(cfg, int(cfg.proxy.epochs))
    whole_protocol = search_protocol(cfg, int(cfg.ground_truth.epochs))
    backend = str(cfg.eval.backend)

    budget = {"protocol": dataclasses.asdict(whole_protocol), "seed": int(cfg.seed),
              "networks": int(cfg.ground_truth.num_models), "dataset": spec.name,
              "train_images": len(dm.train_set), "test_images": len(test.labels)}  # fmt: skip
    cache = ground_truth_folder(cfg, spec, budget)
    sets = proxy_sets(cfg, dm, spec, condensed, int(meta["ipc"]))
    settings = {"condensed": str(Path(path).resolve()), "proxies": list(sets),
                "protocol": dataclasses.asdict(proxy_protocol), "seed": int(cfg.seed),
                "networks": int(cfg.proxy.num_models), "fraction": float(cfg.fraction),
                "dataset": spec.name}  # fmt: skip
    stored = read_json(run_dir / "search.json")
    difference = first_difference(stored, settings) if stored is not None else None
    if difference:
        raise ConfigError(
            f"{run_dir} holds a search with other settings ({difference}); "
            "give a new hydra.run.dir or the same settings"
        )
    write_json(run_dir / "search.json", settings)
    write_json(cache / "budget.json", budget)

    rows = []
    whole_images = dm.train_set.decode(torch.arange(len(dm.train_set)))  # uint8
    for number, candidate in enumerate(candidates, 1):
        row = {"candidate": candidate.name, **candidate.knobs()}
        for name, (images, labels) in sets.items():
            row.update(_finished_or_trained(
                run_dir / "candidates" / name / f"{candidate.name}.json", name, candidate,
                images, labels, test, protocol=proxy_protocol,
                num_models=int(cfg.proxy.num_models), seed=int(cfg.seed),
                spec=spec, backend=backend, device=device,
            ))  # fmt: skip
        row.update(_finished_or_trained(
            cache / f"{candidate.name}.json", "whole", candidate, whole_images,
            dm.train_set.labels, test, protocol=whole_protocol,
            num_models=int(cfg.ground_truth.num_models), seed=int(cfg.seed),
            spec=spec, backend=backend, device=device,
        ))  # fmt: skip
        rows.append(row)
        shown = ", ".join(f"{n} {row[f'{n}_accuracy']:.2f}" for n in [*sets, "whole"])
        print(f"[{number}/{len(candidates)}] {candidate.name}: {shown}", flush=True)

    report = summarise(cfg, spec, path, sets, cache, rows, proxy_protocol)
    write_report(run_dir, report, rows, list(sets))
    print_report(report, list(sets))
    return report


def _finished_or_trained(file: Path, name: str, candidate: Candidate, images, labels, test,
                         **train) -> dict:  # fmt: skip
    """The candidate's result on one training set: read from `file` when a run finished it,
    else trained now and written at once (a killed search resumes from here)."""
    result = read_json(file)
    if result is None:
        result = train_candidate(candidate, images, labels, test, **train)
        write_json(file, result)
    return {f"{name}_accuracy": result["accuracy"], f"{name}_seconds": result["seconds"]}


def summarise(
    cfg: DictConfig,
    spec: DatasetSpec,
    path: str,
    sets: dict[str, LabelledImages],
    cache: Path,
    rows: list[dict],
    proxy_protocol: Protocol,
) -> dict:
    """nas.json's content: correlations, selections and times per proxy, and the rows."""
    names = [row["candidate"] for row in rows]
    truth = [row["whole_accuracy"] for row in rows]
    whole_seconds = round(sum(row["whole_seconds"] for row in rows), 1)
    condense = condensation_seconds(path)
    correlations, chosen, seconds, saved = {}, {}, {"whole": whole_seconds}, {}
    for name in sets:
        proxy = [row[f"{name}_accuracy"] for row in rows]
        correlations[name] = rank_correlations(
            proxy, truth, seed=derive_seed(cfg.seed, "nas-bootstrap", name),
            resamples=int(cfg.bootstrap),
        )  # fmt: skip
        chosen[name] = selection(names, proxy, truth)
        seconds[name] = round(sum(row[f"{name}_seconds"] for row in rows), 1)
        saved[name] = {"whole_over_proxy": round(whole_seconds / max(seconds[name], 1e-9), 2)}
        if name == "condensed" and condense is not None:
            saved[name]["whole_over_proxy_and_condensation"] = round(
                whole_seconds / (seconds[name] + condense), 2
            )
    return {
        "dataset": spec.name,
        "condensed": path,
        "condensation_seconds": condense,
        "space": OmegaConf.to_container(cfg.space, resolve=True),
        "candidates": names,
        "proxies": {
            n: {
                "images": len(labels),
                "epochs": proxy_protocol.epochs,
                "networks": int(cfg.proxy.num_models),
            }
            for n, (_, labels) in sets.items()
        },  # fmt: skip
        "ground_truth": {
            "folder": str(cache),
            "epochs": int(cfg.ground_truth.epochs),
            "networks": int(cfg.ground_truth.num_models),
        },  # fmt: skip
        "correlations": correlations,
        "selection": chosen,
        "seconds": seconds,
        "time_saved": saved,
        "rows": rows,
    }


def write_report(run_dir: Path, report: dict, rows: list[dict], proxies: list[str]) -> None:
    """nas.csv (one row a candidate), nas.png, then nas.json last: its presence means done."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run_dir / "nas.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    plot(run_dir / "nas.png", report, rows, proxies)
    write_json(run_dir / "nas.json", report)


def plot(path: Path, report: dict, rows: list[dict], proxies: list[str]) -> None:
    """Proxy accuracy against whole-data accuracy, one point a candidate, one colour a proxy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5))
    truth = [row["whole_accuracy"] for row in rows]
    for name in proxies:
        rho = report["correlations"][name]["spearman"]["value"]
        label = f"{name} (Spearman {rho:.2f})" if rho is not None else name
        axes.scatter(truth, [row[f"{name}_accuracy"] for row in rows], s=18, alpha=0.8,
                     label=label)  # fmt: skip
    axes.set_xlabel("whole-data test accuracy %")
    axes.set_ylabel("proxy test accuracy %")
    axes.set_title(f"{report['dataset']}: {len(rows)} candidates")
    axes.legend()
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def print_report(report: dict, proxies: list[str]) -> None:
    print(f"{'proxy':<11}{'Spearman [95% CI]':>26}{'Kendall [95% CI]':>26}"
          f"{'chosen whole %':>16}{'best %':>8}{'time saved':>12}")  # fmt: skip
    for name in proxies:
        c, s = report["correlations"][name], report["selection"][name]

        def cell(stat: dict) -> str:
            if stat["value"] is None:
                return "n/a"
            if stat["low"] is None:
                return f"{stat['value']:.2f} [n/a]"
            return f"{stat['value']:.2f} [{stat['low']:.2f}, {stat['high']:.2f}]"

        print(f"{name:<11}{cell(c['spearman']):>26}{cell(c['kendall']):>26}"
              f"{s['chosen_whole_accuracy']:>16.2f}{s['best_whole_accuracy']:>8.2f}"
              f"{report['time_saved'][name]['whole_over_proxy']:>11.1f}x")  # fmt: skip
