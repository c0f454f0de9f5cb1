"""Progress that reads well where it goes: bars on a terminal, a plain line every few percent in
a log file (CI, SLURM, `> run.log`), where a bar's carriage-return frames pile up by the
thousand."""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

LINES_PER_JOB = 20  # plain lines over a condensation run, one each 5%
LINES_PER_BAR = 10  # plain lines over an evaluation bar, one each 10%


def on_terminal() -> bool:
    return sys.stdout.isatty()


class Lines:
    """A tqdm-shaped counter (`update`, `close`) that prints `<desc>: n/total <unit> (p%)` each
    time it passes another tenth of `total`."""

    def __init__(self, total: int, desc: str, unit: str = "epochs") -> None:
        self.total, self.desc, self.unit = max(total, 1), desc, unit
        self.n, self.printed = 0, 0

    def update(self, n: int = 1) -> None:
        self.n += n
        due = self.n * LINES_PER_BAR // self.total
        if due > self.printed:
            self.printed = due
            percent = 100 * self.n // self.total
            print(f"{self.desc}: {self.n}/{self.total} {self.unit} ({percent}%)", flush=True)

    def close(self) -> None:
        pass


def epoch_progress(total: int, desc: str | None):
    """A tqdm bar on a terminal, `Lines` elsewhere, None when `desc` is None (no progress)."""
    if desc is None:
        return None
    if not on_terminal():
        return Lines(total, desc)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch")


class StepLines(L.Callback):
    """The condensation's progress as a plain line each 5% of the steps: step, share, loss."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step, total = trainer.global_step, max(trainer.max_steps, 1)
        if not trainer.is_global_zero or step % max(1, total // LINES_PER_JOB) and step != total:
            return
        loss = float(outputs["loss"]) if outputs and "loss" in outputs else float("nan")
        print(f"step {step}/{total} ({100 * step // total}%) train/loss {loss:.4g}", flush=True)


class LossBar(TQDMProgressBar):
    """Lightning's bar, showing train/loss read only when the bar refreshes (every
    `refresh_rate` steps): a logged value on the bar itself is read into a number after every
    step, a host-device sync on a GPU."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = f"{float(loss):.4g}"
        return metrics
