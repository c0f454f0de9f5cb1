"""Atomic file writes: readers (and a crashed writer's next run) never see half a file.

Kept apart from `dmcondense.io` so the data layer can use it without importing torchvision.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call write(tmp_path) then rename onto `path`: a crash never leaves a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are for sharing
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_json(path: str | Path, value: Any, **dumps: Any) -> Path:
    """`value` as JSON (json.dumps with `dumps`, then a newline), written atomically."""
    text = json.dumps(value, **dumps) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


@contextlib.contextmanager
def exclusive(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the directory `folder` (made if missing; no lock file is left
    in it): the processes of one job (every rank of a SLURM job runs it, and so does each rank
    Lightning's launcher starts) take turns at what must happen once, a download or a pool's
    training; a later one waits, then finds it done. The lock goes with the process, so a
    crashed holder never blocks the others."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
