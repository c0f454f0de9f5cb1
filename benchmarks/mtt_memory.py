"""MTT's memory and speed against syn_steps and IPC: the plain unroll (method.memory=unroll, the
authors' way) next to the checkpointed one (method.memory=checkpoint), one MTT iteration each.

    python benchmarks/mtt_memory.py --syn-steps 5 10 20 --ipc 1 10 --width 32 --threads 1
    python benchmarks/mtt_memory.py --device cuda --width 128 --syn-steps 20 50 80 --ipc 1 10 50

Each (IPC, syn_steps, mode) runs in a fresh process, so its peak is its own: on a GPU the peak
of torch.cuda.max_memory_allocated over the iteration; on the CPU the growth of the process's
peak resident memory (ru_maxrss) over the iteration, after one warm-up iteration at the smallest
size. The iteration is the library's (`unrolled_loss` + backward, or
`checkpointed_loss_and_grads`) on a CIFAR-shaped set (3 x 32 x 32, 10 classes, DSA), a ConvNet
of `--width` from an expert-like start (its initialisation) towards a nearby target. Seconds are
the median over `--repeats` iterations of the process's CPU time (time.process_time: on a
shared machine the wall clock measures the neighbours; with --threads 1 CPU time is the work),
or of the wall clock on a GPU. Printed: each mode's seconds and MiB, and the ratios
checkpoint / unroll side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def one(args: argparse.Namespace) -> dict:
    import torch

    from dmcondense.augment import DSA
    from dmcondense.methods.mtt import checkpointed_loss_and_grads, unrolled_loss
    from dmcondense.models.init import reset_parameters
    from dmcondense.models.registry import build_model
    from dmcondense.rng import generator

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = build_model("convnet", 3, 10, 32, width=args.width).to(device)
    reset_parameters(net, generator(0, "bench-net", 0))
    shapes = [(n, p.shape, p.numel()) for n, p in net.named_parameters()]

    def forward(params, x):
        views, at = {}, 0
        for name, shape, numel in shapes:
            views[name] = params[at : at + numel].view(shape)
            at += numel
        return torch.func.functional_call(net, views, (x,))

    g = torch.Generator().manual_seed(0)
    start = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    target = start + 0.01 * torch.randn(tuple(start.shape), generator=g).to(device)
    ipc = args.ipc[0]  # --one: a single IPC
    images = torch.randn(10 * ipc, 3, 32, 32, generator=g).to(device)
    labels = torch.arange(10, device=device).repeat_interleave(ipc)
    augment = DSA("color_crop_cutout_flip_scale_rotate")

    def iteration(ipc_images, steps):
        leaf = ipc_images.clone().requires_grad_(True)
        lr = torch.tensor(0.01, device=device, requires_grad=True)
        draws = [augment.sample(leaf.shape[0], generator(0, "b", i, device=device), True)
                 for i in range(steps)]  # fmt: skip
        ys = labels[: leaf.shape[0]]

        def batch(i):
            return augment.apply(leaf, draws[i]), ys

        if args.mode == "unroll":
            loss = unrolled_loss(forward, start, target, lr, batch, steps)
            loss.backward()
        else:
            checkpointed_loss_and_grads(forward, start, target, lr, batch, steps, [leaf, lr])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    iteration(images[:10], 1)  # warm-up at the smallest size: allocator and kernels ready
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    seconds = []
    for _ in range(args.repeats):
        began = clock()
        iteration(images, args.steps)
        sync()
        seconds.append(clock() - began)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"seconds": statistics.median(seconds), "peak_bytes": int(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syn-steps", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="unroll", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    print(f"MTT iteration, ConvNet width {args.width}, CIFAR-shaped, {args.device}, "
          f"{args.threads} thread(s), median of {args.repeats}")  # fmt: skip
    print(f"{'ipc':>4} {'steps':>6} | {'unroll s':>9} {'MiB':>8} | {'ckpt s':>9} {'MiB':>8} | "
          f"{'s ratio':>7} {'MiB ratio':>9}")  # fmt: skip
    for ipc in args.ipc:
        for steps in args.syn_steps:
            got = {}
            for mode in ("unroll", "checkpoint"):
                command = [sys.executable, __file__, "--one", "--mode", mode, "--steps",
                           str(steps), "--ipc", str(ipc), "--width", str(args.width),
                           "--device", args.device, "--threads", str(args.threads),
                           "--repeats", str(args.repeats)]  # fmt: skip
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
                got[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            u, c = got["unroll"], got["checkpoint"]
            mib = 1024 * 1024
            print(
                f"{ipc:>4} {steps:>6} | {u['seconds']:>9.3f} {u['peak_bytes'] / mib:>8.1f} | "
                f"{c['seconds']:>9.3f} {c['peak_bytes'] / mib:>8.1f} | "
                f"{c['seconds'] / u['seconds']:>7.2f} "
                f"{c['peak_bytes'] / max(u['peak_bytes'], 1):>9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
