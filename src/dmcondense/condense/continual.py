"""Class-incremental learning with a condensed memory, end to end (the DM paper's
continual-learning experiment, made runnable from the raw data).

The classes arrive in `steps` equal groups, in an order drawn once from
generator(seed, "class-order"). At step k, for each memory method:
    1. the step's new classes alone are loaded (the DataModule's class filter), and either
       condensed into `ipc` images a class by a method of the engine (build.method, its preset,
       the Lightning trainer), or `ipc` real images a class are selected (random, herding,
       k-center: evaluation/baselines.py);
    2. they join the memory (labels are positions in the class order, so the memory of step k
       holds labels 0 .. seen-1);
    3. eval.num_models fresh networks are trained on the whole memory with the evaluation
       protocol (evaluation.score) and tested on the test images of every class seen so far.
A condensation sees only its own classes' real images, and only they are kept in memory while it
runs (an in-memory source's whole split passes through while it is read and filtered); the
memory itself grows by `ipc` (decoded) images a class a step.

Run folder:
    results.json, results.csv   accuracy per step and memory method (mean, std, each network)
    continual.png               accuracy against the number of classes seen, one line a method
    config.yaml                 the resolved config
    memory/settings.json        what a resume must agree with (written at the first start)
    memory/<method>/step_<k>/   synthetic.pt: the memory after step k, all classes seen so far
                                (load_synthetic); synthetic.png; result.json, written last: the
                                step is finished; checkpoints/ while the step condenses
Resume (resume=last or auto, same hydra.run.dir): finished steps are read back, the first
unfinished one starts again (a condensation from its last checkpoint), and every later figure is
what an uninterrupted run gives, bit for bit on the same machine.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from dmcondense import build
from dmcondense.condense.callbacks import FiniteLossGuard
from dmcondense.condense.checkpoints import KeepPreviousCheckpointIO, resume_checkpoint
from dmcondense.condense.continual_checks import SELECTIONS, check_steps, memory_methods
from dmcondense.condense.job import (
    evaluate,
    initial_images,
    quiet_library_chatter,
    resolved_config,
)
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.imageset import ImageSet, keep_classes
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError
from dmcondense.evaluation.baselines import (
    embed_features,
    select_herding,
    select_kcenter,
    select_random,
)
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import atomic_write, read_synthetic, save_grid, save_synthetic
from dmcondense.rng import generator

# Keys that may change between a run and its resume: they change no figure.
RESUME_FREE_KEYS = ("resume", "memory", "progress_every", "reuse_host_memory", "data_dir")


@dataclass(frozen=True)
class Schedule:
    """Which classes arrive when: `order` (data set class ids) cut into `steps` equal groups."""

    order: tuple[int, ...]
    steps: int

    @property
    def per_step(self) -> int:
        return len(self.order) // self.steps

    def new_classes(self, step: int) -> list[int]:
        """The class ids that arrive at `step` (1-based)."""
        return list(self.order[(step - 1) * self.per_step : step * self.per_step])

    def seen(self, step: int) -> list[int]:
        """Every class id seen by the end of `step`, in arrival order (label j = seen[j])."""
        return list(self.order[: step * self.per_step])


def class_order(num_classes: int, seed: int) -> list[int]:
    """The fixed-seed arrival order of the classes."""
    return torch.randperm(num_classes, generator=generator(seed, "class-order")).tolist()


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


@dataclass
class NewImages:
    """One step's addition to a memory, labelled 0.. within the step."""

    images: torch.Tensor
    labels: torch.Tensor
    source_indices: torch.Tensor
    iterations: int  # condensation steps made (0 for a selection)


def unit_dir(run_dir: Path, method: str, step: int) -> Path:
    return run_dir / "memory" / method / f"step_{step:02d}"


def step_data(cfg: DictConfig, classes: list[int] | None) -> ClassBatchDataModule:
    """The DataModule holding `classes`' training images alone (None: all), set up."""
    dm = build.datamodule(cfg, classes=classes)
    try:
        dm.prepare_data()
        dm.setup("fit")
    except ConfigError:
        raise
    except ValueError as error:  # the loaders' complaints about the files they read
        message = str(error).strip().splitlines()[0]
        raise ConfigError(f"{cfg.dataset.name} data: {message}") from error
    return dm


