"""Callbacks of a condensation run: write the synthetic set and its picture, show it evolving
in the logger, and stop on a non-finite loss without touching the last good synthetic.pt."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from dmcondense.errors import NonFiniteLossError
from dmcondense.io import image_grid, save_grid, save_synthetic


class SyntheticWriter(L.Callback):
    """Writes synthetic.pt and synthetic.png into `run_dir` every `every` steps and at the end."""

    def __init__(self, run_dir: str | Path, metadata: dict, every: int = 500) -> None:
        self.run_dir, self.metadata, self.every = Path(run_dir), metadata, every

    def write(self, module: L.LightningModule, step: int) -> None:
        images = module.synthetic.detach().cpu()
        if not torch.isfinite(images).all():
            raise NonFiniteLossError(
                f"synthetic images became non-finite by step {step}; the last good set is "
                f"{self.run_dir / 'synthetic.pt'} (try a smaller lr_img)"
            )
        save_synthetic(
            self.run_dir / "synthetic.pt",
            {
                "images": images,
                "labels": module.labels.cpu(),
                "ipc": module.ipc,
                "step": step,
                **self.metadata,
            },
        )
        save_grid(self.run_dir / "synthetic.png", module.denormalised(), module.ipc)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and trainer.is_global_zero:
            self.write(module, step)

    def on_train_end(self, trainer, module) -> None:
        if trainer.is_global_zero:
            self.write(module, trainer.global_step)


class FiniteLossGuard(L.Callback):
    """Checks the loss every `every` steps (a host sync, so not every step on a GPU)."""

    def __init__(self, every: int = 10) -> None:
        self.every = every

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every and trainer.global_step != trainer.max_steps:
            return
        loss = float(outputs["loss"])
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"the loss became {loss} at step {batch['step']}; the last good synthetic set was "
                f"kept (try a smaller lr_img)"
            )


class ImageLogger(L.Callback):
    """Sends the synthetic image grid to the active logger every `every` steps."""

    def __init__(self, every: int = 500) -> None:
        self.every = every

    def send(self, trainer: L.Trainer, module) -> None:
        grid = image_grid(module.denormalised(), module.ipc)
        step = trainer.global_step
        for logger in trainer.loggers:
            experiment = logger.experiment
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image("synthetic", grid, step)
            elif hasattr(logger, "log_image"):  # W&B
                logger.log_image("synthetic", [grid], step=step)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0 and trainer.is_global_zero:
            self.send(trainer, module)

    def on_train_end(self, trainer, module) -> None:
        if trainer.is_global_zero:
            self.send(trainer, module)
