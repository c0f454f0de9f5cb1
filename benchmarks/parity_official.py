"""The adapter of benchmarks/parity.py: run the authors' own condensation loop on our data.

Nothing of the authors' code is kept in this repository. The user points at a checkout of their
repository; `prepare_copy` copies it into a scratch folder and applies the compatibility edits
below there (current PyTorch and SciPy); `python benchmarks/parity_official.py ...` then imports
their `utils` module from that copy, replaces four of its functions and runs their script
(`main.py`, `main_DM.py`) unchanged as `__main__`:

    get_dataset                  returns our training split (the tensors the harness saved)
    evaluate_synset              does nothing: both sets are scored later by our evaluation
    get_default_convnet_setting  returns the ConvNet width of the budget
    get_network                  their own, wrapped to time the loop (one call an iteration)

Their script makes `--Iteration + 1` image updates; the adapter passes `steps - 1`, so both
sides make `steps` updates. The synthetic set their script saves (`res_*.pt`) is written out as
a dmcondense synthetic.pt (format 1), with the timing in a JSON file beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import runpy
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Official:
    """Where a method's official code lives and what the adapter needs of a checkout."""

    repository: str
    script: str
    files: tuple[str, ...]
    method_flag: str | None  # their --method value (main.py serves DC and DSA)


DATASET_CONDENSATION = "VICO-UoE/DatasetCondensation"
OFFICIAL = {
    "dc": Official(DATASET_CONDENSATION, "main.py", ("main.py", "utils.py", "networks.py"), "DC"),
    "dsa": Official(DATASET_CONDENSATION, "main.py", ("main.py", "utils.py", "networks.py"), "DSA"),
    "dm": Official(DATASET_CONDENSATION, "main_DM.py", ("main_DM.py", "utils.py", "networks.py"),
                   None),
}  # fmt: skip

# (file, pattern, replacement, why): applied to the scratch copy wherever the pattern occurs.
COMPAT_EDITS: tuple[tuple[str, str, str, str], ...] = (
    (
        "utils.py",
        r"from scipy\.ndimage\.interpolation import rotate",
        "from scipy.ndimage import rotate",
        "scipy.ndimage.interpolation is deprecated and goes in SciPy 2.0",
    ),
    (
        "networks.py",
        r"out = out\.view\(out\.size\(0\), -1\)",
        "out = out.reshape(out.size(0), -1)",
        "`view` fails on a channels-last feature map: a crop's permute leaves a one-channel "
        "batch channels-last strided (x.contiguous() keeps it), and conv keeps that layout",
    ),
    (
        "utils.py",
        r"^(\s*)(\w+)\[:\] = \2\[0\]$",
        r"\1\2[:] = \2[0].clone()",
        "Siamese copy `x[:] = x[0]` reads and writes one memory location when the batch holds "
        "one image (IPC 1); newer PyTorch refuses overlapping in-place copies",
    ),
)


def missing_files(official: Path, method: str) -> str | None:
    """One line naming the repository and the files a checkout lacks; None if it has them."""
    spec = OFFICIAL[method]
    lacking = [name for name in spec.files if not (official / name).is_file()]
    if not official.is_dir() or lacking:
        return (
            f"{official} is not a checkout of github.com/{spec.repository}: --method {method} "
            f"needs {', '.join(spec.files)} there (missing: {', '.join(lacking or spec.files)})"
        )
    return None


def prepare_copy(official: Path, destination: Path) -> list[str]:
    """Copy the checkout's top-level Python files to `destination` and apply COMPAT_EDITS
    there; returns a line for each edit that changed something."""
    destination.mkdir(parents=True, exist_ok=True)
    for source in official.glob("*.py"):
        shutil.copy2(source, destination / source.name)
    applied = []
    for name, pattern, replacement, why in COMPAT_EDITS:
        path = destination / name
        if not path.is_file():
            continue
        text = path.read_text()
        edited, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count:
            path.write_text(edited)
            applied.append(f"{name}: {count} x {why}")
    return applied


