"""pytest configuration; the helpers the tests share live in tests/helpers.

`tiny_run` and `tiny_csv_run`: two tiny train runs made once a session, in this process, for
the tests that only read their outputs (helpers/shared_runs.py says what each holds).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from helpers.shared_runs import SharedRun

# torch, Lightning and the jobs are imported where tests run, not here: under pytest -n the
# controlling process, which runs no test, would import them before it starts the workers.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    import torch

    # pytest -n N: the cores are shared out between the workers, and between the processes the
    # tests start (inherited through OMP_NUM_THREADS), instead of each claiming all of them.
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def _shared_run(tmp_path_factory, name: str, overrides: list[str]) -> SharedRun:
    from helpers.inprocess import train
    from helpers.shared_runs import SharedRun

    run_dir = tmp_path_factory.mktemp(name) / "run"
    result = train(*overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return SharedRun(run_dir, result)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> SharedRun:
    from helpers.shared_runs import TINY_RUN

    return _shared_run(tmp_path_factory, "tiny_run", TINY_RUN)


@pytest.fixture(scope="session")
def tiny_csv_run(tmp_path_factory) -> SharedRun:
    from helpers.shared_runs import TINY_CSV_RUN

    return _shared_run(tmp_path_factory, "tiny_csv_run", TINY_CSV_RUN)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups off the markers
def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest -n: the slow tests go out first, so no worker is left with a long one at the
    end; the tests of a module that share a module-scoped fixture (a run they all read) stay on
    one worker (`--dist loadgroup`), so the run is made once."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        scopes = [d[-1].scope for d in defs.name2fixturedefs.values()] if defs else []
        if "module" in scopes:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
