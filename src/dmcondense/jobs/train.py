"""The train job: data, initial set, Lightning fit, then the basic evaluation.

Everything the user can get wrong (config values, data folders and files) is checked before the
first output is written and reported as a ConfigError: one line, no traceback, no synthetic.pt
or results.json left behind. Only Hydra's own record (.hydra/, train.log) stays in the run folder.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from dmcondense.data.spec import DatasetSpec
from dmcondense.evaluation.plan import EvaluationPlan
from dmcondense.export import export_imagefolder, export_tensors
from dmcondense.glue import tracking
from dmcondense.glue.callbacks import FiniteLossGuard, ImageLogger, SyntheticWriter
from dmcondense.glue.checkpoints import (
    KeepPreviousCheckpointIO,
    last_checkpoint,
    resume_checkpoint,
)
from dmcondense.glue.periodic_evaluation import PeriodicEvaluation
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import atomic_write
from dmcondense.jobs import build
from dmcondense.jobs.common import (
    accuracy_rows,
    dataset_spec,
    initial_images,
    load_data,
    load_test,
    quiet_library_chatter,
    resolved_config,
    write_results,
)
from dmcondense.jobs.experts import correct_initial_images, make_experts
from dmcondense.jobs.pretrain import make_pool, teacher
from dmcondense.methods.base import CondensationMethod

RANDOM_LABEL = "(random real images, same budget)"
GRIDS_PER_RUN = 10  # image grids sent to the logger over a run, unless log_images_every is set


def run(cfg: DictConfig) -> Path:
    """Condense with the `method` group's module, then score the set; `cfg` was checked by
    `check_config` (the entry point does it before torch loads) and is never changed."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    quiet_library_chatter()
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = load_data(cfg)
    test = load_test(dm, cfg.dataset)
    spec = dataset_spec(cfg, dm.train_set)
    build.check_evaluation(cfg)
    if build.uses_experts(cfg):
        build.check_expert_window(cfg)  # before training experts the run could not use
        if cfg.experts.build == "auto":
            make_experts(cfg, dm, spec)  # the missing expert trajectories (init=correct reads them)
    if cfg.init == "correct":  # DATM's: real images the experts classify correctly
        init, init_indices = correct_initial_images(cfg, dm, spec)
    else:
        init, init_indices = initial_images(cfg, dm, spec, cfg.init, cfg.synthetic.factor)
    if build.uses_pool(cfg) and cfg.pool.build == "auto":
        make_pool(cfg, dm, spec)  # the missing networks of the method's pretrained pool
    plan = build.evaluation_plan(cfg, spec, teacher=teacher(cfg, dm, spec))
    module = build.method(cfg, spec, init)
    build.mtt_plan(plan, module.scoring_lr(), f"method={module.name}'s set")  # before condensing
    resolved = resolved_config(cfg, spec)
    metadata = {
        "class_names": list(spec.class_names),
        "mean": list(spec.mean),
        "std": list(spec.std),
        **({"pixels": "zca", "zca": spec.zca_state()} if spec.zca is not None else {}),
        "init_indices": init_indices,
        "config": resolved,
    }
    checkpoints = last_checkpoint(run_dir, cfg.save_every)
    writer = SyntheticWriter(run_dir, metadata, cfg.save_every)
    callbacks = [
        # The guard runs first, so a non-finite set never replaces the last good synthetic.pt.
        FiniteLossGuard(every=math.gcd(10, cfg.save_every), writer=writer),
        writer,
        ImageLogger(cfg.log_images_every or max(1, cfg.iterations // GRIDS_PER_RUN)),
        checkpoints,
    ]
    if cfg.eval.every:
        callbacks.append(PeriodicEvaluation(cfg.eval.every, plan))
    trainer = build.trainer(cfg, run_dir, callbacks, [KeepPreviousCheckpointIO()])
    ckpt = resume_checkpoint(cfg.resume, run_dir)
    tracking.log_config(trainer.loggers, resolved)
    loaded = time.time()
    try:
        summary = condense_and_score(cfg, spec, plan, trainer, module, dm, test, init, ckpt)
        if summary is not None:  # rank zero
            summary["load_seconds"] = round(loaded - started, 3)
            summary["total_seconds"] = round(time.time() - started, 3)
            write_results(run_dir, summary, accuracy_rows(summary["results"]))
            tracking.log_results(trainer.loggers, summary["results"], trainer.global_step, resolved)
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
    networks, epochs = summary["eval_num_models"], summary["eval_epochs"]
    trained = (
        f"{epochs} epoch{'s' * (epochs != 1)}"
        if isinstance(epochs, int) and summary["eval_protocol"] in ("dsa", "mtt")
        else f"the {summary['eval_protocol']} protocol"
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
        what = "image files" if cfg.export == "imagefolder" else "images.pt and labels.pt"
        print(f"exported as {what}: {run_dir / 'export'}")
    if summary["eval_protocol"] == "mtt" and "learned_lr" in summary:
        print(f"the condensed set trained at its learned step size {summary['learned_lr']:.6g}")
    for note in notes:
        print(note)
    print(f"run folder: {run_dir}")


def condense_and_score(
    cfg: DictConfig,
    spec: DatasetSpec,
    plan: EvaluationPlan,
    trainer: L.Trainer,
    module: CondensationMethod,
    dm,
    test,
    init: torch.Tensor,
    ckpt: str | None,
) -> dict | None:
    """Fit, then (on rank zero) export and score the condensed set and random real images;
    returns the content of results.json but its timings of the whole job."""
    fit_started = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    condense_seconds = time.time() - fit_started
    if not trainer.is_global_zero:
        return None
    run_dir = Path(trainer.default_root_dir)
    tracking.log_synthetic_artifact(trainer.loggers, run_dir, spec.name)
    if cfg.export:
        exporter = {"imagefolder": export_imagefolder, "tensors": export_tensors}[cfg.export]
        exporter(run_dir / "synthetic.pt", run_dir / "export")

    images, labels = module.decoded()
    # The random baseline: ipc real images a class at full size, the same stored pixels.
    same_draw = cfg.init == "real" and cfg.synthetic.factor == 1
    random_real = init if same_draw else initial_images(cfg, dm, spec, "real")[0]
    sets = {
        module.name: [(images.cpu(), labels.cpu())],
        "random": [(random_real, module.labels.cpu())],
    }
    # The job's evaluation device, not module.device: Lightning's teardown moved the module to
    # the CPU when fit ended.
    device = build.eval_device(cfg)
    if plan.protocol_name == "mtt":  # the condensed set trains at its learned step size
        condensed = build.mtt_plan(plan, module.scoring_lr(), f"method={module.name}'s set")
        results = condensed.summaries(
            {module.name: sets[module.name]}, test, spec.normaliser, device, progress=True
        )
        results |= plan.summaries(
            {"random": sets["random"]}, test, spec.normaliser, device, progress=True
        )
    else:
        results = plan.summaries(sets, test, spec.normaliser, device, progress=True)
    return {
        "dataset": spec.name,
        "method": module.name,
        "ipc": cfg.ipc,
        "factor": cfg.synthetic.factor,
        "decoded_per_class": module.synthetic_images.decoded_per_class,
        "iterations": cfg.iterations,
        "seed": cfg.seed,
        "eval_protocol": plan.protocol_name,
        "eval_epochs": epochs_run(plan),
        "eval_num_models": plan.num_models,
        "evaluation": {**plan.record(), "device": str(device)},
        **({} if module.scoring_lr() is None else {"learned_lr": module.scoring_lr()}),
        "steps": trainer.global_step,
        "condense_seconds": round(condense_seconds, 3),  # ms: short fits are divided by it
        "results": results,
    }


def epochs_run(plan: EvaluationPlan) -> int | dict[str, int]:
    """The epochs the evaluation networks trained: one number, or one per architecture when
    their protocols differ (the dc protocol's BatchNorm and MNIST cases)."""
    epochs = {name: protocol.epochs for name, protocol in plan.protocols.items()}
    return next(iter(epochs.values())) if len(set(epochs.values())) == 1 else epochs
