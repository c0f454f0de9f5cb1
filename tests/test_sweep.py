"""Sweeps: one folder per run and a summary table at the end; the SLURM launcher config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from helpers.inprocess import evaluate, tiny, train
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from PIL import Image

from dmcondense.cli import CONF_DIR
from dmcondense.jobs.sweep import SweepSummary, collect, curves, markdown_table, write_summary

TINY = tiny("iterations=2", "logger=csv")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_writes_a_folder_per_run_and_a_summary(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = train("-m", "ipc=1,2", *TINY, f"hydra.sweep.dir={sweep_dir}")
    assert result.returncode == 0, result.stderr[-3000:]

    run_dirs = sorted(p.parent for p in sweep_dir.glob("*/results.json"))
    assert len(run_dirs) == 2
    ipcs = sorted(json.loads((d / "results.json").read_text())["ipc"] for d in run_dirs)
    assert ipcs == [1, 2]
    for run_dir in run_dirs:
        assert (run_dir / "synthetic.pt").is_file()

    rows = read_csv(sweep_dir / "summary.csv")
    assert [(row["ipc"], row["status"], row["overrides"]) for row in rows] == [
        ("1", "ok", "ipc=1"),
        ("2", "ok", "ipc=2"),
    ]
    for row, run_dir in zip(rows, run_dirs, strict=True):
        expected = json.loads((run_dir / "results.json").read_text())["results"]
        assert float(row["dm/convnet mean"]) == expected["dm"]["convnet"]["mean"]
        assert float(row["random/convnet std"]) == expected["random"]["convnet"]["std"]
    table = (sweep_dir / "summary.md").read_text()
    assert table in result.stdout  # the same table is printed at the end
    assert len(table.strip().splitlines()) == 2 + len(rows)
    with Image.open(sweep_dir / "summary.png") as picture:
        assert picture.format == "PNG"


def test_evaluate_sweep_writes_a_summary(tmp_path: Path) -> None:
    """The evaluate job's results.json has the train job's shape (set, then architecture), so
    the sweep summary reads both."""
    sweep_dir = tmp_path / "sweep"
    result = evaluate(
        "-m", "baseline=random", "ipc=1,2", "model.width=8", "eval.epochs=1",
        "eval.num_models=1", f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning" not in result.stderr
    rows = read_csv(sweep_dir / "summary.csv")
    assert [(row["ipc"], row["status"]) for row in rows] == [("1", "ok"), ("2", "ok")]
    for row in rows:
        run_dir = sweep_dir / row["run"]
        expected = json.loads((run_dir / "results.json").read_text())["results"]["random"]
        assert float(row["random/convnet mean"]) == expected["convnet"]["mean"]


def fake_run(sweep_dir: Path, name: str, overrides: list[str], results: dict | None) -> None:
    run_dir = sweep_dir / name
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    if results is not None:
        (run_dir / "results.json").write_text(json.dumps(results))


def test_summary_orders_runs_and_keeps_failed_ones(tmp_path: Path) -> None:
    def results(ipc: int, acc: float) -> dict:
        figures = {"convnet": {"mean": acc, "std": 0.5, "accuracies": [acc]}}
        return {"dataset": "d", "ipc": ipc, "iterations": 2, "seed": 0, "results": {"dm": figures}}

    for num in (10, 9, 2):  # job 10 after job 9, not between 1 and 2
        fake_run(tmp_path, f"{num}_ipc={num}", ["seed=0", f"ipc={num}"], results(num, 50.0 + num))
    fake_run(tmp_path, "11_ipc=11", ["seed=0", "ipc=11"], None)  # a run that died

    rows = collect(tmp_path)
    assert [row["run"] for row in rows] == ["2_ipc=2", "9_ipc=9", "10_ipc=10", "11_ipc=11"]
    assert [row["overrides"] for row in rows] == ["ipc=2", "ipc=9", "ipc=10", "ipc=11"]
    assert [row["status"] for row in rows] == ["ok", "ok", "ok", "no results.json"]
    assert rows[2]["dm/convnet mean"] == 60.0

    write_summary(tmp_path, rows)
    table = (tmp_path / "summary.md").read_text().splitlines()
    assert table[0].endswith("| dm/convnet (%) |")
    assert table[4].endswith("| 60.00 ± 0.50 |")
    saved = read_csv(tmp_path / "summary.csv")
    assert saved[3]["status"] == "no results.json" and saved[3]["dm/convnet mean"] == ""
    assert markdown_table(rows) == "\n".join(table) + "\n"
    # summary.png: accuracy against IPC, one curve per data set and set; the dead run is left out.
    assert curves(rows) == {"d dm (convnet)": ([2, 9, 10], [52.0, 59.0, 60.0], [0.5, 0.5, 0.5])}
    with Image.open(tmp_path / "summary.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 300


def test_summary_curves_average_runs_at_one_ipc_and_keep_sets_apart() -> None:
    def row(ipc: int, dm: float, random: float, dataset: str = "d") -> dict:
        return {"status": "ok", "dataset": dataset, "ipc": ipc, "dm/convnet mean": dm,
                "dm/convnet std": 1.0, "random/convnet mean": random,
                "random/convnet std": 3.0}  # fmt: skip

    rows = [row(1, 40, 20), row(1, 50, 30), row(10, 70, 60), row(1, 90, 80, dataset="e"),
            {"status": "no results.json", "ipc": 1}]  # fmt: skip
    assert curves(rows) == {
        "d dm (convnet)": ([1, 10], [45.0, 70.0], [1.0, 1.0]),
        "d random (convnet)": ([1, 10], [25.0, 60.0], [3.0, 3.0]),
        "e dm (convnet)": ([1], [90.0], [1.0]),
        "e random (convnet)": ([1], [80.0], [3.0]),
    }


def test_only_rank_zero_writes_the_summary(tmp_path: Path, monkeypatch) -> None:
    results = {"dataset": "d", "ipc": 1, "results": {}}
    fake_run(tmp_path, "0_ipc=1", ["ipc=1"], results)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})

    for name in ("RANK", "NODE_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP copy of the command, replaying the sweep
    SweepSummary().on_multirun_end(config=config)
    assert not (tmp_path / "summary.csv").exists()

    monkeypatch.setenv("LOCAL_RANK", "0")
    SweepSummary().on_multirun_end(config=config)
    assert read_csv(tmp_path / "summary.csv")[0]["ipc"] == "1"


def launcher_config(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True
        )
    return cfg.hydra.launcher


def test_slurm_launcher_asks_for_one_task_per_device() -> None:
    launcher = launcher_config("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert launcher.tasks_per_node == launcher.gpus_per_node == 4
    assert launcher.nodes == 2
    assert launcher.partition is None and launcher.timeout_min > 0 and launcher.mem_gb > 0
    # The plugin's own keys are there too (this config extends it), and it builds without a cluster.
    assert launcher.submitit_folder.endswith(".submitit/%j")
    assert instantiate(launcher).params["tasks_per_node"] == 4

    single = launcher_config("trainer=gpu")
    assert single.tasks_per_node == single.gpus_per_node == 1 and single.nodes == 1
