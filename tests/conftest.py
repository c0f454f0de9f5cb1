"""pytest configuration; the helpers the tests share live in tests/helpers.

`tiny_run` and `tiny_csv_run`: two tiny train runs made once a session, in this process, for
the tests that only read their outputs (helpers/shared_runs.py says what each holds).
"""

from __future__ import annotations

import pytest
from helpers.inprocess import train
from helpers.shared_runs import TINY_CSV_RUN, TINY_RUN, SharedRun


def _shared_run(tmp_path_factory, name: str, overrides: list[str]) -> SharedRun:
    run_dir = tmp_path_factory.mktemp(name) / "run"
    result = train(*overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return SharedRun(run_dir, result)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> SharedRun:
    return _shared_run(tmp_path_factory, "tiny_run", TINY_RUN)


@pytest.fixture(scope="session")
def tiny_csv_run(tmp_path_factory) -> SharedRun:
    return _shared_run(tmp_path_factory, "tiny_csv_run", TINY_CSV_RUN)
