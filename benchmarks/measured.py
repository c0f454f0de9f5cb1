"""A job in a child process, measured: its own peak resident memory (the rusage os.wait4 returns
for that child alone), with its stderr kept in a log. compare_methods.py runs every job this way,
and the board (leaderboard.py) its jobs, so the cost of a condensation and of the experts it
needs are read the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cifar10 import REPO


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}  # fmt: skip


def run_job(command: list[str], log: Path) -> float:
    """Run a job; its own peak RSS in MiB. A failure stops the caller with the log's tail."""
    print("$", " ".join(command), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, env=child_env(),
                                   stdout=subprocess.DEVNULL, stderr=stderr)  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)  # the child's own peak RSS
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"error: the run failed, see {log}:\n{log.read_text()[-2000:]}")
    return usage.ru_maxrss / 1024
