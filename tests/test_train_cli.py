"""The train entry point as a user runs it: its outputs. (Its one-line errors for bad input are
in test_bad_input.) Reads the session's shared tiny run (conftest.py: tiny_run)."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import torch
from helpers.inprocess import tiny, train
from helpers.shared_runs import (
    TINY_RUN_EVAL_EPOCHS,
    TINY_RUN_EVAL_NETWORKS,
    TINY_RUN_IPC,
    TINY_RUN_ITERATIONS,
)
from PIL import Image

from dmcondense.data.normalise import Normaliser
from dmcondense.data.sources import load_split
from dmcondense.evaluation.protocol import Protocol, accuracy_summary
from dmcondense.evaluation.score import score
from dmcondense.io import load_synthetic


def test_train_writes_synthetic_set_picture_and_results(tiny_run) -> None:
    ipc, num_classes, steps = TINY_RUN_IPC, 10, TINY_RUN_ITERATIONS
    epochs, networks = TINY_RUN_EVAL_EPOCHS, TINY_RUN_EVAL_NETWORKS
    run_dir, result = tiny_run.run_dir, tiny_run.result

    dataset, meta = load_synthetic(run_dir / "synthetic.pt")
    images, labels = dataset.tensors
    assert images.shape == (num_classes * ipc, 1, 28, 28)
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert torch.equal(labels, torch.arange(num_classes).repeat_interleave(ipc))
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert meta["ipc"] == ipc and meta["step"] == steps

    with Image.open(run_dir / "synthetic.png") as picture:
        assert picture.format == "PNG"
        width, height = picture.size
    # ipc columns x 10 rows of 28 px tiles, with the same padding p around every tile.
    assert any(
        width == ipc * (28 + p) + p and height == num_classes * (28 + p) + p for p in range(5)
    ), (width, height)

    results = json.loads((run_dir / "results.json").read_text())
    assert results["ipc"] == ipc and results["iterations"] == steps and results["method"] == "dm"
    assert meta["method"] == "dm"
    # condense_seconds is the fit alone: data loading and scoring are timed apart.
    assert results["condense_seconds"] + results["load_seconds"] < results["total_seconds"]
    assert results["evaluation"]["architectures"]["convnet"]["epochs"] == results["eval_epochs"]
    with open(run_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["set"], r["architecture"]) for r in rows] == [
        ("dm", "convnet"),
        ("random", "convnet"),
    ]
    # The accuracies are those of the saved set and its random-real start under the protocol,
    # each network scored on the 1,000 test digits (so in steps of 0.1 %).
    test = load_split("mnist_sample", None, "test")
    normaliser = Normaliser(meta["mean"], meta["std"])
    start = normaliser.to_input(load_split("mnist_sample", None, "train").images[
        meta["init_indices"]])  # fmt: skip
    rescored = score(
        {"dm": [(images, labels)], "random": [(start, labels)]}, {"convnet": {"width": 8}},
        Protocol(epochs=epochs), test, 0, num_models=networks, normaliser=normaliser,
    )  # fmt: skip
    for set_name in ("dm", "random"):
        saved = results["results"][set_name]["convnet"]
        assert saved == accuracy_summary(rescored[set_name]["convnet"])
        assert len(saved["accuracies"]) == networks
        assert all(round(10 * a) == 10 * a for a in saved["accuracies"])

    last_line = result.stdout.strip().splitlines()[-1]
    assert str(run_dir) in last_line
    # Not a terminal (a pipe, as in a log file): plain progress lines, no bar frames.
    assert "\r" not in result.stdout + result.stderr
    assert f"step {steps}/{steps} (100%) train/loss " in result.stdout
    total = epochs * networks
    assert f"dm/convnet: {total}/{total} epochs (100%)" in result.stdout
    assert f"random/convnet: {total}/{total} epochs (100%)" in result.stdout


def test_a_fit_shorter_than_a_tenth_of_a_second_keeps_its_seconds(tmp_path, monkeypatch) -> None:
    """A run's timings keep milliseconds: a 2-step fit on a fast machine took under 0.05 s, was
    written as 0.0 and broke every figure divided by it (the parity harness's seconds a step,
    the paper table's steps a second)."""
    tick = iter(range(1000))

    def clock() -> float:  # the job's wall clock, 0.02 s further at every reading
        return 0.02 * next(tick)

    monkeypatch.setattr("dmcondense.jobs.train.time", SimpleNamespace(time=clock))
    run_dir = tmp_path / "run"
    assert train(*tiny("iterations=1"), f"hydra.run.dir={run_dir}").returncode == 0
    results = json.loads((run_dir / "results.json").read_text())
    # the clock is read at the start, after loading, before and after the fit, and at the end
    assert results["condense_seconds"] == 0.02
    assert (results["load_seconds"], results["total_seconds"]) == (0.02, 0.08)