def whole_split_spec(cfg: DictConfig) -> DatasetSpec:
    """The data set's facts from its whole training split, read once and then let go."""
    return resolve_spec(cfg.dataset, step_data(cfg, None).train_set)


def step_spec(spec: DatasetSpec, classes: list[int]) -> DatasetSpec:
    """The data set's facts as a step sees them: only its classes, relabelled 0.."""
    names = tuple(spec.class_names[c] for c in classes)
    return dataclasses.replace(spec, num_classes=len(classes), class_names=names)


def source_of(dm: ClassBatchDataModule, indices: torch.Tensor) -> torch.Tensor:
    """Indices into the step's images -> indices into the whole training split."""
    return indices if dm.source_indices is None else dm.source_indices[indices]


def condense_classes(
    cfg: DictConfig, spec: DatasetSpec, classes: list[int], work_dir: Path
) -> NewImages:
    """`classes` condensed by the method of `cfg` (its own config, composed with method=<name>),
    exactly as `train` condenses a data set of these classes; resumes from work_dir's last
    checkpoint when one is there."""
    dm = step_data(cfg, classes)
    seen_by_step = step_spec(spec, classes)
    factor = cfg.synthetic.factor
    init, init_indices = initial_images(cfg, dm, seen_by_step, cfg.init, factor)
    module = build.method(cfg, seen_by_step, init)
    checkpoints = ModelCheckpoint(
        dirpath=work_dir / "checkpoints",
        save_last=True,
        every_n_train_steps=cfg.save_every,
        save_top_k=0,
    )
    guard = FiniteLossGuard(every=math.gcd(10, cfg.save_every))
    trainer = build.trainer(
        cfg, work_dir, [guard, checkpoints], plugins=[KeepPreviousCheckpointIO()]
    )
    trainer.fit(module, datamodule=dm, ckpt_path=resume_checkpoint("auto", work_dir))
    images, labels = module.decoded()
    return NewImages(
        images.detach().cpu(), labels.cpu(), source_of(dm, init_indices), trainer.global_step
    )


def select_classes(
    cfg: DictConfig, spec: DatasetSpec, method: str, classes: list[int], step: int
) -> NewImages:
    """`ipc` real images of each of `classes`, chosen by `method` (random | herding | kcenter)
    among those classes' training images only."""
    dm = step_data(cfg, classes)
    train = dm.train_set
    try:
        if method == "random":
            index = select_random(train.labels, cfg.ipc, generator(cfg.seed, "memory-random", step))
        else:
            features = embed_features(
                train.decode(torch.arange(len(train))), spec.normaliser, seed=cfg.seed,
                image_size=spec.image_size, channels=spec.channels, num_classes=len(classes),
                train_epochs=cfg.coreset_train_epochs, train_labels=train.labels,
                device=build.eval_device(cfg),
                model_kwargs=OmegaConf.to_container(cfg.eval.architectures.convnet, resolve=True),
            )  # fmt: skip
            if method == "herding":
                index = select_herding(features, train.labels, cfg.ipc)
            else:
                g = generator(cfg.seed, "memory-kcenter", step)
                index = select_kcenter(features, train.labels, cfg.ipc, g)
    except ValueError as error:  # a class with fewer images than ipc
        raise ConfigError(f"{spec.name} data: {error}; set ipc lower") from error
    images = spec.normaliser.to_input(train.decode(index))
    return NewImages(images, train.labels[index], source_of(dm, index), 0)


def seen_test_split(cfg: DictConfig, seen: list[int]) -> ImageSet:
    """The test images of the `seen` classes, labelled by their position in `seen`."""
    test = build.datamodule(cfg).load("test")
    return keep_classes(test, seen)[0]


def score_memory(
    cfg: DictConfig, spec: DatasetSpec, name: str, memory: Memory, test: ImageSet
) -> dict:
    """{architecture: accuracy summary} of eval.num_models fresh networks trained on `memory`
    with the common protocol, tested on `test`."""
    sets = {name: (memory.images, memory.labels)}
    return evaluate(cfg, sets, test, spec, device=build.eval_device(cfg))[name]


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