def their_argv(args: argparse.Namespace, save_path: Path) -> list[str]:
    """The command line of their script for this budget (no evaluation: eval_mode X)."""
    spec = OFFICIAL[args.method]
    argv = [
        spec.script,
        "--dataset", args.their_dataset,
        "--model", "ConvNet",
        "--ipc", str(args.ipc),
        "--eval_mode", "X",  # evaluate only at the last iteration, with the patched no-op
        "--num_exp", "1",
        "--num_eval", "1",
        "--Iteration", str(args.steps - 1),
        "--lr_img", str(args.lr_img),
        "--batch_real", str(args.batch_real),
        "--init", args.init,
        "--dsa_strategy", args.strategy,
        "--data_path", str(save_path),
        "--save_path", str(save_path),
    ]  # fmt: skip
    if spec.method_flag is not None:
        argv += ["--method", spec.method_flag]
    return argv


def run_official(args: argparse.Namespace) -> dict:
    """Run their script on the saved data; returns the synthetic record and the timing."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    data = torch.load(args.data, weights_only=False)
    copy = Path(args.copy).resolve()
    save_path = Path(args.out).resolve().parent / f"official_{args.method}"
    save_path.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(copy))
    import utils  # their module, from the scratch copy

    def get_dataset(dataset: str, data_path: str):
        train = utils.TensorDataset(data["train_images"], data["train_labels"])
        test = utils.TensorDataset(data["test_images"], data["test_labels"])
        loader = torch.utils.data.DataLoader(test, batch_size=256, shuffle=False)
        channels, size = data["train_images"].shape[1], data["train_images"].shape[-1]
        return (channels, (size, size), len(data["class_names"]), data["class_names"],
                data["mean"], data["std"], train, test, loader)  # fmt: skip

    def evaluate_synset(it_eval, net, images_train, labels_train, testloader, their_args):
        return net, 0.0, 0.0

    default_setting = utils.get_default_convnet_setting

    def get_default_convnet_setting():
        _, depth, act, norm, pooling = default_setting()
        return args.width, depth, act, norm, pooling

    calls: list[float] = []
    their_get_network = utils.get_network

    def get_network(*a, **k):
        calls.append(time.perf_counter())
        return their_get_network(*a, **k)

    utils.get_dataset = get_dataset
    utils.evaluate_synset = evaluate_synset
    utils.get_default_convnet_setting = get_default_convnet_setting
    utils.get_network = get_network

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    argv = their_argv(args, save_path)
    sys.argv = argv
    runpy.run_path(str(copy / argv[0]), run_name="__main__")
    finished = time.perf_counter()

    saved = sorted(save_path.glob("res_*.pt"))
    if not saved:
        raise RuntimeError(f"{argv[0]} saved no res_*.pt in {save_path}")
    images, labels = torch.load(saved[-1], weights_only=False)["data"][-1]
    return {
        "images": images.float().contiguous(),
        "labels": labels.long(),
        # Calls: one an iteration, plus one evaluation network before the last iteration.
        "loop_seconds": finished - calls[0],
        "seconds_per_step": (finished - calls[0]) / args.steps,
        "argv": argv,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=sorted(OFFICIAL), required=True)
    parser.add_argument("--copy", required=True, help="the patched scratch copy of their code")
    parser.add_argument("--data", required=True, help="the tensors saved by parity.py")
    parser.add_argument("--out", required=True, help="synthetic.pt to write")
    parser.add_argument("--their-dataset", default="MNIST", help="their --dataset name")
    parser.add_argument("--ipc", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-real", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--lr-img", type=float, required=True)
    parser.add_argument("--init", choices=("real", "noise"), required=True)
    parser.add_argument("--strategy", required=True, help="their --dsa_strategy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    here = os.getcwd()
    try:
        result = run_official(args)
    finally:
        os.chdir(here)
    import torch

    data = torch.load(args.data, weights_only=False)
    record = {
        "format": 1,
        "images": result["images"],
        "labels": result["labels"],
        "class_names": list(data["class_names"]),
        "mean": list(data["mean"]),
        "std": list(data["std"]),
        "ipc": args.ipc,
        "factor": 1,
        "step": args.steps,
        "init_indices": None,
        "config": data["config"],
    }
    out = Path(args.out)
    torch.save(record, out)
    timing = {key: result[key] for key in ("loop_seconds", "seconds_per_step", "argv")}
    out.with_suffix(".json").write_text(json.dumps(timing, indent=2) + "\n")


if __name__ == "__main__":
    main()
