"""`python -m dmcondense.train` with a clock on the fit: the same job, the same arguments, and
one more file in the run folder, `timing.json`:

- `iteration_seconds`: the time between consecutive ends of a condensation iteration (the first
  one, which follows the fit's start-up, has no predecessor and is not counted);
- `iteration_cpu_seconds`: the same intervals in this process's CPU time (time.process_time: on
  a shared machine the wall clock also measures the neighbours; at one thread this is the work);
- `rss_before_fit_mib`, `rss_after_fit_mib`: the process's peak resident set size when the fit
  starts (data, initial set, method built) and when it ends (VmHWM, `peak_resident_mib`: the
  job's own peak, where getrusage's would start at the peak of the process that started it).

    python benchmarks/clocked_train.py method=dm ipc=1 iterations=50 hydra.run.dir=...

benchmarks/compare_methods.py runs every method through it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L

from dmcondense import train
from dmcondense.hostmem import peak_resident_mib
from dmcondense.jobs import build


class Clock(L.Callback):
    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.ends, self.cpu_ends, self.before = run_dir, [], [], None

    def on_fit_start(self, trainer, module) -> None:
        self.before = peak_resident_mib()

    def on_train_batch_end(self, *args) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())

    def on_train_end(self, trainer, module) -> None:
        record = {
            "iteration_seconds": [
                b - a for a, b in zip(self.ends[:-1], self.ends[1:], strict=True)
            ],
            "iteration_cpu_seconds": [
                b - a for a, b in zip(self.cpu_ends[:-1], self.cpu_ends[1:], strict=True)
            ],
            "rss_before_fit_mib": self.before,
            "rss_after_fit_mib": peak_resident_mib(),
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