def run_continual(cfg: DictConfig, method_configs: Mapping[str, DictConfig], run_dir: Path) -> dict:
    """The whole experiment into `run_dir`; returns the content of results.json.

    `cfg` is the continual config (data, ipc, steps, evaluation); `method_configs` holds, for
    each condensing memory method, the same config composed with method=<name> (its preset).
    """
    started = time.time()
    methods = memory_methods(cfg)
    build.check_evaluation(cfg)
    spec = whole_split_spec(cfg)
    check_steps(int(cfg.steps), spec.num_classes, spec.name)
    order = class_order(spec.num_classes, cfg.seed)
    schedule = Schedule(tuple(order), int(cfg.steps))
    prepare_run_folder(cfg, run_dir, settings_of(cfg, spec, order))
    atomic_write(
        run_dir / "config.yaml", lambda tmp: OmegaConf.save(resolved_config(cfg, spec), tmp)
    )
    memories = {m: Memory.empty(spec) for m in methods}
    per_step: list[dict] = []
    for step in range(1, schedule.steps + 1):
        new, seen = schedule.new_classes(step), schedule.seen(step)
        results: dict[str, dict] = {}
        test = None
        for method in methods:
            unit = unit_dir(run_dir, method, step)
            finished = read_finished(unit)
            if finished is None:
                test = test if test is not None else seen_test_split(cfg, seen)
                method_cfg = method_configs.get(method, cfg)
                finished = run_unit(
                    cfg, method_cfg, spec, method, schedule, step, memories[method], test, unit
                )
            memories[method], result = finished
            results[method] = result["results"]
            print_unit(schedule, step, method, result)
        per_step.append(
            {"step": step, "classes_seen": len(seen), "new_classes": new, "results": results}
        )
        write_results(run_dir, summary(cfg, spec, schedule, methods, per_step, started))
    return summary(cfg, spec, schedule, methods, per_step, started)


def run_unit(
    cfg: DictConfig,
    method_cfg: DictConfig,
    spec: DatasetSpec,
    method: str,
    schedule: Schedule,
    step: int,
    memory: Memory,
    test: ImageSet,
    unit: Path,
) -> tuple[Memory, dict]:
    """One memory method at one step: add the step's classes to `memory`, score it, write it."""
    new = schedule.new_classes(step)
    began = time.time()
    if method in SELECTIONS:
        added = select_classes(cfg, spec, method, new, step)
    else:
        added = condense_classes(method_cfg, spec, new, unit)
    offset = (step - 1) * schedule.per_step  # step labels 0.. -> positions in the class order
    memory = memory.add(added.images, added.labels + offset, added.source_indices)
    made = time.time()
    results = score_memory(cfg, spec, method, memory, test)
    result = {
        "memory": method,
        "step": step,
        "classes_seen": offset + len(new),
        "new_classes": new,
        "memory_images": int(memory.images.shape[0]),
        "iterations": added.iterations,
        "make_seconds": round(made - began, 1),
        "eval_seconds": round(time.time() - made, 1),
        "results": results,
    }
    meta = {
        "method": method,
        "step": step,
        "steps": schedule.steps,
        "class_order": list(schedule.order),
        "classes": schedule.seen(step),
    }
    config = resolved_config(method_cfg if method not in SELECTIONS else cfg, spec)
    write_finished(unit, memory, result, spec, meta, config)
    return memory, result


def average_over_steps(per_step: list[dict], methods: list[str]) -> dict:
    """Each method's mean accuracy over the steps done (the average incremental accuracy)."""
    averages: dict[str, dict] = {}
    for method in methods:
        by_arch: dict[str, list[float]] = {}
        for entry in per_step:
            for arch, figures in entry["results"].get(method, {}).items():
                by_arch.setdefault(arch, []).append(figures["mean"])
        averages[method] = {a: round(sum(v) / len(v), 2) for a, v in by_arch.items()}
    return averages


def summary(
    cfg: DictConfig,
    spec: DatasetSpec,
    schedule: Schedule,
    methods: list[str],
    per_step: list[dict],
    started: float,
) -> dict:
    return {
        "dataset": spec.name,
        "num_classes": spec.num_classes,
        "steps": schedule.steps,
        "classes_per_step": schedule.per_step,
        "ipc": cfg.ipc,
        "seed": cfg.seed,
        "memory": methods,
        "class_order": list(schedule.order),
        "class_order_names": [spec.class_names[c] for c in schedule.order],
        "eval_protocol": cfg.eval.protocol,
        "eval_epochs": cfg.eval.epochs,
        "eval_num_models": cfg.eval.num_models,
        "eval_models": list(cfg.eval.models),
        "finished_steps": len(per_step),
        "seconds": round(time.time() - started, 1),
        "per_step": per_step,
        "average_over_steps": average_over_steps(per_step, methods),
    }


