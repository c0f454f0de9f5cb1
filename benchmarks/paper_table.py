"""One row of the DM paper's table: CIFAR-10 at IPC 1, 10 and 50 on the full protocol, against
the published figures, with the whole training set (baseline=whole) on the same copy of the data.

    python benchmarks/paper_table.py                    # every cell, on one GPU
    python benchmarks/paper_table.py --only ipc=10      # one cell; repeat or comma-list for more
    python benchmarks/paper_table.py --compile --precision bf16-mixed -- eval.backend=vmap
    python benchmarks/paper_table.py --tiny             # the whole pipeline at toy size, on the CPU

A cell `ipc=N` is `python -m dmcondense.train experiment=cifar10_ipcN` (20,000 steps,
batch_real 256, ConvNet 128x3, trainer=gpu; 20 networks x 1,000 epochs score the condensed set and
the random real images it started from). The cell `whole` is `python -m dmcondense.evaluate
baseline=whole` (the full training split, whole_epochs 50, --whole-models networks). Every job reads
CIFAR-10 from the shared JPEG copy (--data: its .tar.gz, unpacked once into --unpack-to, or a
folder holding train/ and test/) with the paper's normalisation constants. Words after `--` are
Hydra overrides added to every job.

Outputs, rewritten after each cell, so a crash or a timeout loses no finished cell:
    <out>/paper_table.json   every figure of every cell, the commands, the setting
    <out>/paper_table.md     ours against the paper (mean +- std, gap, steps/s, wall time a cell)
A rerun skips each cell already recorded as done with the same job overrides (--redo runs it
again), and a cell whose run folder holds a checkpoint of the same overrides resumes from it
(resume=last). --budget-s N: a cell that cannot finish its condensation in the time left (by the
steps/s of --probe, a JSON in scripts/device_check.py's format) is not started, and a job still
running when the N seconds are up is stopped; both are recorded as such.

--tiny: the same commands at toy size on the CPU: a generated CIFAR-shaped JPEG archive (10
classes, 52 training and 4 test images a class), 3 condensation steps, batch_real 8, ConvNet
width 8, 2 networks x 2 epochs, and the whole-set baseline with 1 network x 1 epoch. Its
figures mean nothing; tests/test_paper_table.py runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cifar10 import ARCHIVE as SHARED_ARCHIVE  # beside this script
from cifar10 import REPO, unpack

# Where benchmarks/device/prepare.sh copies the shared archive so that it travels to a GPU machine.
CARRIED_ARCHIVE = REPO / "data" / "cifar10-jpeg.tar.gz"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN = "[0.4914,0.4822,0.4465]"
CIFAR10_STD = "[0.2023,0.1994,0.2010]"
WITHIN = 1.0  # the target: each cell within this many points of the paper
BUDGET_MINUTES = 15  # the target: the whole row within one GPU budget of this length


@dataclass(frozen=True)
class Cell:
    """One cell of the row and its published figures (../shared/REFERENCE.md; the standard
    deviations are the DM paper's table)."""

    name: str  # what --only takes
    ipc: int | None  # None: the whole training set
    paper_mean: float
    paper_std: float | None
    paper_random: float | None  # random real images, same IPC

    @property
    def slug(self) -> str:
        return "whole" if self.ipc is None else f"ipc{self.ipc}"


CELLS = {
    cell.name: cell
    for cell in (
        Cell("ipc=1", 1, 26.0, 0.8, 14.4),
        Cell("ipc=10", 10, 48.9, 0.6, 26.0),
        Cell("ipc=50", 50, 63.0, 0.4, 43.4),
        Cell("whole", None, 84.8, None, None),
    )
}
ALIASES = {"baseline=whole": "whole"}

TINY_TRAIN_PER_CLASS = 52  # at least the largest IPC (50), so every cell can start from real images
TINY_TEST_PER_CLASS = 4
TINY_CONDENSE = [
    "trainer=cpu",
    "iterations=3",
    "batch_real=8",
    "model.width=8",
    "eval.num_models=2",
    "eval.epochs=2",
    "logger=csv",
    "save_every=1000",
]
TINY_WHOLE = ["model.width=8", "eval.num_models=1", "whole_epochs=1"]

RESULTS_JSON = "paper_table.json"
RESULTS_MD = "paper_table.md"
MARKER = "paper_table_cell.json"  # in a cell's run folder: the overrides it was started with


def parse_only(values: list[str] | None) -> list[str]:
    """The cells named by --only (repeatable, comma lists), in the order given; every cell,
    in the row's order, when none is named."""
    if not values:
        return list(CELLS)
    names: list[str] = []
    for value in values:
        for word in value.split(","):
            word = word.strip().replace(" ", "")
            name = ALIASES.get(word, word)
            if name not in CELLS:
                raise SystemExit(
                    f"error: unknown cell '{word}' in --only; choose from {', '.join(CELLS)}"
                )
            if name not in names:
                names.append(name)
    return names


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_tiny_archive(path: Path) -> Path:
    """A CIFAR-shaped JPEG archive laid out like the shared copy (<split>/<class>/<NNNN>.jpg):
    each class one colour, each image that colour plus seeded noise. Written once."""
    if path.is_file():
        return path
    import torch
    from PIL import Image

    from dmcondense.rng import generator

    g = generator(0, "paper-table-tiny")
    colours = torch.rand(len(CIFAR10_CLASSES), 3, 1, 1, generator=g) * 200 + 28
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for split, count in (("train", TINY_TRAIN_PER_CLASS), ("test", TINY_TEST_PER_CLASS)):
            for label, name in enumerate(CIFAR10_CLASSES):
                folder = Path(tmp) / split / name
                folder.mkdir(parents=True)
                noise = torch.randint(-40, 41, (count, 3, 32, 32), generator=g)
                images = (colours[label] + noise).clamp(0, 255).to(torch.uint8)
                for i, image in enumerate(images):
                    Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.jpg")
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w:gz") as tar:
            for split in ("train", "test"):
                tar.add(Path(tmp) / split, arcname=split)
        os.replace(partial, path)
    return path


def data_overrides(folder: Path) -> list[str]:
    """The image folder read as CIFAR-10: its name, classes, size and the paper's constants."""
    return [
        "dataset=imagefolder",
        f"path={folder}",
        "dataset.name=cifar10",
        "dataset.num_classes=10",
        "dataset.image_size=32",
        f"dataset.mean={CIFAR10_MEAN}",
        f"dataset.std={CIFAR10_STD}",
    ]


def device_overrides(args: argparse.Namespace) -> list[str]:
    words = []
    if args.precision:
        words.append(f"trainer.precision={args.precision}")
    if args.compile:
        words.append("compile=true")
    if args.channels_last:
        words.append("channels_last=true")
    return words


def job_overrides(cell: Cell, args: argparse.Namespace, folder: Path) -> list[str]:
    """Every override of the cell's job except its run folder."""
    data = data_overrides(folder)
    extra = [*device_overrides(args), *args.overrides]
    if cell.ipc is None:
        size = TINY_WHOLE if args.tiny else [f"eval.num_models={args.whole_models}"]
        return ["baseline=whole", *data, "seed=0", *size, *extra]
    size = TINY_CONDENSE if args.tiny else []
    return [f"experiment=cifar10_ipc{cell.ipc}", *data, "seed=0", *size, *extra]


def comparable(overrides: list[str]) -> list[str]:
    """Overrides that decide a cell's result: the data folder's place does not."""
    return [word for word in overrides if not word.startswith("path=")]


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def probe_steps_per_s(probe: dict | None, ipc: int, settings: dict) -> float | None:
    """Steps/s of the probe's entry with this IPC (else the nearest IPC) and the same precision,
    channels-last and compile settings; None when the probe has no such entry."""
    if not probe:
        return None
    rows = [
        row
        for row in probe.get("condense", [])
        if "steps_per_s" in row
        and row.get("precision") == settings["precision"]
        and bool(row.get("channels_last")) == settings["channels_last"]
        and bool(row.get("compile")) == settings["compile"]
        and not row.get("cudnn_benchmark")
    ]
    if not rows:
        return None
    return float(min(rows, key=lambda row: abs(row["ipc"] - ipc))["steps_per_s"])


def copy_lines(source: IO[str], log: IO[str]) -> None:
    for line in source:
        log.write(line)
        log.flush()
        sys.stdout.write(line)
        sys.stdout.flush()


class Job:
    """One entry-point run in a child process; its output goes to stdout and to a log file."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
            ),
        }
        print("$", " ".join(command), flush=True)
        self.log = open(log_path, "a")  # closed in wait()
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.pump = threading.Thread(target=copy_lines, args=(self.process.stdout, self.log))
        self.pump.start()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait(self, timeout: float | None) -> int | None:
        """The exit code, or None when the job was stopped at `timeout` seconds."""
        try:
            code: int | None = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            code = None
        self.pump.join()
        self.log.close()
        return code


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


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


def iterations_of(overrides: list[str]) -> int:
    """Condensation steps of a job: the last `iterations=` override, else the presets' 20,000."""
    values = [word.split("=", 1)[1] for word in overrides if word.startswith("iterations=")]
    return int(values[-1]) if values else 20000


def write_marker(
    run_dir: Path,
    overrides: list[str],
    command: list[str],
    resumed: bool,
    wall_seconds: float | None = None,
) -> None:
    marker = {
        "overrides": overrides,
        "command": command,
        "resumed": resumed,
        "wall_seconds": wall_seconds,
    }
    write_atomic(run_dir / MARKER, json.dumps(marker, indent=2) + "\n")


def run_cell(
    cell: Cell, args: argparse.Namespace, folder: Path, deadline: float | None, probe: dict | None
) -> dict:
    """Run one cell, or adopt its finished run folder, or resume its checkpoint; its record."""
    overrides = job_overrides(cell, args, folder)
    run_dir = args.runs / cell.slug
    record = {
        "cell": cell.name,
        "ipc": cell.ipc,
        "paper": {"mean": cell.paper_mean, "std": cell.paper_std, "random": cell.paper_random},
        "overrides": comparable(overrides),
        "options": [*device_overrides(args), *args.overrides],
        "run_dir": str(run_dir),
    }
    marker = read_json(run_dir / MARKER)
    same = marker is not None and marker.get("overrides") == comparable(overrides)
    results = read_json(run_dir / "results.json") if same else None
    if results is not None:  # the job finished, but the driver stopped before recording it
        print(f"{cell.name}: adopting the finished job in {run_dir}", flush=True)
        record["command"] = marker["command"]
        record["wall_seconds"] = marker["wall_seconds"]
        return {**record, "status": "done", **finished_record(cell, results, marker["resumed"])}
    resume = same and cell.ipc is not None and (run_dir / "checkpoints" / "last.ckpt").is_file()
    module = "dmcondense.evaluate" if cell.ipc is None else "dmcondense.train"
    command = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}"]
    if resume:
        command.append("resume=last")
    record["command"] = command

    left = None if deadline is None else deadline - time.monotonic()
    settings = {
        "precision": args.precision or "32-true",
        "channels_last": args.channels_last,
        "compile": args.compile,
    }
    rate = None if cell.ipc is None else probe_steps_per_s(probe, cell.ipc, settings)
    if left is not None and left <= 0:
        print(f"{cell.name}: not started: no time left", flush=True)
        return {**record, "status": "not run", "reason": "no time left"}
    if left is not None and rate and not resume and iterations_of(overrides) / rate > left:
        needed = iterations_of(overrides) / rate
        reason = f"needs about {needed:.0f} s to condense at {rate:.3g} steps/s, {left:.0f} s left"
        print(f"{cell.name}: not started: {reason}", flush=True)
        return {**record, "status": "not run", "reason": reason}

    if resume:
        print(f"{cell.name}: resuming from {run_dir / 'checkpoints' / 'last.ckpt'}", flush=True)
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # another setting's, or a run that never reached a checkpoint
    run_dir.mkdir(parents=True, exist_ok=True)
    write_marker(run_dir, comparable(overrides), command, resume)
    started = time.monotonic()
    job = Job(command, run_dir / "job.log")
    try:
        code = job.wait(left)
    finally:
        job.stop()
    record["wall_seconds"] = wall = round(time.monotonic() - started, 1)
    if code is None:
        print(f"{cell.name}: stopped at the time budget after {wall:.0f} s", flush=True)
        return {**record, "status": "timed out", "reason": f"stopped after {wall:.0f} s"}
    results = read_json(run_dir / "results.json")
    if code != 0 or results is None:
        print(f"{cell.name}: the job failed (exit code {code}); the end of its log:", flush=True)
        print(tail(run_dir / "job.log"), flush=True)
        reason = f"exit code {code}, log {run_dir / 'job.log'}"
        return {**record, "status": "failed", "reason": reason}
    write_marker(run_dir, comparable(overrides), command, resume, wall)
    return {**record, "status": "done", **finished_record(cell, results, resume)}


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


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    own, overrides = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="%(prog)s [options] [-- hydra overrides for every job]",
    )
    parser.add_argument(
        "--only",
        action="append",
        help="cells to run: ipc=1, ipc=10, ipc=50, "
        "whole (repeat or comma-list; the order given is the run order)",
    )
    parser.add_argument("--tiny", action="store_true", help="toy size on the CPU (a test)")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="CIFAR-10 JPEG copy: its .tar.gz or the unpacked folder "
        f"(default: {CARRIED_ARCHIVE.relative_to(REPO)} if present, else "
        f"{SHARED_ARCHIVE})",
    )
    parser.add_argument(
        "--unpack-to",
        type=Path,
        default=None,
        help="where a .tar.gz is unpacked (default: "
        f"{Path(tempfile.gettempdir()) / 'dmcondense-cifar10'}; "
        "--tiny: <out>/tiny_data)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="paper_table.json/.md (default: benchmarks/results; "
        "--tiny: lightning_logs/paper_table_tiny)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="the jobs' run folders (default: lightning_logs/paper_table; --tiny: <out>/runs)",
    )
    parser.add_argument("--precision", default=None, help="trainer.precision of the jobs")
    parser.add_argument("--compile", action="store_true", help="compile=true")
    parser.add_argument("--channels-last", action="store_true", help="channels_last=true")
    parser.add_argument(
        "--whole-models",
        type=int,
        default=5,
        help="networks of the whole-set baseline (eval.num_models)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help="seconds for this invocation: cells that cannot finish are not "
        "started, a job past it is stopped",
    )
    parser.add_argument(
        "--probe",
        type=Path,
        default=None,
        help="steps/s per setting (scripts/device_check.py's JSON) for --budget-s",
    )
    parser.add_argument("--redo", action="store_true", help="run cells already recorded as done")
    args = parser.parse_args(own)
    args.overrides = overrides
    args.cells = parse_only(args.only)
    if args.out is None:
        args.out = (
            REPO / "lightning_logs" / "paper_table_tiny"
            if args.tiny
            else REPO / "benchmarks" / "results"
        )
    if args.runs is None:
        args.runs = args.out / "runs" if args.tiny else REPO / "lightning_logs" / "paper_table"
    return args


def resolve_data(args: argparse.Namespace) -> tuple[Path, dict]:
    """The image folder the jobs read, and what to record about it."""
    if args.tiny:
        archive = make_tiny_archive(args.data or args.out / "tiny_cifar10.tar.gz")
        into = args.unpack_to or args.out / "tiny_data"
        description = "a generated CIFAR-shaped JPEG folder (--tiny)"
    else:
        archive = args.data or (CARRIED_ARCHIVE if CARRIED_ARCHIVE.is_file() else SHARED_ARCHIVE)
        into = args.unpack_to or Path(tempfile.gettempdir()) / "dmcondense-cifar10"
        description = "CIFAR-10, the shared JPEG copy (cifar10-jpeg.tar.gz)"
    if archive.is_dir():
        if not (archive / "train").is_dir() or not (archive / "test").is_dir():
            raise SystemExit(f"error: {archive} holds no train/ and test/ folders")
        return archive.resolve(), {"folder": str(archive.resolve()), "description": description}
    if not archive.is_file():
        raise SystemExit(
            f"error: {archive} not found; give --data (the CIFAR-10 JPEG .tar.gz or its folder)"
        )
    digest = sha256(archive)
    folder = unpack(archive, into).resolve()
    return folder, {
        "archive": str(archive),
        "sha256": digest,
        "folder": str(folder),
        "description": description,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the cells named on the command line (`argv`, default sys.argv[1:]); the exit code is
    0 when every one of them is done."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the running job on the way out
    started = time.monotonic()
    deadline = None if args.budget_s is None else started + args.budget_s
    folder, data = resolve_data(args)
    probe = read_json(args.probe) if args.probe else None
    path = args.out / RESULTS_JSON
    previous = read_json(path) or {}
    words = sys.argv[1:] if argv is None else argv
    report = {
        "command": " ".join(["python", "benchmarks/paper_table.py", *words]),
        "device": device_name(),
        "setting": {
            "mode": "tiny" if args.tiny else "full",
            "data": data,
            "extra_overrides": [*device_overrides(args), *args.overrides],
        },
        "cells": dict(previous.get("cells", {})),
    }
    recorded = previous.get("setting", {}).get("data", {}).get("sha256")
    if recorded not in (None, data.get("sha256")):
        raise SystemExit(
            f"error: {path} holds figures of another copy of the data (sha256 {recorded}); "
            "give another --out, or move that file away"
        )
    print(f"cells: {', '.join(args.cells)}; results: {path}", flush=True)
    for name in args.cells:
        cell = CELLS[name]
        old = report["cells"].get(name)
        same = old is not None and old["overrides"] == comparable(job_overrides(cell, args, folder))
        if same and old["status"] == "done" and not args.redo:
            print(f"{name}: done earlier with the same overrides; skipped", flush=True)
            continue
        record = run_cell(cell, args, folder, deadline, probe)
        record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        record["device"] = report["device"]
        report["cells"][name] = record
        if record["status"] == "done":
            gap = f"{record['gap']:+.2f}"
            print(
                f"{name}: {percent(record['ours'])} % against {published(cell)} ({gap})", flush=True
            )
        write_atomic(path, json.dumps(report, indent=2) + "\n")
        write_atomic(args.out / RESULTS_MD, markdown(report))
    write_atomic(path, json.dumps(report, indent=2) + "\n")
    write_atomic(args.out / RESULTS_MD, markdown(report))
    print(markdown(report), flush=True)
    unfinished = [n for n in args.cells if report["cells"].get(n, {}).get("status") != "done"]
    if unfinished:
        print(f"not done: {', '.join(unfinished)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
