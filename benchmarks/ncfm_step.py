"""Seconds an iteration of method=ncfm against method=dm on the built-in MNIST sample, side by
side in one process (alternating runs, median of the per-iteration times after the first).

Both as `python -m dmcondense.train method=<m> ipc=10` composes them (mnist_sample: batch_real
64, ConvNet width 32; NCFM: factor 2, 4,096 frequencies, a step a class and a calibration step
a class). NCFM needs a pool of the same data set and model: made first if missing (the first
--pool-size networks x --pool-epochs, under --pool-root). One thread; host memory reused as a
job reuses it. Figures: benchmarks/README.md.

    python benchmarks/ncfm_step.py [--rounds 2] [--pool-root /tmp/pools]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from dmcondense import CONF_DIR
from dmcondense.data.spec import resolve_spec
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.jobs import build
from dmcondense.jobs.common import initial_images, load_data
from dmcondense.jobs.pretrain import make_pool


class Clock(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter() - self.started)


def seconds_an_iteration(method: str, steps: int, pool: list[str]) -> float:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        overrides = [f"method={method}", "ipc=10", f"iterations={steps}", *pool]
        cfg = compose("config", overrides=overrides)
    dm = load_data(cfg)
    spec = resolve_spec(cfg.dataset, dm.train_set)
    if build.uses_pool(cfg):
        make_pool(cfg, dm, spec)  # nothing to do when the pool is there
    init, _ = initial_images(cfg, dm, spec, cfg.init, cfg.synthetic.factor)
    module = build.method(cfg, spec, init)
    clock = Clock()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[clock])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    return statistics.median(clock.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dm-steps", type=int, default=21)
    parser.add_argument("--ncfm-steps", type=int, default=6)
    parser.add_argument("--pool-root", default="/tmp/ncfm_pools")
    parser.add_argument("--pool-size", type=int, default=2)
    parser.add_argument("--pool-epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reuse_freed_memory()
    pool = [f"pool.root={args.pool_root}", f"pool.size={args.pool_size}",
            f"pool.epochs={args.pool_epochs}"]  # fmt: skip
    times: dict[str, list[float]] = {"dm": [], "ncfm": []}
    for _ in range(args.rounds):
        times["dm"].append(seconds_an_iteration("dm", args.dm_steps, pool))
        times["ncfm"].append(seconds_an_iteration("ncfm", args.ncfm_steps, pool))
    dm, ncfm = statistics.median(times["dm"]), statistics.median(times["ncfm"])
    print(f"torch {torch.__version__}, 1 thread; each round: {times}")
    print(f"dm {dm:.3f} s/iteration, ncfm {ncfm:.3f} s/iteration, ratio {ncfm / dm:.1f}")


if __name__ == "__main__":
    main()
