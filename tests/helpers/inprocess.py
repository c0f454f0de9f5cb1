"""The jobs, run inside the test process: the same entry points a user runs, without paying a
fresh interpreter (torch, Lightning, Hydra imported again) for every run.

`train(...)`, `evaluate(...)`, `continual(...)`, `pretrain(...)` and `nas(...)` call the entry
point's `main()` with `sys.argv` patched, so a run goes through everything
`python -m dmcondense.train ...` does: the short forms, the command-line check (one line and
exit 2 on a typo), Hydra (run folder, .hydra/, config), the config checks, the job, and the
one-line error of a bad input. What the process would print is captured and returned with
the exit status.

Every in-process import of the job, build and check modules lives in this one module, so a move
of those modules is re-pointed here alone. Tests import from here, not from the job modules.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L

# The entry points (thin: they import the job modules when a run starts).
from dmcondense import continual as continual_entry
from dmcondense import evaluate as evaluate_entry
from dmcondense import experts as experts_entry
from dmcondense import nas as nas_entry
from dmcondense import pretrain as pretrain_entry
from dmcondense import train as train_entry
from dmcondense.jobs import build as build_job
from dmcondense.jobs import evaluate as evaluate_job
from dmcondense.jobs import scores as scores_job

# The smallest run of the train job on the built-in MNIST sample: a narrow ConvNet, 4 real
# images a class, a few steps, one network x one epoch to score each set. Tests add what they
# look at (ipc, iterations, logger, ...); a later override of the same key wins.
TINY = ("model.width=8", "batch_real=4", "iterations=3", "eval.epochs=1", "eval.num_models=1")


def tiny(*overrides: str) -> list[str]:
    """TINY with `overrides` after it (Hydra keeps the last value given for a key)."""
    return [*TINY, *overrides]


@dataclass
class Run:
    """What a run left: exit status (0, or 2 for a one-line error), stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


