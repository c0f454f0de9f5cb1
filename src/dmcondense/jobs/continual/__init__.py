"""The continual job: class-incremental learning with condensed memories (loop.py), its run
folder (store.py) and its figures (report.py)."""

from dmcondense.jobs.continual.loop import run

__all__ = ["run"]
