"""Seconds per DC iteration, per-class gradients batched (torch.func vmap over grad) against the
per-class loop of the reference, side by side (CIFAR-10 shapes by default).

    python benchmarks/dc_step.py                    # IPC 10: 10 rounds, 50 inner epochs
    python benchmarks/dc_step.py --ipc 1 --repeats 5

An iteration (`GradientMatching.training_step`) is outer_loop matching rounds (every class's
real and synthetic gradients, the distance, the image update) and (outer_loop - 1) * inner_loop
network epochs on the synthetic set. Only the rounds differ between the two paths, so each path
runs in its own process (its own peak memory): it times `--repeats` rounds and inner epochs
(medians), and the iteration is put together from them. The processes alternate, `--alternations`
times each, and the medians of their medians are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from dmcondense.augment import NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.methods.gradient_matching import DatasetCondensation
from dmcondense.models.registry import build_model

CIFAR = Normaliser([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
PATHS = ("vmap", "loop")


def measure(args: argparse.Namespace) -> dict:
    """In this process: median seconds of one matching round and of one inner epoch."""
    reuse_freed_memory()  # as every dmcondense job does
    g = torch.Generator().manual_seed(0)
    shape = (3, args.side, args.side)
    real = torch.randint(0, 256, (args.classes, args.batch_real, *shape), generator=g,
                         dtype=torch.uint8)  # fmt: skip
    init = torch.randn(args.classes * args.ipc, *shape, generator=g)
    net = build_model("convnet", 3, args.classes, args.side, width=args.width)
    m = DatasetCondensation(net, NoAugment(), init, args.classes, CIFAR, lr_img=0.1,
                            per_class=args.path)  # fmt: skip
    optimizer = torch.optim.SGD([m.synthetic], lr=m.lr_img, momentum=m.momentum)
    classes, net = torch.arange(args.classes), m.draw_network(0)
    rounds, epochs = [], []
    for r in range(args.repeats + 1):  # the first of each is a warm-up
        t = time.perf_counter()
        loss = m.round_loss(net, 0, r, classes, real)
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=[m.synthetic])
        optimizer.step()
        rounds.append(time.perf_counter() - t)
        m.inner_loop, inner_loop = 1, m.inner_loop
        t = time.perf_counter()
        m.train_network(net, 0, r)
        epochs.append(time.perf_counter() - t)
        m.inner_loop = inner_loop
    return {
        "round": statistics.median(rounds[1:]),
        "epoch": statistics.median(epochs[1:]),
        "outer_loop": m.outer_loop,
        "inner_loop": m.inner_loop,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--side", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds a process")
    parser.add_argument("--alternations", type=int, default=2, help="processes a path")
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)  # a child's path
    args = parser.parse_args()
    if args.path:
        print(json.dumps(measure(args)))
        return
    print(f"DC, {args.classes} classes x IPC {args.ipc}, batch_real {args.batch_real}, ConvNet "
          f"width {args.width}, {args.side}x{args.side}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)  # fmt: skip
    found = {path: [] for path in PATHS}
    peaks = {path: [] for path in PATHS}
    for alternation in range(args.alternations):
        for path in PATHS if alternation % 2 == 0 else PATHS[::-1]:
            child = [a for a in sys.argv[1:]] + ["--path", path]
            process = subprocess.Popen([sys.executable, str(Path(__file__)), *child],
                                       stdout=subprocess.PIPE, text=True)  # fmt: skip
            output = process.stdout.read()
            _, status, usage = os.wait4(process.pid, 0)
            if os.waitstatus_to_exitcode(status):
                sys.exit(f"error: the {path} process failed")
            found[path].append(json.loads(output.strip().splitlines()[-1]))
            peaks[path].append(usage.ru_maxrss / 1024)
            r = found[path][-1]
            print(f"  {path:<4} round {r['round']:.3f} s, inner epoch {r['epoch']:.3f} s, "
                  f"peak {peaks[path][-1]:.0f} MiB", flush=True)  # fmt: skip
    summary = {}
    for path in PATHS:
        round_s = statistics.median(r["round"] for r in found[path])
        epoch_s = statistics.median(r["epoch"] for r in found[path])
        outer, inner = found[path][0]["outer_loop"], found[path][0]["inner_loop"]
        summary[path] = (round_s, outer * round_s + (outer - 1) * inner * epoch_s, max(peaks[path]))
        print(f"{path:<4}: {round_s:.3f} s a matching round; {summary[path][1]:.2f} s an iteration "
              f"({outer} rounds, {(outer - 1) * inner} inner epochs); peak {summary[path][2]:.0f} "
              "MiB")  # fmt: skip
    print(f"vmap/loop: matching round {summary['vmap'][0] / summary['loop'][0]:.2f}, iteration "
          f"{summary['vmap'][1] / summary['loop'][1]:.2f}, peak memory "
          f"{summary['vmap'][2] / summary['loop'][2]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
