"""The Python API: the command line's jobs, called from Python (a notebook, a script).

    run = dmcondense.condense(dataset="mnist_sample", method="ncfm", ipc=10)
    scored = dmcondense.evaluate(run, overrides=["eval.models=[convnet,mlp]"])
    net = dmcondense.train_on(run, model="convnet", epochs=300)

The same underneath as `python -m dmcondense.train ...`: Hydra composes the same `conf/` with the
same defaults (its compose API; there is no second config), the same command-line and config
checks run, and the same job writes the same run folder. A bad input raises the one-line error
the command line prints (`ConfigError`, `FileNotFoundError`, ...) instead of printing it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmcondense.errors import ConfigError


@dataclass
class Run:
    """What a job left: its run folder and its `results.json`; `synthetic` loads the set."""

    folder: Path
    results: dict = field(repr=False)

    @property
    def synthetic(self) -> tuple[Any, dict]:
        """The condensed set as `load_synthetic` gives it: (TensorDataset, metadata)."""
        from dmcondense.io import load_synthetic

        return load_synthetic(self.folder)


def condense(
    dataset: str = "mnist_sample",
    method: str = "dm",
    ipc: int = 10,
    overrides: Sequence[str] = (),
    folder: str | Path | None = None,
) -> Run:
    """Condense `dataset` with `method` to `ipc` images a class, then score it: what
    `python -m dmcondense.train dataset=... method=... ipc=... <overrides>` does.

    Args:
        dataset: an option of the `dataset` config group.
        method: an option of the `method` group.
        ipc: synthetic images a class.
        overrides: further command-line words (`"iterations=100"`, `"trainer=gpu"`, ...);
            a later word wins over an earlier one, as on the command line.
        folder: the run folder (`hydra.run.dir`); None: the command line's default.

    Returns:
        The run: its folder, its `results.json` and (`Run.synthetic`) the set.
    """
    words = [f"dataset={dataset}", f"method={method}", f"ipc={ipc}", *overrides]
    return _run_job("config", "train", words, folder)


def evaluate(
    run_or_path: Run | str | Path | None = None,
    overrides: Sequence[str] = (),
    folder: str | Path | None = None,
) -> Run:
    """Score a condensed set (a `Run`, a run folder or a synthetic.pt) or, with
    `overrides=["baseline=herding", ...]` and no set, a baseline: what
    `python -m dmcondense.evaluate condensed=... <overrides>` does."""
    words = list(overrides)
    if run_or_path is not None:
        path = run_or_path.folder if isinstance(run_or_path, Run) else Path(run_or_path)
        words.insert(0, f"condensed={path}")
    return _run_job("evaluate", "evaluate", words, folder)


def train_on(
    condensed: Run | str | Path,
    model: str = "convnet",
    *,
    epochs: int = 300,
    seed: int = 0,
    device: str = "cpu",
    **knobs: Any,
) -> Any:
    """Train a fresh network on a condensed set with the evaluation protocol (DSA, SGD 0.01,
    the rate / 10 at half the epochs) and return it, in eval mode.

    Args:
        condensed: a `Run`, a run folder or a synthetic.pt.
        model: an architecture of `dmcondense.models.registry` (`convnet`, `resnet18`, ...).
        epochs: training epochs.
        seed: the network's initialisation, batch order and augmentation draws.
        device: where to train.
        **knobs: the architecture's constructor knobs (`width=32`, ...).
    """
    from dmcondense.data.normalise import Normaliser
    from dmcondense.evaluation import Protocol, train_network
    from dmcondense.evaluation.protocol import fresh_network
    from dmcondense.io import load_synthetic
    from dmcondense.models.registry import build_model

    path = condensed.folder if isinstance(condensed, Run) else Path(condensed)
    dataset, meta = load_synthetic(path)
    images, labels = (t.to(device) for t in dataset.tensors)
    _, channels, size, _ = images.shape
    template = build_model(model, channels, len(meta["class_names"]), size, **knobs)
    net = fresh_network(template, seed, model, 0).to(device)  # the evaluation's first network
    normaliser = Normaliser(meta["mean"], meta["std"])
    protocol = Protocol(epochs=epochs)
    train_network(net, images, labels, protocol=protocol, seed=seed, index=0,
                  normaliser=normaliser)  # fmt: skip
    return net.eval()


def _run_job(config_name: str, job: str, words: list[str], folder: str | Path | None) -> Run:
    """Compose `conf/<config_name>.yaml` with `words` as the command line does, check it, run
    the job in a Hydra run (its folder, `.hydra/`, log), and read back what it wrote."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.callbacks import Callbacks  # what hydra.main uses (no public name)
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job
    from hydra.types import HydraContext

    from dmcondense import CONF_DIR
    from dmcondense.cli import USER_ERRORS, command_line_problem, discard_refused_run_folder

    words = _expand(words)
    if folder is not None:
        words.append(f"hydra.run.dir={Path(folder).absolute()}")
    problem = command_line_problem(words, config_name=config_name)
    if problem:
        raise ConfigError(problem)
    task = _task(job)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name=job):
            cfg = compose(config_name, overrides=words, return_hydra_config=True)
            context = HydraContext(
                config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(cfg)
            )
            done: dict = {}

            def task_function(task_cfg) -> Path:
                try:
                    done["folder"] = task(task_cfg)
                except USER_ERRORS:
                    discard_refused_run_folder()
                    raise
                return done["folder"]

            returned = run_job(
                task_function=task_function, config=cfg, job_dir_key="hydra.run.dir",
                job_subdir_key=None, hydra_context=context,
            )  # fmt: skip
            if isinstance(returned._return_value, BaseException):
                error = returned._return_value
                raise error.with_traceback(None) from None
    finally:
        GlobalHydra.instance().clear()
    run_folder = Path(done["folder"])
    results_file = run_folder / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    return Run(run_folder, results)


def _expand(words: Sequence[str]) -> list[str]:
    from dmcondense.cli import expand_short_forms

    return expand_short_forms([str(w) for w in words])


def _task(job: str) -> Callable[[Any], Path]:
    """The entry point's body: the config checks (before torch loads), then the job."""

    def train(cfg) -> Path:
        from dmcondense.jobs.checks import check_config

        check_config(cfg)
        from dmcondense.jobs.train import run

        return run(cfg)

    def evaluate(cfg) -> Path:
        from dmcondense.jobs.checks import check_evaluate_config

        check_evaluate_config(cfg)
        from dmcondense.jobs.evaluate import run

        return run(cfg)

    return {"train": train, "evaluate": evaluate}[job]