def table_rows(results: dict) -> list[dict]:
    """results.json -> one row per step, memory method and architecture."""
    return [
        {
            "step": entry["step"],
            "classes_seen": entry["classes_seen"],
            "memory": method,
            "architecture": arch,
            "mean": figures["mean"],
            "std": figures["std"],
            "networks": len(figures["accuracies"]),
        }
        for entry in results["per_step"]
        for method, by_arch in entry["results"].items()
        for arch, figures in by_arch.items()
    ]


def write_results(run_dir: Path, results: dict) -> None:
    """results.json, results.csv and continual.png, each written atomically."""
    atomic_write(
        run_dir / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2))
    )
    rows = table_rows(results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(run_dir / "results.csv", lambda tmp: Path(tmp).write_text(buffer.getvalue()))
    atomic_write(run_dir / "continual.png", lambda tmp: plot_accuracy(results, Path(tmp)))


def plot_accuracy(results: dict, path: Path) -> None:
    """Test accuracy against the number of classes seen, one line per memory method (and
    architecture, when several are scored), error bars one std."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    lines: dict[str, tuple[list[int], list[float], list[float]]] = {}
    several = len(results["eval_models"]) > 1
    for entry in results["per_step"]:
        for method, by_arch in entry["results"].items():
            for arch, figures in by_arch.items():
                label = f"{method} ({arch})" if several else method
                xs, means, stds = lines.setdefault(label, ([], [], []))
                xs.append(entry["classes_seen"])
                means.append(figures["mean"])
                stds.append(figures["std"])
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, (xs, means, stds) in lines.items():
        axes.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
    seen = [results["classes_per_step"] * k for k in range(1, results["steps"] + 1)]
    axes.set_xticks(seen, [str(n) for n in seen])
    axes.set_xlabel("classes seen")
    axes.set_ylabel("test accuracy on the classes seen (%)")
    axes.set_title(
        f"{results['dataset']}: {results['steps']} steps, IPC {results['ipc']}, "
        f"{results['eval_num_models']} networks a point",
        fontsize="medium",
    )
    axes.grid(alpha=0.3)
    axes.legend(title="memory")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def print_unit(schedule: Schedule, step: int, method: str, result: dict) -> None:
    figures = ", ".join(
        f"{arch} {r['mean']:.2f} +- {r['std']:.2f} %" for arch, r in result["results"].items()
    )
    print(
        f"continual step {step}/{schedule.steps} ({result['classes_seen']} classes seen), "
        f"memory {method} ({result['memory_images']} images): {figures}",
        flush=True,
    )


def print_table(results: dict) -> None:
    """The per-step table: one row per step, one column per memory method (and architecture)."""
    several = len(results["eval_models"]) > 1
    columns = [(method, arch) for method in results["memory"] for arch in results["eval_models"]]
    names = [f"{method}/{arch}" if several else method for method, arch in columns]
    width = max(16, *(len(name) for name in names))
    print(" | ".join([f"{'step':>4}", f"{'classes':>7}", *(name.rjust(width) for name in names)]))
    for entry in results["per_step"]:
        cells = [f"{entry['step']:>4}", f"{entry['classes_seen']:>7}"]
        for method, arch in columns:
            r = entry["results"].get(method, {}).get(arch)
            cells.append((f"{r['mean']:.2f} +- {r['std']:.2f}" if r else "").rjust(width))
        print(" | ".join(cells))


def run(cfg: DictConfig, method_configs: Mapping[str, DictConfig]) -> Path:
    """The job of `python -m dmcondense.continual`, in Hydra's run folder."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_library_chatter()
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    results = run_continual(cfg, method_configs, run_dir)
    print(
        f"accuracy on the test images of the classes seen ({cfg.eval.num_models} networks x "
        f"{cfg.eval.epochs} epochs per memory and step):"
    )
    print_table(results)
    print(f"wall time {results['seconds']:.0f} s; memory per step: {run_dir / 'memory'}")
    print(f"run folder: {run_dir}")
    return run_dir
