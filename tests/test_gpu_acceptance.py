"""scripts/gpu_acceptance.sh under DEVICE=cpu: the acceptance run's wiring at toy size (DM only
here; the GPU run takes every method of scripts/gpu_acceptance.py's METHODS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_acceptance_dry_run_records_every_stage(tmp_path: Path) -> None:
    env = {**os.environ, "DEVICE": "cpu", "METHODS": "dm", "OUT": str(tmp_path),
           "RUNS": str(tmp_path / "runs"), "PYTHON": sys.executable}  # fmt: skip
    done = subprocess.run(["bash", "scripts/gpu_acceptance.sh"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = json.loads((tmp_path / "gpu_acceptance.json").read_text())
    names = [run["name"] for run in report["runs"]]
    assert names == ["train_dm_32-true", "train_dm_bf16-mixed", "train_dm_compile", "repeat",
                     "evaluate", "pretrain", "nas"]  # fmt: skip
    assert report["failed"] == [] and report["repeats_bit_for_bit"] is True
    trains = [run for run in report["runs"] if run["job"] == "dmcondense.train"]
    assert {run["evaluation_device"] for run in trains} == {"cpu"}
    assert all(run["syncs_per_step"] == 0 for run in trains)  # counted (none on a CPU)
