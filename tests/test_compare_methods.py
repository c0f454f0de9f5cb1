"""benchmarks/compare_methods.py: its budget (`seconds=S` or `steps=N`, a malformed one answered
in one line before anything runs), the ratios to DM in its table, and MTT's and DATM's rows with
the cost of making their experts beside the run's, outside the budget, whether the experts job
made them now or found them made (where their store has no record of it, the job's own cost,
marked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers.experts_job import made_earlier

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "compare_methods.py"
sys.path.insert(0, str(SCRIPT.parent))

import compare_methods  # noqa: E402
from trajectory import JOB_OWN, JOB_OWN_NOTE, MADE  # noqa: E402


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


def test_the_experts_cost_stands_beside_a_seconds_budget_not_inside_it():
    args = compare_methods.parse(["--budget", "seconds=30", "--methods", "dm", "mtt", "datm"])
    text = compare_methods.header(args, 0.0)
    assert text.startswith("30 seconds of condensation a run")
    assert "MTT and DATM experts 4 x 4 epochs" in text
    assert "outside the budget of 30 seconds" in text
    assert "experts" not in compare_methods.header(compare_methods.parse(["--methods", "dm"]), 0)


def test_too_short_experts_are_refused_in_one_line():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--experts-epochs", "2", "--out", "/nonexistent/never"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: --experts-epochs 2: MTT's and DATM's start window reaches expert epoch 3; "
        "give 3 or more"
    ]


@pytest.mark.slow  # three condensations and two experts jobs, each a fresh interpreter
def test_tiny_comparison_shows_mtt_and_datm_with_their_experts_cost(tmp_path, monkeypatch):
    out = tmp_path / "compare"
    rows = compare_methods.main(
        ["--tiny", "--budget", "steps=2", "--methods", "dm", "mtt", "datm", "--out", str(out)]
    )
    assert [r["method"] for r in rows] == ["dm", "mtt", "datm"]
    for r in rows:
        assert r["steps"] == 2 and r["peak MiB"] > 0
    dm, mtt, datm = rows
    assert "experts s" not in dm
    for r in (mtt, datm):
        assert r["experts s"] > 0 and r["experts MiB"] > 0
    assert len(list((out / "experts").iterdir())) == 2  # each method its own (SGD, GSAM)
    lines = (out / "table.md").read_text().splitlines()
    assert "outside the budget of 2 steps" in lines[0]
    assert lines[2].endswith("| experts s | experts MiB |")
    cells = {line.split(" | ")[2]: line.split(" | ") for line in lines[4:]}
    assert cells["DM"][-2:] == ["-", "- |"]
    for name, r in (("MTT", mtt), ("DATM", datm)):
        assert cells[name][-2:] == [f"{r['experts s']:.0f}", f"{r['experts MiB']:.0f} |"]
    # the experts are made once: a later invocation into the same folder reads their cost back
    overrides = json.loads((out / "mnist_sample_experts_mtt.json").read_text())["overrides"]

    def must_not_run(command, log):
        raise AssertionError(f"ran {command} again")

    monkeypatch.setattr(compare_methods, "run_job", must_not_run)
    again = compare_methods.make_experts(overrides, out / "mnist_sample_experts_mtt.json")
    assert again == {"experts s": mtt["experts s"], "experts MiB": mtt["experts MiB"],
                     "experts cost": MADE}  # fmt: skip
    # what making the experts cost, as the experts job's results.json reports it
    for method, r in (("mtt", mtt), ("datm", datm)):
        made = json.loads((out / f"mnist_sample_experts_{method}" / "results.json").read_text())
        assert made["trained_now"] == 1 and r["experts cost"] == MADE
        assert (r["experts s"], r["experts MiB"]) == (
            made["making_seconds"],
            made["making_peak_mib"],
        )


def experts_job_writing(results: dict | None, ran: list) -> object:
    """A stand-in for run_job: the experts job writes `results` (None: nothing) as its
    results.json into its hydra.run.dir; its peak is 900 MiB."""

    def run_job(command: list[str], log: Path) -> float:
        ran.append(command)
        run_dir = Path(next(c.split("=", 1)[1] for c in command if c.startswith("hydra.run.dir=")))
        run_dir.mkdir(parents=True, exist_ok=True)
        if results is not None:
            (run_dir / "results.json").write_text(json.dumps(results))
        return 900.0

    return run_job


def clock_of(*readings: float) -> SimpleNamespace:
    values = iter(readings)
    return SimpleNamespace(time=lambda: next(values))


def test_reused_experts_show_what_making_them_cost(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(
        compare_methods, "run_job", experts_job_writing(made_earlier(68.0, 1710.0), ran)
    )
    monkeypatch.setattr(compare_methods, "time", clock_of(100.0, 109.5))  # the job: 9.5 s
    record = tmp_path / "mnist_sample_experts_mtt.json"
    cost = compare_methods.make_experts(["method=mtt"], record)
    assert cost == {"experts s": 68.0, "experts MiB": 1710.0, "experts cost": MADE}
    assert ran[0][-1] == f"hydra.run.dir={tmp_path / 'mnist_sample_experts_mtt'}"
    lines = compare_methods.table([{**row("mnist_sample", 1, "mtt", 0.5, 1000.0), **cost}])
    assert lines[2].endswith("| 68 | 1710 |") and JOB_OWN_NOTE not in lines


@pytest.mark.parametrize("results", [made_earlier(None, None), None])
def test_experts_without_a_making_record_show_the_jobs_own_cost_marked(
    tmp_path, monkeypatch, results
):
    ran = []
    monkeypatch.setattr(compare_methods, "run_job", experts_job_writing(results, ran))
    monkeypatch.setattr(compare_methods, "time", clock_of(100.0, 109.5))
    record = tmp_path / "mnist_sample_experts_mtt.json"
    # a record from before the making cost was read is not read back: the job runs again
    record.write_text(json.dumps({"overrides": ["method=mtt"],
                                  "cost": {"experts s": 3.0, "experts MiB": 500.0}}))  # fmt: skip
    cost = compare_methods.make_experts(["method=mtt"], record)
    assert len(ran) == 1
    assert cost == {"experts s": 9.5, "experts MiB": 900.0, "experts cost": JOB_OWN}
    lines = compare_methods.table([{**row("mnist_sample", 1, "mtt", 0.5, 1000.0), **cost}])
    assert lines[2].endswith("| 10* | 900* |") and lines[-1] == JOB_OWN_NOTE
