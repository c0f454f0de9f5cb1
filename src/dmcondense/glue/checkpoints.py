"""Checkpoints that survive a kill: written atomically, the previous good one kept, and on resume
an unreadable newest one is skipped for the previous with one line that says so.

A kill while `last.ckpt` is written leaves the old file in place (the new one goes to a temporary
file renamed over it), and the one before it stays as `last.previous.ckpt`. A checkpoint cut
short some other way (a full disk, a copy interrupted) is caught by reading its zip directory.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from dmcondense.atomic import atomic_write
from dmcondense.errors import ConfigError


def last_checkpoint(run_dir: Path, every: int) -> ModelCheckpoint:
    """The callback that keeps `run_dir`/checkpoints/last.ckpt, rewritten every `every` steps."""
    return ModelCheckpoint(
        dirpath=run_dir / "checkpoints", save_last=True, every_n_train_steps=every, save_top_k=0
    )


def previous_of(path: Path) -> Path:
    """Where the checkpoint that `path` replaced is kept: last.ckpt -> last.previous.ckpt."""
    return path.with_name(f"{path.stem}.previous{path.suffix}")


class KeepPreviousCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file, move the current checkpoint to `previous_of`, then
    rename the new one into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("KeepPreviousCheckpointIO takes no storage_options")
        path = Path(path)

        def write(tmp: str) -> None:
            torch.save(checkpoint, tmp)
            if path.is_file():
                os.replace(path, previous_of(path))

        atomic_write(path, write)


def usable(path: Path) -> bool:
    """True when `path` is a complete checkpoint: a zip whose every member reads back intact."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def resume_checkpoint(resume: str | None, run_dir: Path) -> str | None:
    """The checkpoint to resume from.

    `last`: this run folder's last.ckpt, or the previous one when last.ckpt is unreadable; an
    error when neither is usable. `auto`: the same, but a fresh start when there is none (for
    pre-emptible jobs requeued into the same folder). Anything else: a path, or None.
    """
    if resume not in ("last", "auto"):
        return resume
    last = run_dir / "checkpoints" / "last.ckpt"
    previous = previous_of(last)
    if not last.is_file() and not previous.is_file():
        if resume == "auto":
            return None
        raise FileNotFoundError(
            f"resume=last but there is no {last}; use resume=auto to start fresh when there is none"
        )
    if usable(last):
        return str(last)
    problem = f"{last} is unreadable (cut short?)" if last.is_file() else f"{last} is missing"
    if usable(previous):
        print(f"warning: {problem}; resuming from the previous checkpoint {previous}",
              file=sys.stderr, flush=True)  # fmt: skip
        return str(previous)
    if resume == "auto":
        print(f"warning: {problem} and there is no usable earlier one; starting afresh",
              file=sys.stderr, flush=True)  # fmt: skip
        return None
    raise ConfigError(
        f"{problem} and there is no usable earlier checkpoint; start afresh with resume=null "
        f"(or resume=auto), or pass another checkpoint as resume=<path>"
    )
