"""The paper table's report: a finished job's figures, the Markdown tables, and
paper_table.json/.md written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

from paper_cells import BUDGET_MINUTES, CELLS, WITHIN, Cell  # beside this file

from dmcondense.atomic import atomic_write

RESULTS_JSON = "paper_table.json"
RESULTS_MD = "paper_table.md"


def read_json(path: Path) -> dict | None:
    """A JSON file's content; None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def summary(accuracy: dict) -> dict:
    return {
        "mean": accuracy["mean"],
        "std": accuracy["std"],
        "networks": len(accuracy.get("accuracies", [])),
    }


def finished_record(cell: Cell, results: dict, resumed: bool) -> dict:
    """The figures of a finished job, read from its results.json."""
    if cell.ipc is None:
        ours = summary(results["results"]["whole"]["convnet"])
        record = {
            "ours": ours,
            "epochs": results["epochs"],
            "networks_per_experiment": results["networks_per_experiment"],
            "job_seconds": results["seconds"],
        }
    else:
        ours = summary(results["results"]["dm"]["convnet"])
        steps, fit = results["steps"], results["condense_seconds"]
        record = {
            "ours": ours,
            "random": summary(results["results"]["random"]["convnet"]),
            "steps": steps,
            # a resumed job's fit time covers only the steps after its checkpoint
            "steps_per_s": None if resumed or fit <= 0 else round(steps / fit, 2),
            "condense_seconds": fit,
            "job_seconds": results["total_seconds"],
            "eval_epochs": results["eval_epochs"],
            "eval_num_models": results["eval_num_models"],
        }
    gap = round(ours["mean"] - cell.paper_mean, 2)
    return {**record, "gap": gap, "within_target": abs(gap) <= WITHIN, "resumed": resumed}


def device_name() -> str:
    """The device the jobs run on, as the report records it."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def options(record: dict | None) -> str:
    """The job options a cell was run with beyond its preset and the data (device options and
    overrides after --), as Markdown code."""
    if not record or not record.get("options"):
        return ""
    return "`" + " ".join(record["options"]) + "`"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def percent(figure: dict | None) -> str:
    if not figure:
        return ""
    return f"{figure['mean']:.2f} ± {figure['std']:.2f}"


def published(cell: Cell) -> str:
    return f"{cell.paper_mean:.1f}" + (f" ± {cell.paper_std:.1f}" if cell.paper_std else "")


def markdown(report: dict) -> str:
    """The Markdown table of a report (paper_table.json's content)."""
    cells = report["cells"]
    setting = report["setting"]
    devices = (
        "; ".join(sorted({r["device"] for r in cells.values() if "device" in r})) or "none yet"
    )
    lines = [
        f"# DM on CIFAR-10: ours against the paper ({setting['mode']})",
        "",
        f"Data: {setting['data']['description']}. Devices: {devices}. "
        f"Made by: `{report['command']}`.",
        "",
        "Condensation: `experiment=cifar10_ipcN` (DM, seed 0)"
        + (
            " at toy size (--tiny; the figures mean nothing)"
            if setting["mode"] == "tiny"
            else "; 20,000 steps, batch_real 256, ConvNet 128x3"
        )
        + ". Ours: one synthetic set, scored by the networks named in `networks` (the paper pools "
        "5 sets x 20 networks). Gap: ours - paper, in points; target within "
        f"{WITHIN:.0f} point. steps/s: steps over Lightning's fit time (its first steps and any "
        "compilation included). Wall: the whole job (data, condensation, evaluation).",
        "",
        "| IPC | ours % | paper % | gap | within 1 pt | random real %, ours / paper | networks "
        "| steps | steps/s | condense s | wall s | options |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for cell in CELLS.values():
        if cell.ipc is None:
            continue
        r = cells.get(cell.name)
        if r is None or r["status"] != "done":
            what = "not measured" if r is None else f"{r['status']}: {r.get('reason', '')}"
            wall = "" if r is None else seconds(r.get("wall_seconds"))
            lines.append(
                f"| {cell.ipc} | {what} | {published(cell)} | | | / {cell.paper_random} "
                f"| | | | | {wall} | {options(r)} |"
            )
            continue
        rate = "n/a (resumed)" if r["steps_per_s"] is None else f"{r['steps_per_s']:.2f}"
        lines.append(
            f"| {cell.ipc} | {percent(r['ours'])} | {published(cell)} | {r['gap']:+.2f} | "
            f"{'yes' if r['within_target'] else 'no'} | {percent(r['random'])} / "
            f"{cell.paper_random} | {r['ours']['networks']} x {r['eval_epochs']} | {r['steps']} | "
            f"{rate} | {r['condense_seconds']:.0f} | {seconds(r['wall_seconds'])} | {options(r)} |"
        )
    whole = CELLS["whole"]
    r = cells.get(whole.name)
    lines += [
        "",
        "Whole training set (`baseline=whole`) on the same copy: how far the JPEG re-encoding "
        "sits from the torchvision archive's published figure.",
        "",
        "| baseline | ours % | published % | gap | networks | wall s | options |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    if r is None or r["status"] != "done":
        what = "not measured" if r is None else f"{r['status']}: {r.get('reason', '')}"
        lines.append(f"| whole | {what} | {published(whole)} | | | | {options(r)} |")
    else:
        lines.append(
            f"| whole | {percent(r['ours'])} | {published(whole)} | {r['gap']:+.2f} | "
            f"{r['ours']['networks']} x {r['epochs']} | {seconds(r['wall_seconds'])} | "
            f"{options(r)} |"
        )
    done = [r for r in cells.values() if r["status"] == "done"]
    total = sum(r["wall_seconds"] or 0 for r in done)
    missing = [name for name in CELLS if cells.get(name, {}).get("status") != "done"]
    lines += [
        "",
        f"Cells done: {len(done)} of {len(CELLS)}"
        + (f" (missing: {', '.join(missing)})" if missing else "")
        + f"; their wall time together: {total:.0f} s ({total / 60:.1f} min; target: the whole "
        f"row within {BUDGET_MINUTES} min of GPU time).",
    ]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    """Write paper_table.json and paper_table.md into `out`, each atomically."""
    write_text(out / RESULTS_JSON, json.dumps(report, indent=2) + "\n")
    write_text(out / RESULTS_MD, markdown(report))
