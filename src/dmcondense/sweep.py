"""The summary of a sweep (`python -m dmcondense.train -m ...`): one row per run.

A Hydra callback reads every run folder's results.json once all jobs have returned and writes
summary.csv and summary.md into the sweep folder. It scans the folder rather than collecting
job returns, so it works the same whether the jobs ran here or on a cluster (submitit).
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


def write_summary(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """summary.csv (mean and std columns apart) and summary.md in `sweep_dir`."""
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
