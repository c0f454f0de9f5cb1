"""Helpers the tests share: run the entry points as a user would, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_module(module: str, *overrides: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m <module> <overrides>` in the repo root with src/ on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH"), str(REPO_ROOT / "src")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_train(*overrides: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return run_module("dmcondense.train", *overrides, timeout=timeout)


def run_evaluate(*overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_module("dmcondense.evaluate", *overrides, timeout=timeout)
