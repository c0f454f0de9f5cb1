"""One row of the DM paper's table: CIFAR-10 at IPC 1, 10 and 50 on the full protocol, against
the published figures, with the whole training set (baseline=whole) on the same copy of the data.

    python benchmarks/paper_table.py                    # every cell, on one GPU
    python benchmarks/paper_table.py --only ipc=10      # one cell; repeat or comma-list for more
    python benchmarks/paper_table.py --compile --precision bf16-mixed -- eval.backend=vmap
    python benchmarks/paper_table.py --tiny --data toy.tar.gz   # the pipeline at toy size, CPU

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

--tiny: the same commands at toy size on the CPU, on the CIFAR-shaped archive that --data names
(tests/test_paper_table.py writes one: 10 classes, 52 training and 4 test images a class): 3
condensation steps, batch_real 8, ConvNet width 8, 2 networks x 2 epochs, and the whole-set
baseline with 1 network x 1 epoch. Its figures mean nothing; tests/test_paper_table.py runs it.

The cells and their overrides are in paper_cells.py, running them in paper_runner.py, the tables
in paper_report.py.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cifar10 import ARCHIVE as SHARED_ARCHIVE  # beside this script
from cifar10 import REPO, unpack
from paper_cells import ALIASES, CELLS, device_overrides, job_overrides
from paper_report import (
    RESULTS_JSON,
    device_name,
    markdown,
    percent,
    published,
    read_json,
    write_report,
)
from paper_runner import Job, recorded_done, run_cell

# Where benchmarks/device/prepare.sh copies the shared archive so that it travels to a GPU machine.
CARRIED_ARCHIVE = REPO / "data" / "cifar10-jpeg.tar.gz"


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
        f"{SHARED_ARCHIVE}; --tiny: required, a CIFAR-shaped archive)",
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
    if args.tiny and args.data is None:
        parser.exit(2, "error: --tiny needs --data: a CIFAR-shaped JPEG archive or its folder\n")
    args.options = [
        *device_overrides(args.precision, args.compile, args.channels_last),
        *args.overrides,
    ]
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
        archive = args.data
        into = args.unpack_to or args.out / "tiny_data"
        description = "a CIFAR-shaped JPEG copy (--tiny)"
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


def main(argv: list[str] | None = None, start: Callable[[list[str], Path], Job] = Job) -> int:
    """Run the cells named on the command line (`argv`, default sys.argv[1:]), each job started
    by `start` (a child process); the exit code is 0 when every one of them is done."""
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
            "extra_overrides": args.options,
        },
        "cells": dict(previous.get("cells", {})),
    }
    recorded = previous.get("setting", {}).get("data", {}).get("sha256")
    if recorded not in (None, data.get("sha256")):
        raise SystemExit(
            f"error: {path} holds figures of another copy of the data (sha256 {recorded}); "
            "give another --out, or move that file away"
        )
    settings = {
        "precision": args.precision or "32-true",
        "channels_last": args.channels_last,
        "compile": args.compile,
    }
    print(f"cells: {', '.join(args.cells)}; results: {path}", flush=True)
    for name in args.cells:
        cell = CELLS[name]
        overrides = job_overrides(cell, folder, args.options, args.tiny, args.whole_models)
        if recorded_done(report["cells"].get(name), overrides) and not args.redo:
            print(f"{name}: done earlier with the same overrides; skipped", flush=True)
            continue
        run_dir = args.runs / cell.slug
        record = run_cell(cell, overrides, args.options, run_dir, settings, deadline, probe, start)
        record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        record["device"] = report["device"]
        report["cells"][name] = record
        if record["status"] == "done":
            gap = f"{record['gap']:+.2f}"
            print(
                f"{name}: {percent(record['ours'])} % against {published(cell)} ({gap})", flush=True
            )
        write_report(args.out, report)
    write_report(args.out, report)
    print(markdown(report), flush=True)
    unfinished = [n for n in args.cells if report["cells"].get(n, {}).get("status") != "done"]
    if unfinished:
        print(f"not done: {', '.join(unfinished)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
