"""What a run sends to its experiment tracker (the Lightning loggers of `logger=`).

    tensorboard  config (hparams), loss curve, image grids, accuracies as scalars and a text table
    wandb        config, loss curve, image grids, accuracies as a wandb.Table, the final
                 synthetic.pt / synthetic.png as a dataset artifact; offline when no API key
    csv          config (hparams.yaml), loss curve and accuracies in metrics.csv

The loss curve comes from the module's own `self.log`; image grids from `ImageLogger`.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlsplit

import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

WANDB_TARGET = "lightning.pytorch.loggers.WandbLogger"
WANDB_OFFLINE_MODES = ("offline", "dryrun")


def wandb_credentials_found() -> bool:
    """Whether wandb would find an API key: its environment variables or a .netrc entry.

    Read cheaply here, without importing wandb, so a run without a key goes offline instead of
    stopping at wandb's login prompt.
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).netloc
    # wandb reads $NETRC when set, else the first of ~/.netrc and ~/_netrc that exists.
    candidates = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if path.is_file():
            try:
                entry = netrc.netrc(path).authenticators(host)
            except (netrc.NetrcParseError, OSError):
                return False
            return bool(entry and entry[2])
    return False


def log_config(loggers: list[Logger], config: dict) -> None:
    """The resolved run config, as each logger's hyperparameters. (TensorBoard, whose default
    hp_metric is off, writes its HPARAMS entry at the end with the final accuracy: log_results.)"""
    for logger in loggers:
        logger.log_hyperparams(config)


def hp_metric(results: dict) -> float:
    """The condensed set's accuracy on the first evaluated architecture (the sweep comparison)."""
    name = next(name for name in results if name != "random")
    return next(iter(results[name].values()))["mean"]


def takes_images(loggers: list[Logger]) -> bool:
    """Whether any of the loggers shows image grids (TensorBoard, W&B; CSV does not)."""
    return any(isinstance(logger, (TensorBoardLogger, WandbLogger)) for logger in loggers)


def log_grid(loggers: list[Logger], grid: torch.Tensor, step: int) -> None:
    """An image grid [C, H, W] in [0, 1] under the key "synthetic"."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image("synthetic", grid, step)
        elif isinstance(logger, WandbLogger):
            logger.log_image("synthetic", [grid], step=step)


ACCURACY_COLUMNS = ["set", "model", "mean", "std", "networks", "accuracies"]


def accuracy_rows(results: dict) -> list[list]:
    """results[set][model] = {mean, std, accuracies} -> one row per (set, model)."""
    return [
        [
            name,
            model,
            r["mean"],
            r["std"],
            len(r["accuracies"]),
            ", ".join(map(str, r["accuracies"])),
        ]
        for name, by_model in results.items()
        for model, r in by_model.items()
    ]


def log_results(loggers: list[Logger], results: dict, step: int, config: dict) -> None:
    """The evaluation accuracies (%): scalars `eval/<set>/<model>` everywhere, plus a table;
    TensorBoard also gets the config with hp_metric = the condensed set's accuracy."""
    scalars = {
        f"eval/{name}/{model}": r["mean"]
        for name, by_model in results.items()
        for model, r in by_model.items()
    }
    rows = accuracy_rows(results)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table("eval/accuracy", columns=ACCURACY_COLUMNS, data=rows, step=step)
            logger.experiment.summary.update(scalars)
        else:
            logger.log_metrics(scalars, step=step)
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(config, {"hp_metric": hp_metric(results)})
            header = "| " + " | ".join(ACCURACY_COLUMNS) + " |\n|" + "---|" * len(ACCURACY_COLUMNS)
            lines = ["| " + " | ".join(map(str, row)) + " |" for row in rows]
            logger.experiment.add_text("eval/accuracy", "\n".join([header, *lines]), step)
        if isinstance(logger, (TensorBoardLogger, CSVLogger)):
            logger.save()


def log_synthetic_artifact(loggers: list[Logger], run_dir: Path, name: str) -> None:
    """synthetic.pt and synthetic.png as one W&B dataset artifact (uploaded by `wandb sync`
    when offline)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            artifact = wandb.Artifact(
                f"{name}-synthetic",
                type="dataset",
                description="dmcondense synthetic set: synthetic.pt (load_synthetic) and its grid",
            )
            for file in ("synthetic.pt", "synthetic.png"):
                if (run_dir / file).is_file():
                    artifact.add_file(str(run_dir / file), name=file)
            logger.experiment.log_artifact(artifact)


def close(loggers: list[Logger], failed: bool = False) -> list[str]:
    """Flush and close every logger; returns lines for the run summary (how to sync W&B).

    A W&B run is finished here rather than at exit, so each job of a sweep gets its own run.
    """
    notes = []
    for logger in loggers:
        logger.finalize("failed" if failed else "success")
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            offline = getattr(run, "offline", None)
            if offline is None:  # older wandb
                offline = run.settings.mode in WANDB_OFFLINE_MODES
            sync_dir = getattr(run, "sync_dir", None) or Path(run.dir).parent
            run.finish(exit_code=1 if failed else 0)
            if offline:
                notes.append(f"W&B run saved offline; upload it with: wandb sync {sync_dir}")
    return notes
