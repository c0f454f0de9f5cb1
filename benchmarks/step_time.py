"""Time of one full condensation step against its compute floor, side by side in one process.

Step: a Lightning fit step (sampling, gather, normalise, DSA, network draw, loss, backward,
SGD update, Lightning's loop). Floor: the bare forward pass of the same real batches plus the
forward and backward pass of the synthetic batch through the same network, nothing else.
CIFAR-10 shapes (10 classes, 3x32x32), IPC 10, batch_real 256, ConvNet (width 128, depth 3) by
default. Also compares precision=bf16-mixed with fp32 for the full step. Host memory is reused
as a training job reuses it (`dmcondense.hostmem`). Figures: benchmarks/README.md.

    python benchmarks/step_time.py [--steps 4] [--batch-real 256] [--ipc 10]
        [--precisions 32-true,bf16-mixed]
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from random_images import RandomImagesDataModule  # beside this script

from dmcondense.augment import DSA
from dmcondense.data.normalise import Normaliser
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.methods.dm import DistributionMatching
from dmcondense.models.registry import build_model
from dmcondense.rng import generator

CIFAR = Normaliser([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter())


def condense_step_seconds(args, precision: str) -> float:
    classes = 10
    dm = RandomImagesDataModule(
        per_class=max(args.batch_real, 300),
        num_classes=classes,
        batch_real=args.batch_real,
        iterations=args.steps + 1,
        seed=0,
    )
    dm.setup()
    init = torch.randn(classes * args.ipc, 3, 32, 32, generator=generator(0, "bench-init"))
    net = build_model("convnet", 3, classes, 32)
    module = DistributionMatching(net, DSA(), init, classes, CIFAR)
    clock = StepClock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=args.steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, datamodule=dm)
    # the first step pays one-off costs (allocator, oneDNN primitives): time the rest
    return (clock.times[-1] - clock.times[0]) / (len(clock.times) - 1)


def floor_seconds(args) -> float:
    classes = 10
    net = build_model("convnet", 3, classes, 32).requires_grad_(False)
    g = generator(0, "bench-floor")
    real = torch.randn(classes * args.batch_real, 3, 32, 32, generator=g)
    synthetic = torch.randn(classes * args.ipc, 3, 32, 32, generator=g, requires_grad=True)

    def once() -> None:
        with torch.no_grad():
            net.embed(real)
        net.embed(synthetic).sum().backward()

    once()
    start = time.perf_counter()
    for _ in range(args.steps):
        once()
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--precisions", default="32-true,bf16-mixed")
    args = parser.parse_args()
    reuse_freed_memory()  # as every dmcondense job does
    print(
        f"CIFAR-10 shapes, IPC {args.ipc}, batch_real {args.batch_real}, ConvNet 128x3, "
        f"{torch.get_num_threads()} threads, {args.steps} timed steps each"
    )
    floor = floor_seconds(args)
    step = {p: condense_step_seconds(args, p) for p in args.precisions.split(",")}
    floor_again = floor_seconds(args)  # bracket the steps: drift of the machine shows here
    print(f"floor (real fwd + synthetic fwd/bwd): {floor:.3f} s before, {floor_again:.3f} s after")
    floor = min(floor, floor_again)
    for p, s in step.items():
        print(f"full step, precision={p}: {s:.3f} s   ratio to floor {s / floor:.3f}")
    if "32-true" in step and "bf16-mixed" in step:
        print(f"bf16-mixed / fp32 step time: {step['bf16-mixed'] / step['32-true']:.3f}")


if __name__ == "__main__":
    main()
