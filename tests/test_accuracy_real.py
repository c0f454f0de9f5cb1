"""On real data (the built-in MNIST sample), DM, DC and DSA beat random real images.

Both sets are scored in the same run by the mean test accuracy of 3 evaluation networks. The
budget is a few CPU minutes (the mnist_sample preset with fewer steps and epochs), so the
margins asked for are the issue's: 10 points at IPC 1, 1 point at IPC 10. For scale, the
reference code (300 steps, batch_real 64, width 128, 3 networks x 300 epochs) scored IPC 1:
random 50.8 / DM 85.4, IPC 10: random 92.4 / DM 95.1 on this split.
"""

from __future__ import annotations

import json

import pytest
from helpers.inprocess import train

# (method, ipc, margin, budget): 30 to 70 iterations, a seventh to a third of the mnist_sample
# preset's 200, DC and DSA with half its real batch; 3 networks x 50 or 100 epochs a set (the
# margins at each budget are in docs/contributing.md, Tests).
CASES = [
    ("dm", 1, 10.0, ["iterations=30", "eval.epochs=50"]),
    ("dm", 10, 1.0, ["iterations=30", "eval.epochs=50"]),
    ("dc", 1, 10.0, ["iterations=35", "batch_real=32", "eval.epochs=100"]),
    ("dsa", 1, 10.0, ["iterations=70", "batch_real=32", "eval.epochs=100"]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "ipc", "margin", "budget"), CASES,
                         ids=[f"{m}-ipc{i}" for m, i, _, _ in CASES])  # fmt: skip
def test_condensed_set_beats_random_real_images(
    tmp_path, method: str, ipc: int, margin: float, budget: list[str]
) -> None:
    result = train(
        f"method={method}", f"ipc={ipc}", *budget, "eval.num_models=3",
        "seed=0", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    condensed, random = results[method]["convnet"], results["random"]["convnet"]
    assert len(condensed["accuracies"]) == len(random["accuracies"]) == 3
    print(f"{method} IPC {ipc}: {condensed['mean']} +- {condensed['std']}, random "
          f"{random['mean']} +- {random['std']}")  # fmt: skip
    assert condensed["mean"] >= random["mean"] + margin
