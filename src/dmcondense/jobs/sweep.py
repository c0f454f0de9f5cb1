"""The summary of a sweep (`python -m dmcondense.train -m ...`): one row per run.

A Hydra callback reads every run folder's results.json once all jobs have returned and writes
summary.csv, summary.md and summary.png (accuracy against IPC) into the sweep folder. It scans
the folder rather than collecting job returns, so it works the same whether the jobs ran here or
on a cluster (submitit).
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

FIXED_COLUMNS = [
    "run",
    "overrides",
    "status",
    "dataset",
    "ipc",
    "iterations",
    "seed",
    "condense_seconds",
    "total_seconds",
]


def _natural_key(path: Path) -> list:
    """Run folders in job order: "10_..." after "9_..."."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def run_folders(sweep_dir: Path) -> list[Path]:
    """Folders under `sweep_dir` that hold a run: its results.json or Hydra's record of it."""
    found = {p.parent for p in sweep_dir.rglob("results.json")}
    found |= {p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")}
    found.discard(sweep_dir)
    return sorted(found, key=lambda p: _natural_key(p.relative_to(sweep_dir)))


def run_row(sweep_dir: Path, run_dir: Path) -> dict[str, Any]:
    """One run's figures; a run without results.json (failed, killed) keeps its row, blank."""
    row: dict[str, Any] = {"run": str(run_dir.relative_to(sweep_dir))}
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        row["overrides"] = [str(o) for o in OmegaConf.load(overrides)]
    results = run_dir / "results.json"
    if not results.is_file():
        row["status"] = "no results.json"
        return row
    summary = json.loads(results.read_text())
    row["status"] = "ok"
    for key in FIXED_COLUMNS[3:]:
        row[key] = summary.get(key)
    for set_name, by_model in summary.get("results", {}).items():
        for model_name, figures in by_model.items():
            row[f"{set_name}/{model_name} mean"] = figures["mean"]
            row[f"{set_name}/{model_name} std"] = figures["std"]
    return row


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run folder under `sweep_dir`, in job order.

    "overrides" keeps what tells the runs apart: an override shared by every run is dropped.
    """
    sweep_dir = Path(sweep_dir)
    rows = [run_row(sweep_dir, run_dir) for run_dir in run_folders(sweep_dir)]
    lists = [row.get("overrides", []) for row in rows]
    shared = set.intersection(*map(set, lists)) if len(rows) > 1 else set()
    for row, overrides in zip(rows, lists, strict=True):
        row["overrides"] = " ".join(o for o in overrides if o not in shared)
    return rows


def accuracy_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The "<set>/<model>" accuracy columns that appear in any row, first seen first."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.endswith(" mean"):
                names[key.removesuffix(" mean")] = None
    return list(names)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, accuracies as "mean ± std" (%)."""
    accuracies = accuracy_columns(rows)
    header = FIXED_COLUMNS + [f"{name} (%)" for name in accuracies]

    def cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [cell(row.get(key)) for key in FIXED_COLUMNS]
        for name in accuracies:
            mean, std = row.get(f"{name} mean"), row.get(f"{name} std")
            cells.append("" if mean is None else f"{mean:.2f} ± {std:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


Curve = tuple[list[int], list[float], list[float]]


def curves(rows: list[dict[str, Any]]) -> dict[str, Curve]:
    """ "<data set> <set> (<model>)" -> (IPCs, mean accuracies, stds): one curve per data set, set
    (the method's condensed set, or random real images) and architecture, over the finished runs.
    Runs that share a curve and an IPC (other seeds, other settings) are averaged."""
    points: dict[str, dict[int, list[tuple[float, float]]]] = {}
    for row in rows:
        if row.get("status") != "ok" or row.get("ipc") is None:
            continue
        for name in accuracy_columns([row]):
            set_name, model = name.split("/", 1)
            label = f"{row.get('dataset')} {set_name} ({model})"
            figures = (row[f"{name} mean"], row[f"{name} std"])
            points.setdefault(label, {}).setdefault(int(row["ipc"]), []).append(figures)
    found = {}
    for label, by_ipc in points.items():
        ipcs = sorted(by_ipc)
        means = [sum(m for m, _ in by_ipc[i]) / len(by_ipc[i]) for i in ipcs]
        stds = [sum(s for _, s in by_ipc[i]) / len(by_ipc[i]) for i in ipcs]
        found[label] = (ipcs, means, stds)
    return found


def plot_curves(found: dict[str, Curve], path: Path) -> None:
    """Accuracy against IPC with error bars (one std), random real images dashed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8.0, 4.2), dpi=120)
    for label, (ipcs, means, stds) in found.items():
        style = "--" if " random " in label else "-"
        axes.errorbar(ipcs, means, yerr=stds, marker="o", capsize=3, linestyle=style, label=label)
    all_ipcs = [i for ipcs, _, _ in found.values() for i in ipcs]
    if max(all_ipcs) >= 10 * min(all_ipcs):
        axes.set_xscale("log")
    axes.set_xticks(sorted(set(all_ipcs)), [str(i) for i in sorted(set(all_ipcs))])
    axes.set_xlabel("images per class (IPC)")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """summary.csv (mean and std columns apart), summary.md and, when a run finished,
    summary.png in `sweep_dir`."""
    from dmcondense.io import atomic_write  # torch, only when there is a summary to write

    sweep_dir = Path(sweep_dir)
    columns = FIXED_COLUMNS + [
        f"{name} {stat}" for name in accuracy_columns(rows) for stat in ("mean", "std")
    ]

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)

    csv_path = atomic_write(sweep_dir / "summary.csv", write_csv)
    md_path = atomic_write(
        sweep_dir / "summary.md", lambda tmp: Path(tmp).write_text(markdown_table(rows))
    )
    found = curves(rows)
    if found:
        atomic_write(sweep_dir / "summary.png", lambda tmp: plot_curves(found, Path(tmp)))
    return csv_path, md_path


def is_rank_zero() -> bool:
    """False in the copies of the command that Lightning's DDP starts for the other ranks: with
    -m each copy replays the whole sweep in step with rank 0, and would write a summary of
    runs whose results.json rank 0 has not written yet."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


class SweepSummary(Callback):
    """Hydra callback (conf/config.yaml, hydra.callbacks): summarise a multirun at its end."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = collect(sweep_dir)
        if not rows:
            print(f"sweep summary: no run folders under {sweep_dir}")
            return
        csv_path, _ = write_summary(sweep_dir, rows)
        print(f"\nsweep summary ({len(rows)} runs, {csv_path}):\n")
        print(markdown_table(rows))
