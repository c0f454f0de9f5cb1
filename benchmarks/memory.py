"""Peak memory of condensation from an image folder: streaming stays flat as the folder grows.

Writes two folders of small JPEGs (N and factor x N images), runs a few condensation steps on
each in a fresh process, once streaming (dataset.streaming: only sampled files are decoded, in
DataLoader workers) and once in memory (the whole split decoded to uint8 up front), and prints
peak resident set sizes: the main process (getrusage ru_maxrss) before the steps and overall,
and the largest decoding worker (VmHWM, polled). Exit status 1 when the streaming main process
or worker peak grows by more than --tolerance. Figures: benchmarks/README.md.

    python benchmarks/memory.py [--classes 10] [--per-class 200] [--factor 10] [--size 32]
        [--steps 3] [--batch-real 32] [--width 32] [--ipc 10] [--workers 2] [--tolerance 0.10]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MODES = ("streaming", "in-memory")


def write_folder(root: Path, classes: int, per_class: int, size: int, seed: int) -> None:
    """<root>/train/class_<c>/<i>.jpg: seeded smooth-noise JPEGs (about 1 KB each at 32x32)."""
    g = torch.Generator().manual_seed(seed)
    for c in range(classes):
        folder = root / "train" / f"class_{c:03d}"
        folder.mkdir(parents=True)
        coarse = torch.randint(0, 256, (per_class, 3, size // 4, size // 4), generator=g)
        pixels = torch.nn.functional.interpolate(coarse.float(), size=(size, size), mode="bilinear")
        arrays = pixels.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, array in enumerate(arrays):  # one file each: the loop is the file system's
            Image.fromarray(np.ascontiguousarray(array)).save(folder / f"{i:05d}.jpg", quality=90)


def peak_kib() -> int:
    """This process's peak resident set size so far, KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class ChildPeaks(threading.Thread):
    """Polls the peak RSS (VmHWM) of this process's children (the DataLoader workers) while
    they run; getrusage(RUSAGE_CHILDREN) would also count any helper process forked earlier."""

    def __init__(self, period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.period, self.peak_kib, self.seen = period, 0, set()
        self.done = threading.Event()

    def run(self) -> None:
        me = str(os.getpid())
        while not self.done.is_set():
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    if stat.read_text().rsplit(")", 1)[1].split()[1] != me:  # field 4: ppid
                        continue
                    status = (stat.parent / "status").read_text()
                except (OSError, IndexError):
                    continue  # the process ended meanwhile
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                        self.seen.add(stat.parent.name)
            self.done.wait(self.period)


def child(args: argparse.Namespace) -> None:
    """A few condensation steps on args.folder; prints peak RSS (KiB) as one JSON line."""
    import lightning as L

    from dmcondense.augment import DSA
    from dmcondense.data.datamodule import ClassBatchDataModule
    from dmcondense.data.normalise import Normaliser
    from dmcondense.data.statistics import channel_statistics, statistics_sample
    from dmcondense.data.streaming import StreamingClassDataModule
    from dmcondense.hostmem import reuse_freed_memory
    from dmcondense.methods.dm import DistributionMatching
    from dmcondense.models.registry import build_model
    from dmcondense.rng import generator

    reuse_freed_memory()  # as every dmcondense job does: the heap keeps its peak
    common = dict(
        source="imagefolder",
        data_dir=args.folder,
        num_classes=args.classes,
        batch_real=args.batch_real,
        iterations=args.steps,
        seed=0,
        source_kwargs={"image_size": args.size},
    )
    if args.mode == "streaming":
        dm = StreamingClassDataModule(
            **common, channels=3, image_size=args.size, num_workers=args.workers
        )
    else:
        dm = ClassBatchDataModule(**common)
    dm.setup("fit")
    normaliser = Normaliser(*channel_statistics(statistics_sample(dm.train_set)))
    indices = dm.index.sample(args.ipc, generator(0, "init")).flatten()
    init = normaliser.to_input(dm.real_images(indices))
    data_kib = peak_kib()  # listing (streaming) or decoding everything (in memory), then init
    net = build_model("convnet", 3, args.classes, args.size, width=args.width)
    module = DistributionMatching(net, DSA(), init, args.classes, normaliser)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    workers = ChildPeaks()
    workers.start()
    trainer.fit(module, datamodule=dm)
    workers.done.set()
    workers.join()
    usage = {
        "main_kib": peak_kib(),
        "data_kib": data_kib,
        "worker_kib": workers.peak_kib,
        "workers_seen": len(workers.seen),
        "steps": trainer.global_step,
    }
    print(json.dumps(usage))


def run_child(args: argparse.Namespace, folder: Path, mode: str) -> dict:
    command = [sys.executable, __file__, "--child", "--folder", str(folder), "--mode", mode]
    for key in ("classes", "size", "steps", "batch_real", "workers", "ipc", "width"):
        command += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} run on {folder} failed:\n{result.stderr[-3000:]}")
    usage = json.loads(result.stdout.strip().splitlines()[-1])
    usage["seconds"] = time.perf_counter() - started
    return usage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--factor", type=int, default=10)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-real", type=int, default=32)
    parser.add_argument("--width", type=int, default=32, help="ConvNet width (paper: 128)")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0

    counts = (args.per_class, args.per_class * args.factor)
    peaks: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="dmcondense_memory_") as tmp:
        for n in counts:
            started = time.perf_counter()
            write_folder(Path(tmp) / str(n), args.classes, n, args.size, seed=n)
            print(
                f"wrote {args.classes} x {n} = {args.classes * n} JPEGs of {args.size}x{args.size}"
                f" in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        for mode in MODES:
            for n in counts:
                peaks[mode, n] = run_child(args, Path(tmp) / str(n), mode)
                usage = peaks[mode, n]
                print(
                    f"{mode:>9} {args.classes * n:>7} images: before the steps "
                    f"{usage['data_kib'] / 1024:7.1f} MiB, main {usage['main_kib'] / 1024:7.1f}"
                    f" MiB, largest worker {usage['worker_kib'] / 1024:7.1f} MiB"
                    f" ({usage['seconds']:.0f} s)",
                    flush=True,
                )
    small, large = counts
    print(
        f"\n{args.steps} steps, batch_real {args.batch_real}, ipc {args.ipc}, ConvNet width "
        f"{args.width}, {args.workers} workers; folder grows {args.factor}x"
    )
    flat = True
    for mode in MODES:
        rows = (
            ("data_kib", "before the steps"),
            ("main_kib", "main process"),
            ("worker_kib", "largest worker"),
        )
        for key, what in rows:
            a, b = peaks[mode, small][key], peaks[mode, large][key]
            if a == 0:
                continue  # no workers: the in-memory path decodes in the main process
            ratio = b / a
            print(
                f"{mode:>9} {what:<16} peak RSS {a / 1024:7.1f} -> {b / 1024:7.1f} MiB,"
                f" ratio {ratio:.3f}"
            )
            if mode == "streaming" and key != "data_kib" and ratio > 1 + args.tolerance:
                flat = False
    print("streaming peak memory is flat" if flat else "streaming peak memory GREW")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
