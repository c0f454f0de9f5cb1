"""benchmarks/paper_table.py --tiny: the paper's row, end to end at toy size on the CPU.

The data: a generated CIFAR-shaped JPEG archive, given with --data. One out folder: first
`--only ipc=10`, then every cell (ipc=10 is skipped as done). The tests check what ran, and
that the table and paper_table.json carry the figures of each job's results.json, the published
figures and the gaps between them. The first invocation is a real process that starts its job
as one; the later ones run the driver and its jobs in this process (helpers.inprocess).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.fixtures import write_cifar10_jpeg_archive
from helpers.inprocess import ENTRY_POINTS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "paper_table.py"
sys.path.insert(0, str(SCRIPT.parent))
import paper_table as driver  # noqa: E402

pytestmark = pytest.mark.slow  # five jobs, one of them in its own process
# ../shared/REFERENCE.md: DM on CIFAR-10 at IPC 1 / 10 / 50, and the whole training set
PAPER = {"ipc=1": 26.0, "ipc=10": 48.9, "ipc=50": 63.0, "whole": 84.8}
SLUG = {"ipc=1": "ipc1", "ipc=10": "ipc10", "ipc=50": "ipc50", "whole": "whole"}
TINY_STEPS = 3


def paper_table(out: Path, archive: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--data", str(archive), "--out", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


class InProcessJob:
    """The driver's Job, with the job's entry point called in this process."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        _python, _dash_m, module, *overrides = command
        print("$", " ".join(command), flush=True)  # as Job does: commands() reads it
        run = ENTRY_POINTS[module](*overrides)
        with open(log_path, "a") as log:
            log.write(run.stdout + run.stderr)
        print(run.stdout, end="", flush=True)
        self.code = run.returncode

    def stop(self) -> None:
        pass

    def wait(self, timeout: float | None) -> int:
        return self.code


def paper_table_in_process(out: Path, archive: Path, *args: str) -> subprocess.CompletedProcess:
    """paper_table(...), the driver and its jobs in this process."""
    argv = ["--tiny", "--data", str(archive), "--out", str(out), *args]
    stdout, stderr = io.StringIO(), io.StringIO()
    on_sigterm = signal.getsignal(signal.SIGTERM)  # the driver sets its own
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = driver.main(argv, start=InProcessJob)
    finally:
        signal.signal(signal.SIGTERM, on_sigterm)
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def commands(result: subprocess.CompletedProcess) -> list[str]:
    """The job command lines the driver printed."""
    return [line for line in result.stdout.splitlines() if line.startswith("$ ")]


