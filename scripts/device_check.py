"""Device check: condensation steps/s and peak memory, batched vs sequential evaluation.

Run through scripts/device_check.sh (it checks the imports first). CIFAR-10 shapes (random uint8
images, 10 classes, 3x32x32), ConvNet 128x3, batch_real 256, Lightning fit steps without a
progress bar. Settings: IPC 10 and 50 x fp32 and bf16-mixed x contiguous and channels-last,
then torch.compile and cudnn.benchmark on one setting. Evaluation: 10 ConvNets trained on an
IPC-10 CIFAR-shaped set, batched (eval.backend=vmap; ensemble under DEVICE=cpu) and one after
another (eval.backend=loop), in network-epochs per second. Figures: benchmarks/README.md.
Figures go to stdout and, when $OUT is set, to $OUT/device_check.json (rewritten after each
measurement, so a run cut short still leaves what it measured).

Environment: DEVICE (cuda | cpu; default cuda), STEPS (timed steps per setting), WARMUP,
IPCS (comma list), BATCH_REAL, WIDTH, EVAL_EPOCHS, COMPILE_BACKEND. DEVICE=cpu shrinks every
default for a dry run of the wiring (its figures mean nothing).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch

from dmcondense.augment import DSA
from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.protocol import Protocol
from dmcondense.evaluation.score import train_networks
from dmcondense.methods.dm import DistributionMatching
from dmcondense.models.registry import build_model
from dmcondense.rng import generator

# RandomImagesDataModule lives beside the benchmarks that share it (benchmarks/random_images.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from random_images import RandomImagesDataModule  # noqa: E402

CIFAR = Normaliser([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
CLASSES, SIDE = 10, 32

DEVICE = os.environ.get("DEVICE", "cuda")
ON_CPU = DEVICE == "cpu"
STEPS = int(os.environ.get("STEPS", 2 if ON_CPU else 50))
WARMUP = int(os.environ.get("WARMUP", 1 if ON_CPU else 5))
BATCH_REAL = int(os.environ.get("BATCH_REAL", 8 if ON_CPU else 256))
WIDTH = int(os.environ.get("WIDTH", 8 if ON_CPU else 128))
IPCS = [int(i) for i in os.environ.get("IPCS", "2,5" if ON_CPU else "10,50").split(",")]
EVAL_EPOCHS = int(os.environ.get("EVAL_EPOCHS", 2 if ON_CPU else 100))
# Inductor on a CPU needs a C++ toolchain and minutes: the dry run only checks the wiring.
COMPILE_BACKEND = os.environ.get("COMPILE_BACKEND", "eager" if ON_CPU else "inductor")


def synchronize() -> None:
    if not ON_CPU:
        torch.cuda.synchronize()


class StepClock(L.Callback):
    """Wall time of the first `warmup` steps (compilation included) and of the steps after."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.marks = warmup, {}

    def on_train_start(self, *args) -> None:
        synchronize()
        self.marks["start"] = time.perf_counter()

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step in (self.warmup, trainer.max_steps):
            synchronize()  # only here: a sync every step would hide the CPU-GPU overlap
            self.marks[trainer.global_step] = time.perf_counter()


def condense_setting(ipc: int, precision: str, channels_last: bool, compile: bool) -> dict:
    dm = RandomImagesDataModule(
        per_class=max(BATCH_REAL, ipc) * 2,
        num_classes=CLASSES,
        batch_real=BATCH_REAL,
        iterations=WARMUP + STEPS,
        seed=0,
    )
    dm.setup()
    init = torch.randn(CLASSES * ipc, 3, SIDE, SIDE, generator=generator(0, "device-check-init"))
    net = build_model("convnet", 3, CLASSES, SIDE, width=WIDTH)
    module = DistributionMatching(
        net,
        DSA(),
        init,
        CLASSES,
        CIFAR,
        channels_last=channels_last,
        compile=compile,
        compile_backend=COMPILE_BACKEND,
    )
    clock = StepClock(WARMUP)
    trainer = L.Trainer(
        accelerator="cpu" if ON_CPU else "gpu",
        devices=1,
        precision=precision,
        max_steps=WARMUP + STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    if not ON_CPU:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=dm)
    marks = clock.marks
    seconds = marks[WARMUP + STEPS] - marks[WARMUP]
    return {
        "ipc": ipc,
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "steps_per_s": round(STEPS / seconds, 3),
        "ms_per_step": round(1000 * seconds / STEPS, 2),
        "warmup_s": round(marks[WARMUP] - marks["start"], 2),
        "peak_memory_gib": None if ON_CPU else round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "loss_finite": bool(torch.isfinite(module.synthetic).all()),
    }


