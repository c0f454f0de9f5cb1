"""Running the paper table's cells: each job in a child process, and the policy that skips a
cell recorded as done, adopts a finished run folder, resumes a checkpoint, or does not start a
cell that cannot finish in the time left."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from cifar10 import REPO  # beside this file
from paper_cells import Cell, comparable
from paper_report import finished_record, read_json, write_text

MARKER = "paper_table_cell.json"  # in a cell's run folder: the overrides it was started with


def recorded_done(record: dict | None, overrides: list[str]) -> bool:
    """Whether the report's record of a cell is a finished run with these job overrides."""
    return (
        record is not None
        and record["overrides"] == comparable(overrides)
        and record["status"] == "done"
    )


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


def iterations_of(overrides: list[str]) -> int:
    """Condensation steps of a job: the last `iterations=` override, else the presets' 20,000."""
    values = [word.split("=", 1)[1] for word in overrides if word.startswith("iterations=")]
    return int(values[-1]) if values else 20000


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
    write_text(run_dir / MARKER, json.dumps(marker, indent=2) + "\n")


def run_cell(
    cell: Cell,
    overrides: list[str],
    options: list[str],
    run_dir: Path,
    settings: dict,
    deadline: float | None,
    probe: dict | None,
    start: Callable[[list[str], Path], Job] = Job,
) -> dict:
    """Run one cell's job (`overrides`) in `run_dir`, or adopt its finished run folder, or resume
    its checkpoint; its record. `options`: the device options and overrides after --, as
    recorded; `settings`: precision, channels_last and compile, to look up the probe's steps/s;
    `deadline`: time.monotonic() at which the time budget ends; `start`: starts the job (a
    child process; the tests start some in their own process)."""
    record = {
        "cell": cell.name,
        "ipc": cell.ipc,
        "paper": {"mean": cell.paper_mean, "std": cell.paper_std, "random": cell.paper_random},
        "overrides": comparable(overrides),
        "options": options,
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
    job = start(command, run_dir / "job.log")
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
