"""benchmarks/leaderboard.py --tiny: every method condensed, scored under the common and its own
protocol, hard and soft labels, with LRS and ARS, and the table, CSV and figure written; then
rerun into the same folder, where it reads every finished job back. The jobs run in this
process (helpers.inprocess)."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest
from helpers.inprocess import ENTRY_POINTS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import leaderboard  # noqa: E402

pytestmark = pytest.mark.slow  # six methods condensed, 18 evaluate jobs


def in_process(module: str, overrides: list[str]) -> dict:
    result = ENTRY_POINTS[module](*overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((leaderboard.run_folder(overrides) / "results.json").read_text())


def minutes_of_jobs(out: Path) -> str:
    return re.search(r"; (\d+) min of jobs in all", (out / "board.md").read_text()).group(1)


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
    # each evaluation records its protocol and labels
    ncfm = out / "mnist_sample_ipc1_ncfm"
    summary = json.loads((ncfm / "ncfm_soft" / "results.json").read_text())
    assert (summary["eval_protocol"], summary["labels"]) == ("ncfm", "soft")
    rded_dir = out / "mnist_sample_ipc1_rded" / "rded_relabel"
    rded = json.loads((rded_dir / "results.json").read_text())
    assert (rded["eval_protocol"], rded["labels"]) == ("rded", "relabel")
    board = (out / "board.md").read_text()
    assert f"- not run: cifar10: {missing} not found" in board
    assert board.count("| mnist_sample | 1 |") == len(leaderboard.METHODS)
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
    # A job recorded with other overrides is run again: the first one the board asks for.
    record = out / "mnist_sample_ipc1_dm" / "condense" / "board_job.json"
    job = json.loads(record.read_text())
    record.write_text(json.dumps({**job, "overrides": [*job["overrides"], "seed=1"]}))
    asked = []

    def record_and_stop(module: str, overrides: list[str]) -> dict:
        asked.append((module, overrides))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        leaderboard.main(["--tiny", "--ipcs", "1", "--out", str(out), "--archive", str(missing)],
                         run=record_and_stop)  # fmt: skip
    assert asked == [(job["module"], job["overrides"])]


def test_the_pool_budget_reaches_every_job_only_when_given() -> None:
    given = leaderboard.parse(["--pool-size", "4", "--pool-epochs", "3"])
    shared, _, _ = leaderboard.budget_overrides(given)
    assert [o for o in shared if o.startswith("pool.")] == ["pool.size=4", "pool.epochs=3"]
    shared, _, _ = leaderboard.budget_overrides(leaderboard.parse([]))
    assert not [o for o in shared if o.startswith("pool.")]  # the data set's own pool
