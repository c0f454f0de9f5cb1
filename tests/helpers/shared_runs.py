"""The two tiny train runs a test session makes once (fixtures `tiny_run` and `tiny_csv_run`
in conftest.py), in this process, for the tests that only read what a run leaves. Those tests
must not write into the run folders.

- TINY_RUN: the default logger (TensorBoard) with image grids every 2 steps, every step's loss
  logged, 2 networks x 2 epochs a set, and export=imagefolder;
- TINY_CSV_RUN: logger=csv, every step's loss logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from helpers.inprocess import Run, tiny

TINY_RUN_IPC, TINY_RUN_ITERATIONS, TINY_RUN_IMAGES_EVERY = 2, 4, 2
TINY_RUN_EVAL_EPOCHS, TINY_RUN_EVAL_NETWORKS = 2, 2
TINY_RUN = tiny(
    f"ipc={TINY_RUN_IPC}",
    f"iterations={TINY_RUN_ITERATIONS}",
    f"eval.epochs={TINY_RUN_EVAL_EPOCHS}",
    f"eval.num_models={TINY_RUN_EVAL_NETWORKS}",
    f"log_images_every={TINY_RUN_IMAGES_EVERY}",
    "trainer.log_every_n_steps=1",
    "export=imagefolder",
)

TINY_CSV_RUN_IPC, TINY_CSV_RUN_ITERATIONS = 2, 3
TINY_CSV_RUN = tiny(
    f"ipc={TINY_CSV_RUN_IPC}",
    f"iterations={TINY_CSV_RUN_ITERATIONS}",
    "logger=csv",
    "trainer.log_every_n_steps=1",
)


@dataclass(frozen=True)
class SharedRun:
    """A finished run: its folder and what the entry point printed."""

    run_dir: Path
    result: Run
