"""A continual run's figures: results.json and .csv, continual.png and the printed table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from dmcondense.data.spec import DatasetSpec
from dmcondense.io import atomic_write
from dmcondense.jobs.common import write_results as write_table

if TYPE_CHECKING:
    from dmcondense.jobs.continual.loop import Schedule


def average_over_steps(per_step: list[dict], methods: list[str]) -> dict:
    """Each method's mean accuracy over the steps done and scored (the average incremental
    accuracy when every step is scored)."""
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
        "score_steps": cfg.score_steps,
        "finished_steps": len(per_step),
        "seconds": round(time.time() - started, 1),
        "per_step": per_step,
        "average_over_steps": average_over_steps(per_step, methods),
    }


COLUMNS = ["step", "classes_seen", "memory", "architecture", "mean", "std", "networks"]


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
    write_table(run_dir, results, table_rows(results), COLUMNS)  # no rows before a scored step
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
    if lines:  # none before the first scored step (score_steps=last)
        axes.legend(title="memory")
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def print_unit(schedule: Schedule, step: int, method: str, result: dict) -> None:
    figures = ", ".join(
        f"{arch} {r['mean']:.2f} +- {r['std']:.2f} %" for arch, r in result["results"].items()
    )
    figures = figures or "not scored (score_steps=last)"
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
