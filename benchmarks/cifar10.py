"""Real-data benchmark on the shared CIFAR-10 copy (../shared/datasets/cifar10-jpeg.tar.gz):
condense CIFAR-10 to IPC 10 with DM and score DM, random, herding and k-center with the same
protocol, at a budget that fits 2 CPU cores in about 30 minutes.

    python benchmarks/cifar10.py [--out lightning_logs/bench_cifar10] [--iterations 200] ...

The CPU budget (all flags) is far below the paper's (20,000 steps, batch_real 256, width 128,
1,000 epochs x 20 networks); compare the methods with each other, not with published figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def unpack(archive: Path, into: Path) -> Path:
    if not (into / "train").is_dir():
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    return into


def run_folder(overrides: list[str]) -> Path:
    """The run folder a job's overrides give it (hydra.run.dir=...)."""
    return Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")))


def run(module: str, overrides: list[str]) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [os.environ.get("PYTHONPATH"), str(REPO / "src")])
        ),
    }
    command = [sys.executable, "-m", module, *overrides]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, env=env, check=True, stderr=subprocess.DEVNULL)
    return json.loads((run_folder(overrides) / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "dmcondense-cifar10"
    )
    parser.add_argument("--out", type=Path, default=REPO / "lightning_logs" / "bench_cifar10")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--num-models", type=int, default=3)
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"error: {args.archive} not found; this benchmark needs the shared CIFAR-10 copy")
    started = time.time()
    data = unpack(args.archive, args.data)
    common = [
        "dataset=imagefolder", f"path={data}", "dataset.num_classes=10", "dataset.image_size=32",
        f"ipc={args.ipc}", f"model.width={args.width}", f"eval.epochs={args.epochs}",
        f"eval.num_models={args.num_models}", "seed=0",
    ]  # fmt: skip
    rows = {}
    dm = run("dmcondense.train", common + [
        f"iterations={args.iterations}", f"batch_real={args.batch_real}",
        f"hydra.run.dir={args.out / 'dm'}",
    ])  # fmt: skip
    rows["DM"] = dm["results"]["dm"]["convnet"]
    rows["random (DM's init)"] = dm["results"]["random"]["convnet"]
    for baseline in ("herding", "kcenter"):
        result = run("dmcondense.evaluate", common + [
            f"baseline={baseline}", f"hydra.run.dir={args.out / baseline}",
        ])  # fmt: skip
        rows[baseline] = result["results"][baseline]["convnet"]
    minutes = (time.time() - started) / 60
    lines = [
        f"CIFAR-10 (shared JPEG copy), IPC {args.ipc}; DM {args.iterations} steps, batch_real "
        f"{args.batch_real}; ConvNet width {args.width}; {args.num_models} networks x "
        f"{args.epochs} epochs each; {minutes:.0f} min in all",
        "",
        "| method | test accuracy % (mean +- std) |",
        "| --- | --- |",
        *[f"| {name} | {r['mean']:.2f} +- {r['std']:.2f} |" for name, r in rows.items()],
    ]
    table = "\n".join(lines)
    print(table)
    (args.out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
