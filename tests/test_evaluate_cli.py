"""`python -m dmcondense.evaluate`: a saved synthetic set or a baseline, one table, two files.
The jobs run in this process (helpers.inprocess); the saved set is the session's tiny run."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
from helpers.inprocess import evaluate
from helpers.shared_runs import TINY_RUN_EVAL_EPOCHS, TINY_RUN_EVAL_NETWORKS, TINY_RUN_IPC

# The shared tiny run's network and protocol: 2 networks x 2 epochs, ConvNet width 8.
TINY = ["model.width=8", f"eval.epochs={TINY_RUN_EVAL_EPOCHS}",
        f"eval.num_models={TINY_RUN_EVAL_NETWORKS}"]  # fmt: skip


def check_outputs(run_dir, models: list[str], networks: int, set_name: str) -> dict:
    """results.json and results.csv of an evaluate run; returns results.json with the set's
    figures as summary["results"][architecture]."""
    summary = json.loads((run_dir / "results.json").read_text())
    for key in ("what", "dataset", "ipc", "experiments", "networks_per_experiment", "epochs"):
        assert key in summary
    assert list(summary["results"]) == [set_name]
    summary["results"] = summary["results"][set_name]
    assert sorted(summary["results"]) == sorted(models)
    for r in summary["results"].values():
        assert len(r["accuracies"]) == networks
        # mean and population std of every network of every experiment, pooled
        assert r["mean"] == pytest.approx(statistics.fmean(r["accuracies"]), abs=0.006)
        assert r["std"] == pytest.approx(statistics.pstdev(r["accuracies"]), abs=0.006)
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["architecture"] for row in rows] == models
    assert {row["set"] for row in rows} == {set_name}
    assert [float(row["mean"]) for row in rows] == [summary["results"][m]["mean"] for m in models]
    return summary


def test_evaluate_saved_synthetic_set_on_two_architectures(tiny_run, tmp_path) -> None:
    condensed = tiny_run.run_dir
    out = tmp_path / "eval"
    result = evaluate(f"condensed={condensed}", "eval.models=[convnet,mlp]", *TINY,
                      f"hydra.run.dir={out}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = check_outputs(out, ["convnet", "mlp"], networks=TINY_RUN_EVAL_NETWORKS, set_name="dm")
    assert summary["ipc"] == TINY_RUN_IPC and summary["dataset"] == "mnist_sample"
    # Same set, seed and protocol as the train job's own scoring: the same ConvNet accuracies.
    trained = json.loads((condensed / "results.json").read_text())["results"]["dm"]["convnet"]
    assert summary["results"]["convnet"] == trained
    printed = result.stdout.splitlines()
    assert any(line.split()[:2] == ["dm", "convnet"] for line in printed)
    assert any(line.split()[:2] == ["dm", "mlp"] for line in printed)
    assert printed[-1] == f"run folder: {out}"
    # The old spelling synthetic=PATH still works this release, with one warning line.
    old = tmp_path / "old"
    result = evaluate(f"synthetic={condensed}", *TINY, f"hydra.run.dir={old}")
    assert result.returncode == 0, result.stderr[-2000:]
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [
        "warning: synthetic=PATH is now condensed=PATH (synthetic.* holds the multi-formation "
        "settings); the old spelling stops working in the next release"
    ]
    assert json.loads((old / "results.json").read_text())["results"]["dm"]["convnet"] == trained


def test_evaluate_baseline_over_two_experiments(tmp_path) -> None:
    out, one = tmp_path / "eval", tmp_path / "one"
    result = evaluate("baseline=random", "ipc=3", "num_exp=2", *TINY, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = check_outputs(out, ["convnet"], networks=4, set_name="random")  # 2 x 2 networks
    assert summary["experiments"] == 2 and summary["what"].startswith("baseline random")
    # Experiment 0 is the num_exp=1 run (same seed); experiment 1 draws with seed + 1.
    result = evaluate("baseline=random", "ipc=3", "num_exp=1", *TINY, f"hydra.run.dir={one}")
    assert result.returncode == 0, result.stderr[-2000:]
    first = check_outputs(one, ["convnet"], networks=2, set_name="random")
    first = first["results"]["convnet"]["accuracies"]
    assert summary["results"]["convnet"]["accuracies"][:2] == first


def test_evaluate_needs_exactly_one_source(tmp_path) -> None:
    result = evaluate(*TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: give exactly one of")
