"""Batched against sequential training of the evaluation networks, side by side in one process:
10 ConvNets (width 128, depth 3) on a CIFAR-10-shaped IPC 10 set (100 images, 3x32x32), DSA
on, the protocol's optimiser, `--epochs` epochs each, then each network tested on 500 images.

The two paths alternate for `--repeats` rounds (the order flips each round, so drift of this
VM's speed hits both) and the medians are compared. `--allocator both` also measures glibc's
default allocator against `dmcondense.hostmem.reuse_freed_memory` (the framework's default).

Sequential is `eval.backend=loop`. Batched is `eval.backend=ensemble` (one grouped-convolution
ConvNet) on the CPU and `eval.backend=vmap` on a GPU; `--batched-backend` picks either.
Figures: benchmarks/README.md.

    python benchmarks/eval_batched.py [--epochs 5] [--repeats 3] [--models 10]
                                      [--allocator reuse|default|both] [--device cpu]
                                      [--batched-backend ensemble|vmap]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.protocol import Protocol
from dmcondense.evaluation.score import train_networks
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.rng import generator

CIFAR = Normaliser([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])


def timed(backend: str, epochs: int, models: int, device: str, data) -> tuple[float, torch.Tensor]:
    images, labels, test_images, test_labels = data
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    acc = train_networks(
        "convnet", images, labels, test_images, test_labels, num_models=models,
        protocol=Protocol(epochs=epochs), seed=0, normaliser=CIFAR, backend=backend,
        num_classes=10, device=device,
    )  # fmt: skip
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, acc


def side_by_side(args, data) -> dict[str, float]:
    """Median seconds of each path over alternating rounds; prints every round."""
    backends = {"sequential": "loop", "batched": args.batched_backend}
    seconds: dict[str, list[float]] = {path: [] for path in backends}
    accuracies = {}
    for backend in backends.values():  # warm-up: first-call costs, the heap grows to its peak
        timed(backend, 1, args.models, args.device, data)
    for round_ in range(args.repeats):
        order = ("sequential", "batched") if round_ % 2 == 0 else ("batched", "sequential")
        for path in order:
            wall, accuracies[path] = timed(
                backends[path], args.epochs, args.models, args.device, data
            )
            seconds[path].append(wall)
        print(
            f"  round {round_ + 1}: sequential {seconds['sequential'][-1]:.1f} s, "
            f"batched {seconds['batched'][-1]:.1f} s",
            flush=True,
        )
    gap = float((accuracies["batched"] - accuracies["sequential"]).abs().max())
    print(f"  largest accuracy difference between the paths: {gap:.4f}")
    return {path: statistics.median(times) for path, times in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--allocator", choices=["reuse", "default", "both"], default="reuse")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--batched-backend",
        choices=["ensemble", "vmap"],
        help="the batched path's eval.backend (default: ensemble on the CPU, vmap on a GPU)",
    )
    args = parser.parse_args()
    if args.batched_backend is None:
        args.batched_backend = "ensemble" if torch.device(args.device).type == "cpu" else "vmap"
    g = generator(0, "bench-eval")
    data = (
        torch.randn(100, 3, 32, 32, generator=g),
        torch.arange(10).repeat_interleave(10),
        torch.randint(0, 256, (500, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (500,), generator=g),
    )
    allocators = ["default", "reuse"] if args.allocator == "both" else [args.allocator]
    medians = {}
    for allocator in allocators:
        applied = reuse_freed_memory(allocator == "reuse")
        print(
            f"{args.models} ConvNets x {args.epochs} epochs, 100 CIFAR-shaped images, "
            f"{args.device}, sequential = loop, batched = {args.batched_backend}, "
            f"allocator {allocator} (mallopt applied: {applied}), median of {args.repeats}:",
            flush=True,
        )
        medians[allocator] = side_by_side(args, data)
        m = medians[allocator]
        print(
            f"  sequential {m['sequential']:.1f} s   batched {m['batched']:.1f} s   "
            f"batched/sequential {m['batched'] / m['sequential']:.2f}"
        )
    if len(medians) == 2:
        for path in ("sequential", "batched"):
            ratio = medians["reuse"][path] / medians["default"][path]
            print(f"reuse/default allocator, {path}: {ratio:.2f}")


if __name__ == "__main__":
    main()
