"""Shared helpers: run the train entry point as a user would, from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_train(*overrides: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m dmcondense.train <overrides>` in the repo root with src/ on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH"), str(REPO_ROOT / "src")) if p
    )
    return subprocess.run(
        [sys.executable, "-m", "dmcondense.train", *overrides],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def train_cli():
    """The `run_train` helper, as a fixture for tests that start the entry point."""
    return run_train