def _call(main: Callable[[], None], module: str, argv: list[str]) -> Run:
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_show = sys.argv, warnings.showwarning
    sys.argv = [module, *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = saved_argv
        warnings.showwarning = saved_show  # the entry point installs its readable warnings
    return Run(code, out.getvalue(), err.getvalue())


def train(*overrides: str) -> Run:
    """`python -m dmcondense.train <overrides>`, in this process."""
    return _call(train_entry.main, "dmcondense.train", list(overrides))


def evaluate(*overrides: str) -> Run:
    """`python -m dmcondense.evaluate <overrides>`, in this process."""
    return _call(evaluate_entry.main, "dmcondense.evaluate", list(overrides))


def continual(*overrides: str) -> Run:
    """`python -m dmcondense.continual <overrides>`, in this process."""
    return _call(continual_entry.main, "dmcondense.continual", list(overrides))


def pretrain(*overrides: str) -> Run:
    """`python -m dmcondense.pretrain <overrides>`, in this process."""
    return _call(pretrain_entry.main, "dmcondense.pretrain", list(overrides))


def experts(*overrides: str) -> Run:
    """`python -m dmcondense.experts <overrides>`, in this process."""
    return _call(experts_entry.main, "dmcondense.experts", list(overrides))


def nas(*overrides: str) -> Run:
    """`python -m dmcondense.nas <overrides>`, in this process."""
    return _call(nas_entry.main, "dmcondense.nas", list(overrides))


# `python -m <module>` -> the same run in this process (for drivers that start jobs by module).
ENTRY_POINTS = {
    "dmcondense.train": train, "dmcondense.evaluate": evaluate, "dmcondense.continual": continual,
    "dmcondense.pretrain": pretrain, "dmcondense.nas": nas, "dmcondense.experts": experts,
}  # fmt: skip


@contextlib.contextmanager
def other_ranks_as_processes(module: str = "dmcondense.train") -> Iterator[list]:
    """Inside, a DDP run in this process is rank 0, and Lightning starts the other ranks as
    `python -m <module> <the same overrides>` processes, as it does for a user's run; yields
    those processes, waited for on the way out.

    Lightning names the module from __main__, which in a test worker is no module, so it is
    named here. The environment variables and the process group that the launch leaves in this
    process are undone on the way out, so later runs in this worker are single-process again.
    """
    import importlib.util
    import os
    import subprocess

    import torch.distributed as dist

    main, environ, popen = sys.modules["__main__"], dict(os.environ), subprocess.Popen
    spec = getattr(main, "__spec__", None)
    started: list[subprocess.Popen] = []

    def recorded_popen(*args, **kwargs) -> subprocess.Popen:
        process = popen(*args, **kwargs)
        started.append(process)
        return process

    main.__spec__ = importlib.util.find_spec(module)
    subprocess.Popen = recorded_popen
    try:
        yield started
    finally:
        subprocess.Popen = popen
        main.__spec__ = spec
        for process in started:
            process.wait(timeout=120)
        os.environ.clear()
        os.environ.update(environ)
        if dist.is_initialized():
            dist.destroy_process_group()


class Killed(BaseException):
    """Stands for SIGKILL: raised right after a checkpoint is written. A BaseException, so no
    `except Exception` on the way (Hydra's, the job's) turns it into an error exit."""


@contextlib.contextmanager
def steps_seen(kill_after: int | None = None) -> Iterator[list[int]]:
    """Record the global step after each training step of the runs inside; with `kill_after`,
    raise Killed once a step at or beyond it has been checkpointed (the checkpoint callback
    has run), as a kill between two checkpoints would leave the folder."""
    seen: list[int] = []
    checkpoint = L.pytorch.callbacks.ModelCheckpoint
    save = checkpoint.on_train_batch_end

    def on_train_batch_end(self, trainer, *args, **kwargs):
        save(self, trainer, *args, **kwargs)
        seen.append(trainer.global_step)
        if kill_after is not None and trainer.global_step >= kill_after:
            raise Killed

    checkpoint.on_train_batch_end = on_train_batch_end
    try:
        yield seen
    finally:
        checkpoint.on_train_batch_end = save


def train_killed_after(step: int, *overrides: str) -> list[int]:
    """A train run stopped right after its step-`step` checkpoint; the steps it made."""
    with steps_seen(kill_after=step) as seen:
        try:
            train(*overrides)
        except Killed:
            return seen
    raise AssertionError(f"the run ended before step {step}: steps {seen}")


def output_files(run_dir: Path) -> list[str]:
    """The run's own outputs in `run_dir` (not Hydra's record: .hydra/, the job's .log)."""
    if not run_dir.exists():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log")


class _WatchedSplit:
    """A test split that records each read of its attributes made while `state` says a
    learning rate is being chosen."""

    def __init__(self, split: object, state: dict) -> None:
        self._split, self._state = split, state

    def __getattr__(self, name: str) -> object:
        if self._state["choosing"]:
            self._state["reads_while_choosing"].append(name)
        else:
            self._state["reads_after"].append(name)
        return getattr(self._split, name)


@contextlib.contextmanager
def watch_test_split(leak: bool = False) -> Iterator[dict]:
    """Record reads of the evaluate job's test split during its learning-rate search
    (`reads_while_choosing`) and after it (`reads_after`). `leak=True` hands the search the
    test split in place of the held-out training images: the bug the watch must catch."""
    state: dict = {"choosing": False, "reads_while_choosing": [], "reads_after": [], "test": None}
    load_test, search_rates = evaluate_job.load_test, evaluate_job.search_rates
    validation_set = scores_job.validation_set

    def watched_load_test(*args, **kwargs):
        state["test"] = _WatchedSplit(load_test(*args, **kwargs), state)
        return state["test"]

    def watched_search(*args, **kwargs):
        state["choosing"] = True
        try:
            return search_rates(*args, **kwargs)
        finally:
            state["choosing"] = False

    evaluate_job.load_test, evaluate_job.search_rates = watched_load_test, watched_search
    if leak:
        scores_job.validation_set = lambda train, indices: state["test"]
    try:
        yield state
    finally:
        evaluate_job.load_test, evaluate_job.search_rates = load_test, search_rates
        scores_job.validation_set = validation_set


@contextlib.contextmanager
def extra_callbacks(*callbacks: L.Callback) -> Iterator[None]:
    """The runs inside build their Trainer with `callbacks` added after the job's own."""
    make = build_job.trainer

    def trainer(cfg, run_dir, job_callbacks, plugins=None):
        return make(cfg, run_dir, [*job_callbacks, *callbacks], plugins)

    build_job.trainer = trainer
    try:
        yield
    finally:
        build_job.trainer = make


@contextlib.contextmanager
def evaluation_device(device: object) -> Iterator[list]:
    """The runs inside get `device` as the job's evaluation device (build.eval_device); yields
    the devices every scoring of an evaluation plan was handed."""
    from dmcondense.evaluation.plan import EvaluationPlan

    received: list = []
    choose, scores = build_job.eval_device, EvaluationPlan.scores

    def recorded(self, sets, test, normaliser, device=None, progress=False):
        received.append(device)
        return scores(self, sets, test, normaliser, device, progress)

    build_job.eval_device = lambda cfg: device
    EvaluationPlan.scores = recorded
    try:
        yield received
    finally:
        build_job.eval_device, EvaluationPlan.scores = choose, scores
