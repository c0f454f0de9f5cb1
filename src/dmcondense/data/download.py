"""Downloads that fail cleanly: one line that says what failed, where the files are expected and
how to go on, and no half-written file left for a later run to take for the real one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from dmcondense.atomic import exclusive
from dmcondense.errors import ConfigError


class DownloadError(ConfigError):
    """A data set could not be fetched; printed as one line by the entry points."""


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


@contextlib.contextmanager
def downloading(name: str, url: str, folder: str | Path, expected: str) -> Iterator[None]:
    """Run a library's download of `name` from `url` into `folder`. If it fails, the files it
    created there (a partial or corrupt archive, half-extracted members) are removed and a
    DownloadError names the URL, the reason, `expected` (what to put where) and the way out."""
    folder = Path(folder).expanduser().absolute()
    # One process downloads; the others of the job (SLURM ranks) wait, then find the files.
    with exclusive(folder):
        with _cleaned_up(name, url, folder, expected):
            yield


@contextlib.contextmanager
def _cleaned_up(name: str, url: str, folder: Path, expected: str) -> Iterator[None]:
    before = _files(folder)
    try:
        yield
    except Exception as error:  # network, checksum or archive errors: all mean "no data"
        for path in _files(folder) - before:
            path.unlink(missing_ok=True)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
        raise DownloadError(
            f"downloading {name} from {url} failed ({reason}); it is expected as {expected} in "
            f"{folder}: download it on a machine with internet access and copy it there, or set "
            f"data_dir= to the folder that holds it"
        ) from error