def table_rows(markdown: str) -> dict[str, list[str]]:
    """First column -> the row's columns, for every data row of the Markdown tables."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            columns = [column.strip() for column in line.strip("|").split("|")]
            rows[columns[0]] = columns
    return rows


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """10 classes, 52 training images a class (enough for IPC 50) and 4 test images."""
    folder = tmp_path_factory.mktemp("cifar10_jpeg")
    return write_cifar10_jpeg_archive(folder / "cifar10.tar.gz", 52, 4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, archive) -> dict:
    out = tmp_path_factory.mktemp("paper_table")
    first = succeeded(paper_table(out, archive, "--only", "ipc=10"))
    after_first = {
        "report": json.loads((out / "paper_table.json").read_text()),
        "markdown": (out / "paper_table.md").read_text(),
        "runs": sorted(path.name for path in (out / "runs").iterdir()),
    }
    second = succeeded(paper_table_in_process(out, archive))
    return {
        "archive": archive,
        "out": out,
        "first": first,
        "after_first": after_first,
        "second": second,
        "report": json.loads((out / "paper_table.json").read_text()),
        "markdown": (out / "paper_table.md").read_text(),
    }


def test_only_runs_exactly_the_named_cells(tiny):
    jobs = commands(tiny["first"])
    assert len(jobs) == 1 and " experiment=cifar10_ipc10 " in jobs[0]
    assert list(tiny["after_first"]["report"]["cells"]) == ["ipc=10"]
    assert tiny["after_first"]["runs"] == ["ipc10"]
    rows = table_rows(tiny["after_first"]["markdown"])
    assert rows["1"][1] == rows["50"][1] == rows["whole"][1] == "not measured"
    assert rows["10"][1] != "not measured"


def test_rerun_skips_finished_cells_and_runs_the_rest(tiny):
    jobs = commands(tiny["second"])
    assert not any("cifar10_ipc10 " in job for job in jobs)
    assert sum("experiment=cifar10_ipc1 " in job for job in jobs) == 1
    assert sum("experiment=cifar10_ipc50 " in job for job in jobs) == 1
    assert sum("dmcondense.evaluate baseline=whole " in job for job in jobs) == 1
    assert "ipc=10: done earlier with the same overrides; skipped" in tiny["second"].stdout
    # the record of the first invocation is kept as it was
    assert tiny["report"]["cells"]["ipc=10"] == tiny["after_first"]["report"]["cells"]["ipc=10"]
    assert set(tiny["report"]["cells"]) == set(PAPER)


@pytest.mark.parametrize("name", ["ipc=1", "ipc=10", "ipc=50"])
def test_condensation_cells_carry_their_jobs_figures(tiny, name):
    record = tiny["report"]["cells"][name]
    results = json.loads((tiny["out"] / "runs" / SLUG[name] / "results.json").read_text())
    dm, random = results["results"]["dm"]["convnet"], results["results"]["random"]["convnet"]
    assert record["status"] == "done"
    assert record["ipc"] == results["ipc"] == int(name.split("=")[1])
    assert record["ours"] == {"mean": dm["mean"], "std": dm["std"], "networks": 2}
    assert record["random"] == {"mean": random["mean"], "std": random["std"], "networks": 2}
    assert record["steps"] == results["steps"] == TINY_STEPS
    assert record["steps_per_s"] == round(TINY_STEPS / results["condense_seconds"], 2)
    assert record["gap"] == round(dm["mean"] - PAPER[name], 2)
    assert record["within_target"] == (abs(dm["mean"] - PAPER[name]) <= 1.0)
    assert record["wall_seconds"] >= results["total_seconds"] > 0

    row = table_rows(tiny["markdown"])[str(record["ipc"])]
    assert row[1] == f"{dm['mean']:.2f} ± {dm['std']:.2f}"
    assert row[2].startswith(f"{PAPER[name]:.1f} ± ")
    assert row[3] == f"{dm['mean'] - PAPER[name]:+.2f}"
    assert row[4] == ("yes" if record["within_target"] else "no")
    assert row[5].startswith(f"{random['mean']:.2f} ± {random['std']:.2f} / ")
    assert row[7] == str(TINY_STEPS)
    assert row[8] == f"{record['steps_per_s']:.2f}"
    assert row[10] == f"{record['wall_seconds']:.0f}"


def test_whole_cell_is_the_whole_training_split(tiny):
    record = tiny["report"]["cells"]["whole"]
    results = json.loads((tiny["out"] / "runs" / "whole" / "results.json").read_text())
    convnet = results["results"]["whole"]["convnet"]
    assert results["what"].startswith("baseline whole")
    assert record["ours"] == {"mean": convnet["mean"], "std": convnet["std"], "networks": 1}
    assert record["gap"] == round(convnet["mean"] - PAPER["whole"], 2)
    row = table_rows(tiny["markdown"])["whole"]
    assert row[1] == f"{convnet['mean']:.2f} ± {convnet['std']:.2f}"
    assert row[2] == "84.8"
    assert row[3] == f"{convnet['mean'] - PAPER['whole']:+.2f}"
    total = sum(cell["wall_seconds"] for cell in tiny["report"]["cells"].values())
    assert f"Cells done: 4 of 4; their wall time together: {total:.0f} s" in tiny["markdown"]


def test_a_finished_job_missing_from_the_report_is_adopted(tiny, tmp_path):
    """The driver stopped after a job finished but before recording it: a rerun reads the
    job's results.json instead of running it again."""
    out = tmp_path / "copy"
    shutil.copytree(tiny["out"], out)
    report = json.loads((out / "paper_table.json").read_text())
    kept = report["cells"].pop("ipc=50")
    (out / "paper_table.json").write_text(json.dumps(report))
    result = succeeded(paper_table_in_process(out, tiny["archive"], "--only", "ipc=50"))
    assert commands(result) == []
    assert "ipc=50: adopting the finished job" in result.stdout
    adopted = json.loads((out / "paper_table.json").read_text())["cells"]["ipc=50"]
    assert adopted["ours"] == kept["ours"] and adopted["steps"] == kept["steps"]


def test_an_unknown_cell_is_refused(tmp_path, archive):
    result = paper_table(tmp_path, archive, "--only", "ipc=10,ipc=7")
    assert result.returncode != 0
    assert "unknown cell 'ipc=7'" in result.stderr
    assert not (tmp_path / "paper_table.json").exists()


def test_tiny_without_data_is_refused_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--data" in result.stderr
    assert not (tmp_path / "paper_table.json").exists()
