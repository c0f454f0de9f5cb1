"""`python -m dmcondense.evaluate`: a saved synthetic set or a baseline, one table, two files."""

from __future__ import annotations

import csv
import json

from helpers import run_evaluate, run_train

TINY = ["model.width=8", "eval.epochs=2", "eval.num_models=2"]


def check_outputs(run_dir, models: list[str], networks: int) -> dict:
    summary = json.loads((run_dir / "results.json").read_text())
    for key in ("what", "dataset", "ipc", "experiments", "networks_per_experiment", "epochs"):
        assert key in summary
    assert sorted(summary["results"]) == sorted(models)
    for r in summary["results"].values():
        assert len(r["accuracies"]) == networks
        assert 0 <= r["mean"] <= 100 and r["std"] >= 0
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["architecture"] for row in rows] == models
    assert [float(row["mean"]) for row in rows] == [summary["results"][m]["mean"] for m in models]
    return summary


def test_evaluate_saved_synthetic_set_on_two_architectures(tmp_path) -> None:
    condensed = tmp_path / "condensed"
    assert run_train("ipc=2", "iterations=2", "batch_real=4", *TINY,
                     f"hydra.run.dir={condensed}").returncode == 0  # fmt: skip
    out = tmp_path / "eval"
    result = run_evaluate(f"synthetic={condensed}", "eval.models=[convnet,mlp]", *TINY,
                          f"hydra.run.dir={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = check_outputs(out, ["convnet", "mlp"], networks=2)
    assert summary["ipc"] == 2 and summary["dataset"] == "mnist_sample"
    printed = result.stdout.splitlines()
    assert any(line.startswith("convnet") for line in printed)
    assert any(line.startswith("mlp") for line in printed)
    assert printed[-1] == f"run folder: {out}"


def test_evaluate_baseline_over_two_experiments(tmp_path) -> None:
    out = tmp_path / "eval"
    result = run_evaluate("baseline=random", "ipc=3", "num_exp=2", *TINY, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = check_outputs(out, ["convnet"], networks=4)  # 2 selections x 2 networks
    assert summary["experiments"] == 2 and summary["what"].startswith("baseline random")


def test_evaluate_needs_exactly_one_source(tmp_path) -> None:
    result = run_evaluate(*TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: give exactly one of")
