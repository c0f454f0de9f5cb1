"""M3D at CPU scale over the image learning rate and the step count: how far the images move
and what they score.

    python benchmarks/m3d_sweep.py --ipc 1 --lr-factors 0.1 1 10 --checkpoints 100 300

For each lr_img = factor x IPC, one M3D run (method/m3d.yaml: factor 2, nearest init, [0, 1]
pixels, IDC's augmentation, a network every 5 steps) of max(--checkpoints) steps on the shared
CIFAR-10 JPEG copy; at each checkpoint the stored set S is copied, and afterwards each copy is
read out: the distance moved, ||S - S0|| / ||S0|| (stored [0, 1] pixels, S0 the init), and the
last-epoch accuracy of `--num-models` ConvNets x `--epochs` epochs (DSA protocol; with
`--score last` only the last checkpoint is scored, with `--score none` none). SGD without a
schedule, so the copy at step k is what a k-step run ends with. The init itself (step 0) is
scored once. One process: the data is read once and every run shares the same real batches,
networks and augmentation draws (seed 0). Prints a Markdown table; writes it to <out>/table.md
and the rows to <out>/rows.json. Figures: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir

from dmcondense import CONF_DIR
from dmcondense.data.spec import resolve_spec
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.jobs import build
from dmcondense.jobs.common import initial_images, load_data, load_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cifar10 import ARCHIVE, REPO, unpack  # noqa: E402


class Snapshots(L.Callback):
    """The stored pixels after each of `steps` iterations."""

    def __init__(self, steps: list[int]) -> None:
        self.steps, self.taken = set(steps), {}

    def on_train_batch_end(self, trainer, module, *args) -> None:
        if trainer.global_step in self.steps:
            self.taken[trainer.global_step] = module.synthetic.detach().clone()


def compose_config(overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def score(module, plan, test, spec, stored: torch.Tensor) -> dict:
    with torch.no_grad():
        module.synthetic.copy_(stored)
    images, labels = module.decoded()
    results = plan.summaries({"m3d": [(images, labels)]}, test, spec.normaliser, "cpu")
    return results["m3d"]["convnet"]


def cell(accuracy: dict | None) -> str:
    return "not scored" if accuracy is None else f"{accuracy['mean']:.2f} +- {accuracy['std']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--lr-factors", nargs="+", type=float, default=[0.1, 1.0, 10.0])
    parser.add_argument("--checkpoints", nargs="+", type=int, default=[100, 300])
    parser.add_argument("--score", choices=["all", "last", "none"], default="all",
                        help="checkpoints to score (distances: at all)")  # fmt: skip
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--num-models", type=int, default=2)
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "dmcondense-cifar10"
    )
    parser.add_argument("--out", type=Path, default=REPO / "lightning_logs" / "m3d_sweep")
    args = parser.parse_args()
    if not args.archive.is_file():
        sys.exit(f"error: {args.archive} not found; this sweep needs the shared CIFAR-10 copy")
    torch.set_num_threads(1)
    reuse_freed_memory()
    started = time.time()
    steps = max(args.checkpoints)
    common = [
        "method=m3d", "dataset=imagefolder", f"dataset.path={unpack(args.archive, args.data)}",
        "dataset.num_classes=10", "dataset.name=cifar10", "dataset.image_size=32",
        f"ipc={args.ipc}", f"iterations={steps}", f"batch_real={args.batch_real}",
        f"model.width={args.width}", f"eval.epochs={args.epochs}",
        f"eval.num_models={args.num_models}", "seed=0",
    ]  # fmt: skip
    cfg = compose_config(common)
    dm = load_data(cfg)
    test = load_test(dm, cfg.dataset)
    spec = resolve_spec(cfg.dataset, dm.train_set)
    plan = build.evaluation_plan(cfg, spec)
    init, _ = initial_images(cfg, dm, spec, cfg.init, cfg.synthetic.factor)
    rows = []
    for factor in args.lr_factors:
        lr = factor * args.ipc
        cfg = compose_config([*common, f"lr_img={lr:g}"])
        module = build.method(cfg, spec, init)
        start = module.synthetic.detach().clone()
        if not rows:
            accuracy = None if args.score == "none" else score(module, plan, test, spec, start)
            rows.append({"lr_img": None, "steps": 0, "moved": 0.0, "accuracy": accuracy})
        snapshots = Snapshots(args.checkpoints)
        trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[snapshots])  # fmt: skip
        fit_started = time.time()
        trainer.fit(module, datamodule=dm)
        fit_seconds = time.time() - fit_started
        for k in sorted(snapshots.taken):
            stored = snapshots.taken[k]
            moved = float((stored - start).norm() / start.norm())
            scored = args.score == "all" or (args.score == "last" and k == steps)
            accuracy = score(module, plan, test, spec, stored) if scored else None
            rows.append({"lr_img": lr, "steps": k, "moved": moved, "accuracy": accuracy,
                         "fit s": fit_seconds})  # fmt: skip
            print(f"lr_img {lr:g} step {k}: moved {moved:.4f}, accuracy {cell(accuracy)}",
                  flush=True)  # fmt: skip
    lines = [
        f"M3D, CIFAR-10 (shared JPEG copy), IPC {args.ipc}, batch_real {args.batch_real}, "
        f"ConvNet width {args.width}; {args.num_models} networks x {args.epochs} epochs (DSA "
        f"protocol, last epoch); {(time.time() - started) / 60:.0f} min in all",
        "",
        "| lr_img | steps | ‖S − S₀‖ / ‖S₀‖ | accuracy % |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        lr = "init" if r["lr_img"] is None else f"{r['lr_img']:g}"
        lines.append(f"| {lr} | {r['steps']} | {r['moved']:.4f} | {cell(r['accuracy'])} |")
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
