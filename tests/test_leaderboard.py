"""benchmarks/leaderboard.py --tiny: every method condensed (MTT and DATM after their experts
job), scored under the common and its own protocol, hard and soft labels, with LRS and ARS, what
each set and its experts cost, and the table, CSV and figure written; then rerun into the same
folder, where it reads every finished job back. The jobs run in this process
(helpers.inprocess)."""

from __future__ import annotations

import csv
import json
import re
import resource
import sys
from pathlib import Path

import pytest
import torch
from helpers.experts_job import made_earlier
from helpers.inprocess import ENTRY_POINTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import leaderboard  # noqa: E402
from trajectory import JOB_OWN, JOB_OWN_NOTE, MADE  # noqa: E402


def in_process(module: str, overrides: list[str]) -> dict:
    """The job in this process: its results.json ({} for the experts job, which writes none),
    and as its peak memory this process's peak so far (a child runner measures the job's own)."""
    result = ENTRY_POINTS[module](*overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    results = leaderboard.run_folder(overrides) / "results.json"
    found = json.loads(results.read_text()) if results.is_file() else {}
    return {**found, leaderboard.PEAK: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def minutes_of_jobs(out: Path) -> str:
    return re.search(r"; (\d+) min of jobs in all", (out / "board.md").read_text()).group(1)


@pytest.mark.slow  # ten methods condensed, two experts jobs, 34 evaluate jobs
def test_the_tiny_board_scores_every_method_and_writes_table_csv_and_figure(tmp_path) -> None:
    out = tmp_path / "board"
    missing = tmp_path / "no-cifar.tar.gz"
    rows = leaderboard.main(["--tiny", "--ipcs", "1", "--out", str(out), "--archive",
                             str(missing)], run=in_process)  # fmt: skip
    assert [r["method"] for r in rows] == list(leaderboard.METHODS)
    for row in rows:
        assert row["own protocol"] == leaderboard.OWN_PROTOCOL[row["method"]]
        for key in (*leaderboard.COLUMNS, "random common", "whole common"):
            assert 0 <= row[key] <= 100
        for key in ("LRS common", "ARS common", "LRS own", "ARS own"):
            assert 0 <= row[key] <= 1
        if row["own protocol"] == "dsa":  # the same evaluation twice
            assert row["own hard"] == row["common hard"] and row["LRS own"] == row["LRS common"]
        # what the set cost; the experts' seconds and memory beside it, for MTT and DATM only
        assert row["steps"] >= 1 and row["condense s"] >= 0 and row["condense MiB"] > 0
        if row["method"] in ("mtt", "datm"):
            assert row["own protocol"] == "mtt"
            assert (row["experts s"] or 0) > 0 and (row["experts MiB"] or 0) > 0, row
            # what making the experts cost, as the experts job's results.json reports it
            made = json.loads(
                (out / f"mnist_sample_experts_{row['method']}" / "results.json").read_text()
            )
            assert row["experts cost"] == MADE
            assert (row["experts s"], row["experts MiB"]) == (
                made["making_seconds"],
                made["making_peak_mib"],
            )
        else:
            assert row["experts s"] is None and row["experts MiB"] is None
    # MTT and DATM: each method's experts made once by the experts job, under the board's folder
    assert len(list((out / "experts").iterdir())) == 2  # MTT's SGD recipe, DATM's GSAM one
    experts_jobs = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/board_job.json")}
    assert {name: job["module"] for name, job in experts_jobs.items()} == {
        "mnist_sample_experts_mtt": "dmcondense.experts",
        "mnist_sample_experts_datm": "dmcondense.experts",
    }
    # their own protocol trains at the set's learned step size, and says which
    for method in ("mtt", "datm"):
        own = json.loads(
            (out / f"mnist_sample_ipc1_{method}" / "mtt_hard" / "results.json").read_text()
        )
        assert own["eval_protocol"] == "mtt" and own["learned_lr"] > 0
    # each evaluation records its protocol and labels
    ncfm = out / "mnist_sample_ipc1_ncfm"
    summary = json.loads((ncfm / "ncfm_soft" / "results.json").read_text())
    assert (summary["eval_protocol"], summary["labels"]) == ("ncfm", "soft")
    rded_dir = out / "mnist_sample_ipc1_rded" / "rded_relabel"
    rded = json.loads((rded_dir / "results.json").read_text())
    assert (rded["eval_protocol"], rded["labels"]) == ("rded", "relabel")
    board = (out / "board.md").read_text()
    assert f"- not run: cifar10: {missing} not found" in board
    # a row a method in the accuracy table and in the cost table beside it
    assert board.count("| mnist_sample | 1 |") == 2 * len(leaderboard.METHODS)
    cost_row = r"^\| mnist_sample \| 1 \| (\w+) \| \d+ \| [\d.]+ \| \d+ \| (\S+) \| (\S+) \|$"
    cost_rows = re.findall(cost_row, board, re.M)
    experts_cells = {method: (seconds, mib) for method, seconds, mib in cost_rows}
    assert list(experts_cells) == list(leaderboard.METHODS)
    for method, (seconds, mib) in experts_cells.items():
        shown = method in ("mtt", "datm")
        assert (seconds != "-", mib != "-") == (shown, shown), (method, seconds, mib)
    # what DATM's label columns mean: its own learned soft labels, not a teacher's
    assert "- datm: its set carries learned soft labels" in board
    with open(out / "board.csv") as f:
        assert len(list(csv.DictReader(f))) == len(leaderboard.METHODS)
    assert (out / "board.png").stat().st_size > 10_000
    # the whole-data accuracy is trained once per protocol and reused by every later set
    assert sorted(p.name.split("-")[0] for p in (out / "whole").iterdir()) == ["mnist_sample"] * 5
    # the note's time is the jobs' wall time, as each job's record keeps it
    recorded = sum(json.loads(p.read_text())["seconds"] for p in out.rglob("board_job.json"))
    assert recorded > 0 and minutes_of_jobs(out) == f"{recorded / 60:.0f}"

    # A rerun into the same folder reads every finished job back and runs none.
    def must_not_run(module: str, overrides: list[str]) -> dict:
        raise AssertionError(f"ran {module} again")

    again = leaderboard.main(["--tiny", "--ipcs", "1", "--out", str(out), "--archive",
                              str(missing)], run=must_not_run)  # fmt: skip
    assert again == rows
    assert minutes_of_jobs(out) == f"{recorded / 60:.0f}"  # the reused jobs' time still counts
    # A set condensed again (another budget, the same folder) is scored again, not read back.
    condensed = out / "mnist_sample_ipc1_dm" / "condense"
    synthetic = torch.load(condensed / "synthetic.pt", weights_only=True)
    torch.save({**synthetic, "images": synthetic["images"] + 0.01}, condensed / "synthetic.pt")
    asked = []

    def record_and_stop(module: str, overrides: list[str]) -> dict:
        asked.append((module, overrides))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        leaderboard.main(["--tiny", "--ipcs", "1", "--out", str(out), "--archive", str(missing)],
                         run=record_and_stop)  # fmt: skip
    assert asked[0][0] == "dmcondense.evaluate" and f"condensed={condensed}" in asked[0][1]
    torch.save(synthetic, condensed / "synthetic.pt")
    # A job recorded with other overrides is run again: the first one the board asks for.
    record = out / "mnist_sample_ipc1_dm" / "condense" / "board_job.json"
    job = json.loads(record.read_text())
    record.write_text(json.dumps({**job, "overrides": [*job["overrides"], "seed=1"]}))
    asked.clear()
    with pytest.raises(KeyboardInterrupt):
        leaderboard.main(["--tiny", "--ipcs", "1", "--out", str(out), "--archive", str(missing)],
                         run=record_and_stop)  # fmt: skip
    assert asked == [(job["module"], job["overrides"])]


def stub_job(experts_results: dict | None) -> leaderboard.Runner:
    """A runner that writes each job's results.json: the experts job's `experts_results` (None:
    it writes none), a train job's steps and seconds; its peak is 900 MiB."""

    def run(module: str, overrides: list[str]) -> dict:
        found = {"steps": 5, "condense_seconds": 1.5}
        if module == leaderboard.EXPERTS_MODULE:
            found = experts_results
        run_dir = leaderboard.run_folder(overrides)
        run_dir.mkdir(parents=True, exist_ok=True)
        if found is not None:
            (run_dir / "results.json").write_text(json.dumps(found))
        return {**(found or {}), leaderboard.PEAK: 900.0}

    return run


def cost_rows(cost: dict) -> list[str]:
    row = {"data set": "mnist_sample", "IPC": 1, "method": "mtt", **cost}
    return leaderboard.markdown([row], [], "note").splitlines()


def test_the_cost_table_shows_what_making_reused_experts_cost(tmp_path: Path) -> None:
    """The experts job found its experts made: the board shows what making them cost, as their
    store recorded it, not the job's seconds of checking them."""
    args = leaderboard.parse(["--out", str(tmp_path)])
    run = leaderboard.ReusingFinished(stub_job(made_earlier(68.0, 1710.0)))
    condensed = tmp_path / "mnist_sample_ipc1_mtt" / "condense"
    cost = leaderboard.condense(run, args, "mnist_sample", 1, "mtt", [], [], condensed)
    assert cost == {"steps": 5, "condense s": 1.5, "condense MiB": 900.0, "experts s": 68.0,
                    "experts MiB": 1710.0, "experts cost": MADE}  # fmt: skip
    lines = cost_rows(cost)
    assert "| mnist_sample | 1 | mtt | 5 | 1.5 | 900 | 68.0 | 1710 |" in lines
    assert JOB_OWN_NOTE not in lines


@pytest.mark.parametrize("results", [made_earlier(None, None), None])
def test_experts_without_a_making_record_show_the_jobs_own_cost_marked(
    tmp_path: Path, results: dict | None
) -> None:
    """A store made before the records were kept (or an experts job read back from before it
    wrote results.json): the job's own seconds and peak, read back from its board record, each
    marked, with the note that says they are not the making's."""
    args = leaderboard.parse(["--out", str(tmp_path)])
    experts_job = tmp_path / "mnist_sample_experts_mtt"
    experts_job.mkdir()
    run = leaderboard.ReusingFinished(stub_job(results))
    overrides = [*leaderboard.trajectory_overrides(args)[0], f"hydra.run.dir={experts_job}"]
    record = {
        "module": leaderboard.EXPERTS_MODULE,
        "overrides": ["method=mtt", *overrides],
        "reads": None,
        "seconds": 9.5,
        "peak_mib": 800.0,
        "results": results is not None,
    }
    (experts_job / "board_job.json").write_text(json.dumps(record))  # fmt: skip
    if results is not None:
        (experts_job / "results.json").write_text(json.dumps(results))
    condensed = tmp_path / "mnist_sample_ipc1_mtt" / "condense"
    cost = leaderboard.condense(run, args, "mnist_sample", 1, "mtt", [], [], condensed)
    assert (cost["experts s"], cost["experts MiB"], cost["experts cost"]) == (
        9.5,
        800.0,
        JOB_OWN,
    )
    lines = cost_rows(cost)
    assert "| mnist_sample | 1 | mtt | 5 | 1.5 | 900 | 9.5* | 800* |" in lines
    assert JOB_OWN_NOTE in lines


def test_the_pool_budget_reaches_every_job_only_when_given() -> None:
    given = leaderboard.parse(["--pool-size", "4", "--pool-epochs", "3"])
    shared, _, _ = leaderboard.budget_overrides(given)
    assert [o for o in shared if o.startswith("pool.")] == ["pool.size=4", "pool.epochs=3"]
    shared, _, _ = leaderboard.budget_overrides(leaderboard.parse([]))
    assert not [o for o in shared if o.startswith("pool.")]  # the data set's own pool