def evaluation_rates(num_models: int = 10, ipc: int = 10) -> dict:
    g = generator(0, "device-check-eval")
    images = torch.randn(CLASSES * ipc, 3, SIDE, SIDE, generator=g)
    labels = torch.arange(CLASSES).repeat_interleave(ipc)
    test_images = torch.randint(0, 256, (1000, 3, SIDE, SIDE), generator=g, dtype=torch.uint8)
    test_labels = torch.randint(0, CLASSES, (1000,), generator=g)
    # batched: the vmap stack on a GPU, the grouped-convolution ensemble in a CPU dry run
    backends = {"batched": "ensemble" if ON_CPU else "vmap", "sequential": "loop"}
    rates = {"num_models": num_models, "ipc": ipc, "epochs": EVAL_EPOCHS, "backends": backends}
    for name, backend in backends.items():
        kwargs = dict(
            num_models=num_models,
            seed=0,
            normaliser=CIFAR,
            backend=backend,
            num_classes=CLASSES,
            device=DEVICE,
            model_kwargs={"width": WIDTH},
        )
        # One epoch first: cuDNN plans, vmap tracing and allocator warm-up are not the rate.
        train_networks("convnet", images, labels, test_images, test_labels,
                       protocol=Protocol(epochs=1), **kwargs)  # fmt: skip
        synchronize()
        started = time.perf_counter()
        accuracy = train_networks("convnet", images, labels, test_images, test_labels,
                                  protocol=Protocol(epochs=EVAL_EPOCHS), **kwargs)  # fmt: skip
        synchronize()
        seconds = time.perf_counter() - started
        rates[f"{name}_network_epochs_per_s"] = round(num_models * EVAL_EPOCHS / seconds, 2)
        rates[f"{name}_seconds"] = round(seconds, 2)
        rates[f"{name}_mean_accuracy"] = round(float(accuracy.mean()), 4)
    rates["speedup"] = round(
        rates["batched_network_epochs_per_s"] / rates["sequential_network_epochs_per_s"], 2
    )
    return rates


def write(report: dict) -> None:
    out = os.environ.get("OUT")
    if out:
        path = Path(out) / "device_check.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    started = time.perf_counter()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one line per setting
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    name = "cpu" if ON_CPU else torch.cuda.get_device_name(0)
    report = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "shapes": f"CIFAR-10: {CLASSES} classes, 3x{SIDE}x{SIDE}, batch_real {BATCH_REAL}, "
        f"ConvNet width {WIDTH} depth 3",
        "steps_timed": STEPS,
        "warmup_steps": WARMUP,
        "condense": [],
    }
    print(f"device check on {name}: torch {torch.__version__}, {report['shapes']}", flush=True)
    print(f"{STEPS} timed steps after {WARMUP} warm-up steps per setting", flush=True)
    # (ipc, precision, channels_last, compile, cudnn.benchmark)
    settings = [
        (ipc, precision, channels_last, False, False)
        for ipc in IPCS
        for channels_last in (False, True)
        for precision in ("32-true", "bf16-mixed")
    ]
    settings.append((IPCS[0], "bf16-mixed", True, True, False))  # torch.compile, one setting
    if not ON_CPU:  # the trainer configs leave cudnn.benchmark off: what would it give?
        settings.append((IPCS[0], "bf16-mixed", True, False, True))
    for ipc, precision, channels_last, compile, benchmark in settings:
        label = (
            f"condense ipc {ipc:>2} {precision:<10} channels_last={channels_last!s:<5} "
            f"compile={compile!s:<5}" + (" cudnn.benchmark" if benchmark else "")
        )
        torch.backends.cudnn.benchmark = benchmark
        try:
            row = condense_setting(ipc, precision, channels_last, compile)
        except Exception as error:  # one broken setting (e.g. no compiler for inductor)
            message = f"{type(error).__name__}: {error}"[:500]
            row = {"ipc": ipc, "precision": precision, "compile": compile, "error": message}
            print(f"{label} FAILED: {message}", flush=True)
        else:
            print(
                f"{label} {row['steps_per_s']:8.2f} steps/s ({row['ms_per_step']:.1f} ms), "
                f"warm-up {row['warmup_s']:.1f} s, peak {row['peak_memory_gib']} GiB",
                flush=True,
            )
        torch.backends.cudnn.benchmark = False
        report["condense"].append(row)
        write(report)
    try:
        report["evaluation"] = e = evaluation_rates(ipc=IPCS[0])
        print(
            f"evaluation, 10 ConvNets on IPC {e['ipc']}, {EVAL_EPOCHS} epochs: batched "
            f"({e['backends']['batched']}) {e['batched_network_epochs_per_s']} network-epochs/s, "
            f"sequential (loop) {e['sequential_network_epochs_per_s']} ({e['speedup']}x)",
            flush=True,
        )
    except Exception as error:
        report["evaluation"] = {"error": f"{type(error).__name__}: {error}"[:500]}
        print(f"evaluation FAILED: {report['evaluation']['error']}", flush=True)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    write(report)
    print(f"done in {report['total_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
