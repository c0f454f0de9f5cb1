"""`python -m dmcondense.train` with a clock on the fit: the same job, the same arguments, and
one more file in the run folder, `timing.json`:

- `iteration_seconds`: the time between consecutive ends of a condensation iteration (the first
  one, which follows the fit's start-up, has no predecessor and is not counted);
- `rss_before_fit_mib`, `rss_after_fit_mib`: the process's peak resident set size when the fit
  starts (data, initial set, method built) and when it ends (getrusage ru_maxrss, as
  benchmarks/memory.py reads it; the job keeps freed host memory, so this is the peak so far).

    python benchmarks/clocked_train.py method=dm ipc=1 iterations=50 hydra.run.dir=...

benchmarks/compare_methods.py runs every method through it.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import lightning as L

from dmcondense import train
from dmcondense.jobs import build


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Clock(L.Callback):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.ends, self.before = run_dir, [], None

    def on_fit_start(self, trainer, module) -> None:
        self.before = peak_mib()

    def on_train_batch_end(self, *args) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self, trainer, module) -> None:
        record = {
            "iteration_seconds": [
                b - a for a, b in zip(self.ends[:-1], self.ends[1:], strict=True)
            ],
            "rss_before_fit_mib": self.before,
            "rss_after_fit_mib": peak_mib(),
        }
        (self.run_dir / "timing.json").write_text(json.dumps(record))


def main() -> None:
    make_trainer = build.trainer

    def clocked(cfg, run_dir, callbacks, plugins=None):
        return make_trainer(cfg, run_dir, [*callbacks, Clock(Path(run_dir))], plugins)

    build.trainer = clocked  # the train job builds its Trainer through build.trainer
    train.main()


if __name__ == "__main__":
    main()
