"""Class-incremental learning with a condensed memory, end to end (the DM paper's
continual-learning experiment, made runnable from the raw data).

The classes arrive in `steps` equal groups, in an order drawn once from
generator(seed, "class-order"). At step k, for each memory method:
    1. the step's new classes alone are loaded (the DataModule's class filter), and either
       condensed into `ipc` images a class by a method of the engine (build.method, its preset,
       the Lightning trainer), or `ipc` real images a class are selected (random, herding,
       k-center: jobs/common.select_real);
    2. they join the memory (labels are positions in the class order, so the memory of step k
       holds labels 0 .. seen-1);
    3. eval.num_models fresh networks are trained on the whole memory with the evaluation
       protocol (evaluation.score) and tested on the test images of every class seen so far.
A condensation sees only its own classes' real images, and only they are kept in memory while it
runs (an in-memory source's whole split passes through while it is read and filtered); the
memory itself grows by `ipc` (decoded) images a class a step.

Run folder: results.json, results.csv and continual.png (report.py); config.yaml and memory/,
each finished step's memory (store.py).
Resume (resume=last or auto, same hydra.run.dir): finished steps are read back, the first
unfinished one starts again (a condensation from its last checkpoint), and every later figure is
what an uninterrupted run gives, bit for bit on the same machine.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.imageset import ImageSet, keep_classes
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.evaluation.plan import EvaluationPlan
from dmcondense.glue.callbacks import FiniteLossGuard
from dmcondense.glue.checkpoints import (
    KeepPreviousCheckpointIO,
    last_checkpoint,
    resume_checkpoint,
)
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import atomic_write
from dmcondense.jobs import build
from dmcondense.jobs.checks import SELECTIONS, check_steps, memory_methods
from dmcondense.jobs.common import (
    initial_images,
    load_data,
    quiet_library_chatter,
    resolved_config,
    select_real,
)
from dmcondense.jobs.continual.report import print_table, print_unit, summary, write_results
from dmcondense.jobs.continual.store import (
    Memory,
    prepare_run_folder,
    read_finished,
    settings_of,
    unit_dir,
    write_finished,
)
from dmcondense.rng import generator


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


@dataclass
class NewImages:
    """One step's addition to a memory, labelled 0.. within the step."""

    images: torch.Tensor
    labels: torch.Tensor
    source_indices: torch.Tensor
    iterations: int  # condensation steps made (0 for a selection)


def whole_split_spec(cfg: DictConfig) -> DatasetSpec:
    """The data set's facts from its whole training split, read once and then let go."""
    return resolve_spec(cfg.dataset, load_data(cfg).train_set)


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
    dm = load_data(cfg, classes=classes)
    seen_by_step = step_spec(spec, classes)
    factor = cfg.synthetic.factor
    init, init_indices = initial_images(cfg, dm, seen_by_step, cfg.init, factor)
    module = build.method(cfg, seen_by_step, init)
    checkpoints = last_checkpoint(work_dir, cfg.save_every)
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
    dm = load_data(cfg, classes=classes)
    train = dm.train_set
    keys = (("memory-random", step), ("memory-kcenter", step))
    index = select_real(cfg, train, step_spec(spec, classes), method, cfg.seed, *keys)
    images = spec.normaliser.to_input(train.decode(index))
    return NewImages(images, train.labels[index], source_of(dm, index), 0)


def seen_test_split(cfg: DictConfig, seen: list[int]) -> ImageSet:
    """The test images of the `seen` classes, labelled by their position in `seen`."""
    test = build.datamodule(cfg).load("test")
    return keep_classes(test, seen)[0]


def score_memory(
    plan: EvaluationPlan, spec: DatasetSpec, name: str, memory: Memory, test: ImageSet, device
) -> dict:
    """{architecture: accuracy summary} of the plan's fresh networks trained on `memory`,
    tested on `test`."""
    sets = {name: [(memory.images, memory.labels)]}
    return plan.summaries(sets, test, spec.normaliser, device, progress=True)[name]


def run_continual(cfg: DictConfig, method_configs: Mapping[str, DictConfig], run_dir: Path) -> dict:
    """The whole experiment into `run_dir`; returns the content of results.json.

    `cfg` is the continual config (data, ipc, steps, evaluation); `method_configs` holds, for
    each condensing memory method, the same config composed with method=<name> (its preset).
    """
    started = time.time()
    methods = memory_methods(cfg)
    spec = whole_split_spec(cfg)
    plan = build.evaluation_plan(cfg, spec)
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
        scored = cfg.score_steps == "all" or step == schedule.steps
        for method in methods:
            unit = unit_dir(run_dir, method, step)
            finished = read_finished(unit)
            if finished is None:
                if scored and test is None:
                    test = seen_test_split(cfg, seen)
                method_cfg = method_configs.get(method, cfg)
                finished = run_unit(
                    cfg,
                    method_cfg,
                    spec,
                    plan,
                    method,
                    schedule,
                    step,
                    memories[method],
                    test,
                    unit,
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
    plan: EvaluationPlan,
    method: str,
    schedule: Schedule,
    step: int,
    memory: Memory,
    test: ImageSet | None,
    unit: Path,
) -> tuple[Memory, dict]:
    """One memory method at one step: add the step's classes to `memory`, score it on `test`
    (not at all when None: score_steps=last before the last step), write it."""
    new = schedule.new_classes(step)
    began = time.time()
    if method in SELECTIONS:
        added = select_classes(cfg, spec, method, new, step)
    else:
        added = condense_classes(method_cfg, spec, new, unit)
    offset = (step - 1) * schedule.per_step  # step labels 0.. -> positions in the class order
    memory = memory.add(added.images, added.labels + offset, added.source_indices)
    made = time.time()
    results = {}
    if test is not None:
        results = score_memory(plan, spec, method, memory, test, build.eval_device(cfg))
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


def run(cfg: DictConfig, method_configs: Mapping[str, DictConfig]) -> Path:
    """The job of `python -m dmcondense.continual`, in Hydra's run folder."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_library_chatter()
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    results = run_continual(cfg, method_configs, run_dir)
    when = "and step" if cfg.score_steps == "all" else "at the last step"
    print(
        f"accuracy on the test images of the classes seen ({cfg.eval.num_models} networks x "
        f"{cfg.eval.epochs} epochs per memory {when}):"
    )
    print_table(results)
    print(f"wall time {results['seconds']:.0f} s; memory per step: {run_dir / 'memory'}")
    print(f"run folder: {run_dir}")
    return run_dir
