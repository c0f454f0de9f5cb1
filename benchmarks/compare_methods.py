"""DC, DSA, DM, DM x factor 2, M3D and IDM side by side at one fixed CPU budget, one protocol.

    python benchmarks/compare_methods.py                      # mnist_sample and CIFAR-10, IPC 1, 10
    python benchmarks/compare_methods.py --budget 120 --datasets mnist_sample --ipcs 1

Every run gets the same condensation wall time (`--budget` seconds, Lightning's max_time: a run
stops at the first step that ends past it), the same ConvNet, real batch and evaluation (the
common DSA protocol, `--num-models` networks x `--epochs` epochs), and each method its own
defaults otherwise (DC from noise, the others from real images; DM x2, M3D and IDM decode each
stored image into 4 by multi-formation). IPC counts stored images: every method gets the same
pixels. The random real images of each run (IPC full-size real images a class) are the floor.
CIFAR-10 is the shared JPEG copy (../shared/datasets); without it only mnist_sample runs. Prints a
Markdown table and writes it to <out>/table.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cifar10 import ARCHIVE, REPO, unpack

# name in the table -> the overrides that select it
METHODS = {
    "dc": ["method=dc"],
    "dsa": ["method=dsa"],
    "dm": ["method=dm"],
    "dm_x2": ["method=dm", "synthetic.factor=2"],
    "m3d": ["method=m3d"],
    "idm": ["method=idm"],
}


def train(overrides: list[str], run_dir: Path) -> tuple[dict, dict, float]:
    """Run one condensation job; (results.json, synthetic.pt metadata, peak RSS in MiB)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [os.environ.get("PYTHONPATH"), str(REPO / "src")]))}  # fmt: skip
    command = [sys.executable, "-m", "dmcondense.train", *overrides, f"hydra.run.dir={run_dir}"]
    print("$", " ".join(command), flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.stderr"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=stderr)  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)  # the child's own peak RSS
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"error: the run failed, see {log}:\n{log.read_text()[-2000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    import torch  # late: the parent stays light while the runs use the cores

    meta = torch.load(run_dir / "synthetic.pt", map_location="cpu", weights_only=False)
    return results, meta, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=60, help="condensation seconds a run")
    parser.add_argument("--datasets", nargs="+", default=["mnist_sample", "cifar10"])
    parser.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--num-models", type=int, default=3)
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--data", type=Path, default=Path("/tmp/dmcondense-cifar10"))
    parser.add_argument("--out", type=Path, default=REPO / "lightning_logs" / "compare_methods")
    args = parser.parse_args()
    started = time.time()
    budget = f"00:00:{args.budget // 60:02d}:{args.budget % 60:02d}"
    common = [
        f"batch_real={args.batch_real}", f"model.width={args.width}", f"eval.epochs={args.epochs}",
        f"eval.num_models={args.num_models}", "seed=0", "iterations=1000000", "logger=csv",
        f"+trainer.max_time={budget}", "save_every=1000000",
    ]  # fmt: skip
    rows = []
    for dataset in args.datasets:
        if dataset == "cifar10":
            if not args.archive.is_file():
                print(f"skipping CIFAR-10: {args.archive} not found", flush=True)
                continue
            data = ["dataset=imagefolder", f"path={unpack(args.archive, args.data)}",
                    "dataset.num_classes=10", "dataset.name=cifar10"]  # fmt: skip
        else:
            data = [f"dataset={dataset}"]
        for ipc in args.ipcs:
            for method in args.methods:
                run_dir = args.out / f"{dataset}_ipc{ipc}_{method}"
                t = time.time()
                results, meta, peak = train([*data, *common, *METHODS[method], f"ipc={ipc}"],
                                            run_dir)  # fmt: skip
                steps = int(meta["step"])
                rows.append({
                    "data set": dataset, "IPC": ipc, "method": method,
                    "decoded": results.get("decoded_per_class", ipc),
                    "accuracy": results["results"][results["method"]]["convnet"],
                    "random real": results["results"]["random"]["convnet"],
                    "steps": steps, "s/step": results["condense_seconds"] / max(steps, 1),
                    "wall s": time.time() - t, "peak MiB": peak,
                })  # fmt: skip
    lines = [
        f"{args.budget} s of condensation a run; ConvNet width {args.width}, batch_real "
        f"{args.batch_real}; {args.num_models} networks x {args.epochs} epochs (DSA protocol); "
        f"{(time.time() - started) / 60:.0f} min in all",
        "",
        "| data set | IPC | method | decoded a class | accuracy % | random real % | steps | "
        "s/step | s/step / DM's | wall s | peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    dm_step = {(r["data set"], r["IPC"]): r["s/step"] for r in rows if r["method"] == "dm"}
    for r in rows:
        acc, floor = r["accuracy"], r["random real"]
        dm = dm_step.get((r["data set"], r["IPC"]))
        relative = f"{r['s/step'] / dm:.1f}" if dm else "-"
        lines.append(
            f"| {r['data set']} | {r['IPC']} | {r['method'].upper().replace('_X2', ' x2')} | "
            f"{r['decoded']} | {acc['mean']:.2f} +- {acc['std']:.2f} | {floor['mean']:.2f} +- "
            f"{floor['std']:.2f} | {r['steps']} | {r['s/step']:.2f} | {relative} | "
            f"{r['wall s']:.0f} | {r['peak MiB']:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
