"""benchmarks/compare_methods.py: its budget (`seconds=S` or `steps=N`, a malformed one answered
in one line before anything runs) and the ratios to DM in its table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "compare_methods.py"
sys.path.insert(0, str(SCRIPT.parent))

import compare_methods  # noqa: E402


def test_budget_kinds_give_their_overrides():
    assert compare_methods.parse_budget("steps=50") == ("steps", 50)
    assert compare_methods.parse_budget("seconds=3725") == ("seconds", 3725)
    assert compare_methods.budget_overrides("steps", 50) == ["iterations=50"]
    assert compare_methods.budget_overrides("seconds", 3725) == [
        "iterations=1000000",
        "+trainer.max_time=00:01:02:05",
    ]


@pytest.mark.parametrize("text", ["60", "steps=", "steps=0", "steps=-3", "time=60", "seconds=1.5"])
def test_malformed_budget_is_one_line(text):
    with pytest.raises(ValueError, match="seconds=S .* or steps=N"):
        compare_methods.parse_budget(text)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--budget", text, "--out", "/nonexistent/never"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --budget"), result.stderr


def row(dataset, ipc, method, seconds, mib):
    acc = {"mean": 50.0, "std": 1.0}
    return {
        "data set": dataset, "IPC": ipc, "method": method, "decoded": ipc, "accuracy": acc,
        "random real": acc, "steps": 10, "s/it": seconds, "fit MiB": mib, "before fit MiB": 800.0,
        "condense s": 1.0, "wall s": 2.0,
    }  # fmt: skip


def test_ratios_are_to_dm_of_the_same_group():
    rows = [
        row("mnist_sample", 1, "ncfm", 0.6, 1500.0),
        row("mnist_sample", 1, "dm", 0.2, 1000.0),
        row("mnist_sample", 10, "dm", 0.4, 1200.0),
        row("mnist_sample", 10, "idm", 2.0, 1800.0),
        row("cifar10", 1, "m3d", 0.3, 900.0),  # no DM ran in this group
    ]
    cells = [line.split(" | ") for line in compare_methods.table(rows)[2:]]
    by_method = {(c[0].strip("| "), c[1], c[2]): c for c in cells}
    ncfm = by_method[("mnist_sample", "1", "NCFM")]
    assert (ncfm[8], ncfm[10], ncfm[11]) == ("3.00", "1.50", "700")
    idm = by_method[("mnist_sample", "10", "IDM")]
    assert (idm[8], idm[10]) == ("5.00", "1.50")
    dm = by_method[("mnist_sample", "10", "DM")]
    assert (dm[8], dm[10]) == ("1.00", "1.00")
    m3d = by_method[("cifar10", "1", "M3D")]
    assert (m3d[8], m3d[10]) == ("-", "-")
