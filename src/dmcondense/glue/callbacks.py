"""Callbacks of a condensation run: write the synthetic set and its picture, show it evolving
in the logger, and stop on a non-finite loss without touching the last good synthetic.pt."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from dmcondense.errors import NonFiniteLossError
from dmcondense.glue.tracking import log_grid, takes_images
from dmcondense.io import image_grid, save_grid, save_synthetic
from dmcondense.methods.base import CondensationMethod


def picture_columns(module: CondensationMethod) -> int:
    """One row per class: as many columns as decoded training images per class."""
    return module.synthetic_images.decoded_per_class


class SyntheticWriter(L.Callback):
    """Writes synthetic.pt and synthetic.png into `run_dir` every `every` steps and at the end."""

    def __init__(self, run_dir: str | Path, metadata: dict, every: int = 500) -> None:
        self.run_dir, self.metadata, self.every = Path(run_dir), metadata, every
        self.last_written_step: int | None = None  # the step of the synthetic.pt on disk

    def kept_set(self) -> str:
        """Where the last good set is, for error messages."""
        if self.last_written_step is None:
            return f"no synthetic set was saved before it (save_every={self.every})"
        return (
            f"the last good synthetic set (step {self.last_written_step}) is kept in "
            f"{self.run_dir / 'synthetic.pt'}"
        )

    def write(self, module: CondensationMethod, step: int) -> None:
        images = module.stored_normalised().detach().cpu()
        save_synthetic(
            self.run_dir / "synthetic.pt",
            {
                "images": images,
                "labels": module.labels.cpu(),
                "method": module.name,
                "ipc": module.ipc,
                "factor": module.synthetic_images.factor,
                "step": step,
                **self.metadata,
                **module.record_extra(),
            },
        )
        save_grid(self.run_dir / "synthetic.png", module.denormalised(), picture_columns(module))

    def save(self, trainer: L.Trainer, module: CondensationMethod, step: int) -> None:
        """Every rank checks the pixels and all stop together on a non-finite set (an error on
        rank zero alone would leave the others waiting in their next collective); rank zero
        writes."""
        bad = (~torch.isfinite(module.stored_normalised().detach())).any().to(torch.int32)
        if int(trainer.strategy.reduce(bad, reduce_op="max")):
            raise NonFiniteLossError(
                f"the synthetic images became non-finite by step {step}, so the run stopped; "
                f"{self.kept_set()}; try a smaller lr_img (now {module.lr_img})"
            )
        if trainer.is_global_zero:
            self.write(module, step)
        self.last_written_step = step  # on every rank, so every rank decides alike at the end

    def writes_at(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.writes_at(step):
            self.save(trainer, module, step)

    def on_train_end(self, trainer, module) -> None:
        if self.last_written_step != trainer.global_step:
            self.save(trainer, module, trainer.global_step)


class FiniteLossGuard(L.Callback):
    """Stops the run at a non-finite loss and says at which step it first appeared.

    Every step folds "is this loss finite" into a tensor on the device (no host sync); the host
    reads it every `every` steps, before each step the `writer` saves at (so a non-finite set is
    never written over the last good one), and at the last step. Ranks agree through a min-reduce.
    """

    def __init__(self, every: int = 10, writer: SyntheticWriter | None = None) -> None:
        self.every, self.writer = every, writer
        self._first_bad: torch.Tensor | None = None  # step of the first non-finite loss, or -1
        self._bad_value: torch.Tensor | None = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"].detach()
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self._bad_value = torch.zeros((), dtype=loss.dtype, device=loss.device)
        new_bad = ~torch.isfinite(loss) & (self._first_bad < 0)
        self._first_bad = torch.where(new_bad, int(batch["step"]), self._first_bad)
        self._bad_value = torch.where(new_bad, loss, self._bad_value)

        step = trainer.global_step
        due = step % self.every == 0 or step >= (trainer.max_steps or 0)
        if self.writer is not None:
            due |= self.writer.writes_at(step)
        if not due:
            return
        # Ranks hold different classes: take the earliest bad step of any rank (unset = huge).
        unset = torch.iinfo(torch.int64).max
        first = torch.where(self._first_bad < 0, unset, self._first_bad)
        first = int(trainer.strategy.reduce(first.clone(), reduce_op="min"))
        if first == unset:
            return
        value = float(self._bad_value) if int(self._first_bad) == first else float("nan")
        kept = self.writer.kept_set() if self.writer is not None else "synthetic.pt was kept"
        raise NonFiniteLossError(
            f"the loss became {value} at step {first}, so the run stopped; {kept}; "
            f"try a smaller lr_img (now {module.lr_img})"
        )


class ImageLogger(L.Callback):
    """Sends the synthetic image grid to the active logger when training starts (the initial
    set), every `every` steps, and at the end."""

    def __init__(self, every: int = 500) -> None:
        self.every = every
        self.last_sent_step: int | None = None

    def send(self, trainer: L.Trainer, module) -> None:
        if not takes_images(trainer.loggers):
            return  # nothing would show the grid: do not render it
        log_grid(
            trainer.loggers,
            image_grid(module.denormalised(), picture_columns(module)),
            trainer.global_step,
        )
        self.last_sent_step = trainer.global_step

    def on_train_start(self, trainer, module) -> None:
        if trainer.is_global_zero:
            self.send(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0 and trainer.is_global_zero:
            self.send(trainer, module)

    def on_train_end(self, trainer, module) -> None:
        if trainer.is_global_zero and self.last_sent_step != trainer.global_step:
            self.send(trainer, module)
