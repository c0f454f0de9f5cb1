"""`python -m helpers.short_timeout <overrides>`: the train job, with the default process
group's timeout cut to TIMEOUT once training starts (after the ranks have met, which may take
longer). A DDP test starts its other ranks with it, so that a rank waiting in a collective
longer than that fails, as NCCL's watchdog would end it after Lightning's 30 minutes."""

from __future__ import annotations

from datetime import timedelta

import lightning as L
import torch.distributed as dist

TIMEOUT = timedelta(seconds=2)


class ShortTimeout(L.Callback):
    def on_train_start(self, trainer, module) -> None:
        if dist.is_initialized():
            dist.set_timeout(TIMEOUT)


if __name__ == "__main__":
    import sys

    from helpers.inprocess import extra_callbacks
    from helpers.inprocess import train as run

    with extra_callbacks(ShortTimeout()):
        result = run(*sys.argv[1:])
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.returncode)
