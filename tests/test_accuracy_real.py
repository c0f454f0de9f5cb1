"""On real data (the built-in MNIST sample), DM beats the random real images it started from.

Both sets are scored in the same run by the mean test accuracy of 3 evaluation networks. The
budget is a few CPU minutes (the mnist_sample preset with fewer steps and epochs), so the
margins asked for are the issue's: 10 points at IPC 1, 1 point at IPC 10. For scale, the
reference code (300 steps, batch_real 64, width 128, 3 networks x 300 epochs) scored IPC 1:
random 50.8 / DM 85.4, IPC 10: random 92.4 / DM 95.1 on this split.
"""

from __future__ import annotations

import json

import pytest
from helpers import run_train


@pytest.mark.slow
@pytest.mark.parametrize(("ipc", "margin"), [(1, 10.0), (10, 1.0)])
def test_dm_beats_random_real_images(tmp_path, ipc: int, margin: float) -> None:
    result = run_train(
        f"ipc={ipc}", "iterations=100", "eval.epochs=200", "eval.num_models=3", "seed=0",
        f"hydra.run.dir={tmp_path}", timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    dm, random = results["dm"]["convnet"], results["random"]["convnet"]
    assert len(dm["accuracies"]) == len(random["accuracies"]) == 3
    print(f"IPC {ipc}: DM {dm['mean']} +- {dm['std']}, random {random['mean']} +- {random['std']}")
    assert dm["mean"] >= random["mean"] + margin
