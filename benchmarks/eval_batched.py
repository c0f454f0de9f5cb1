"""Batched (torch.func vmap) against sequential training of the evaluation networks, side by
side in one process: 10 ConvNets (width 128, depth 3) on a CIFAR-10-shaped IPC 10 set (100
images, 3x32x32), DSA on, the protocol's optimiser, `--epochs` epochs each.

    python benchmarks/eval_batched.py [--epochs 5] [--models 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from dmcondense.evaluation.protocol import Protocol, train_networks
from dmcondense.rng import generator

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]


def timed(batched: bool, args, data) -> tuple[float, torch.Tensor]:
    images, labels, test_images, test_labels = data
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    acc = train_networks(
        "convnet", images, labels, test_images, test_labels, num_models=args.models,
        protocol=Protocol(epochs=args.epochs), seed=0, mean=CIFAR_MEAN, std=CIFAR_STD,
        batched=batched, num_classes=10, device=args.device,
    )  # fmt: skip
    if args.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    g = generator(0, "bench-eval")
    data = (
        torch.randn(100, 3, 32, 32, generator=g),
        torch.arange(10).repeat_interleave(10),
        torch.randint(0, 256, (500, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (500,), generator=g),
    )
    timed(False, argparse.Namespace(**{**vars(args), "epochs": 1, "models": 1}), data)  # warm-up
    sequential, acc_s = timed(False, args, data)
    batched, acc_b = timed(True, args, data)
    print(
        f"{args.models} ConvNets x {args.epochs} epochs on 100 CIFAR-shaped images, {args.device}"
    )
    print(
        f"sequential {sequential:.1f} s   batched {batched:.1f} s   "
        f"batched/sequential {batched / sequential:.2f}"
    )
    print(
        f"largest accuracy difference between the paths: {float((acc_b - acc_s).abs().max()):.4f}"
    )


if __name__ == "__main__":
    main()
