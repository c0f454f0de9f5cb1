"""The adapter of benchmarks/parity.py: run the authors' own condensation loop on our data.

Nothing of the authors' code is kept in this repository. The user points at a checkout of their
repository; `prepare_copy` copies its Python files into a scratch folder and applies the
compatibility edits below there (current PyTorch and SciPy); `python
benchmarks/parity_official.py ...` then imports their modules from that copy, replaces a few of
their functions and runs their script unchanged as `__main__`:

    get_dataset                  returns our training split (the tensors the harness saved)
    evaluate_synset              does nothing: both sets are scored later by our evaluation
    get_default_convnet_setting  returns the ConvNet width of the budget
    get_time                     their own, wrapped: its first call ("training begins") starts
                                 the clock of the loop and keeps their initial images
                                 (`image_syn` of the calling frame) for `--score-init`

DC, DSA and DM come from VICO-UoE/DatasetCondensation (`main.py`, `main_DM.py`, all four
functions in `utils.py`); IDM from uitrbn/IDM (`IDM_cifar10.py`, its data set from `utils.py`,
the rest from `dc_utils.py`). IDM imports two packages it uses only for things these runs do not
do; where they are not installed, the adapter puts small stand-ins in `sys.modules`:
`torchnet.meter.ClassErrorMeter` (top-1 accuracy in percent, the part IDM uses) and an empty
`kornia` (ZCA whitening only).

Their scripts make `--Iteration + 1` image updates; the adapter passes `steps - 1`, so both
sides make `steps` updates. With `--eval_mode X` their scripts evaluate only after the last
iteration (IDM never), with the no-op above. The synthetic set their script saves (`res_*.pt`)
is written out as a dmcondense synthetic.pt (format 1), with the timing in a JSON file beside it.
"""

from __future__ import annotations

import argparse
import inspect
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
    data_module: str = "utils"  # holds get_dataset
    loop_module: str = "utils"  # holds evaluate_synset, get_network, get_time


DATASET_CONDENSATION = "VICO-UoE/DatasetCondensation"
DC_FILES = ("main.py", "utils.py", "networks.py")
OFFICIAL = {
    "dc": Official(DATASET_CONDENSATION, "main.py", DC_FILES, "DC"),
    "dsa": Official(DATASET_CONDENSATION, "main.py", DC_FILES, "DSA"),
    "dm": Official(DATASET_CONDENSATION, "main_DM.py", ("main_DM.py", "utils.py", "networks.py"),
                   None),
    "idm": Official("uitrbn/IDM", "IDM_cifar10.py",
                    ("IDM_cifar10.py", "utils.py", "dc_utils.py", "dc_networks.py", "networks.py",
                     "utils_edc.py", "augment_edc.py"),
                    None, data_module="utils", loop_module="dc_utils"),
}  # fmt: skip

# (file, pattern, replacement, why): applied to the scratch copy wherever the pattern occurs.
COMPAT_EDITS: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (
        ("utils.py", "dc_utils.py"),
        r"from scipy\.ndimage\.interpolation import rotate",
        "from scipy.ndimage import rotate",
        "scipy.ndimage.interpolation is deprecated and goes in SciPy 2.0",
    ),
    (
        ("networks.py", "dc_networks.py"),
        r"(\w+) = (\w+)\.view\(\2\.size\(0\), -1\)",
        r"\1 = \2.reshape(\2.size(0), -1)",
        "`view` fails on a channels-last feature map: a crop's permute leaves a one-channel "
        "batch channels-last strided (x.contiguous() keeps it), and conv keeps that layout",
    ),
    (
        ("utils.py", "dc_utils.py"),
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
    for names, pattern, replacement, why in COMPAT_EDITS:
        for name in names:
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
        "--eval_mode", "X",
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
    if args.method == "idm":  # command.txt's flags, with this budget's values
        argv += [
            "--net_train_real", "--outer_loop", "1", "--mismatch_lambda", "0", "--net_decay",
            "--embed_last", "1000", "--syn_ce", "--ce_weight", str(args.ce_weight),
            "--train_net_num", "1", "--net_generate_interval", str(args.net_generate_interval),
            "--aug",
        ]  # fmt: skip
    return argv


class ClassErrorMeter:
    """Stand-in for torchnet.meter.ClassErrorMeter(accuracy=True): top-1 accuracy in percent."""

    def __init__(self, topk=(1,), accuracy: bool = False) -> None:
        self.accuracy = accuracy
        self.reset()

    def reset(self) -> None:
        self.n, self.correct = 0, 0

    def add(self, output, target) -> None:
        self.correct += int((output.argmax(dim=1) == target).sum())
        self.n += int(target.shape[0])

    def value(self) -> list[float]:
        accuracy = 100.0 * self.correct / self.n
        return [accuracy if self.accuracy else 100.0 - accuracy]


def install_stand_ins() -> list[str]:
    """Put the stand-ins for torchnet and kornia in sys.modules where they are not installed."""
    import importlib.util
    import types

    installed = []
    if importlib.util.find_spec("torchnet") is None:
        torchnet = types.ModuleType("torchnet")
        torchnet.meter = types.SimpleNamespace(ClassErrorMeter=ClassErrorMeter)
        sys.modules["torchnet"] = torchnet
        installed.append("torchnet")
    if importlib.util.find_spec("kornia") is None:
        sys.modules["kornia"] = types.ModuleType("kornia")
        installed.append("kornia")
    return installed


def run_official(args: argparse.Namespace) -> dict:
    """Run their script on the saved data; returns the synthetic set and the timing."""
    import importlib

    import numpy as np
    import torch

    from dmcondense.hostmem import reuse_freed_memory

    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # the allocator setting every dmcondense job runs with
    data = torch.load(args.data, weights_only=False)
    spec = OFFICIAL[args.method]
    copy = Path(args.copy).resolve()
    save_path = Path(args.out).resolve().parent / f"official_{args.method}"
    save_path.mkdir(parents=True, exist_ok=True)
    stand_ins = install_stand_ins() if args.method == "idm" else []
    sys.path.insert(0, str(copy))
    data_utils = importlib.import_module(spec.data_module)  # their modules, from the copy
    loop_utils = importlib.import_module(spec.loop_module)

    def get_dataset(*_, **__):
        train = loop_utils.TensorDataset(data["train_images"], data["train_labels"])
        test = loop_utils.TensorDataset(data["test_images"], data["test_labels"])
        loader = torch.utils.data.DataLoader(test, batch_size=256, shuffle=False)
        channels, size = data["train_images"].shape[1], data["train_images"].shape[-1]
        common = (channels, (size, size), len(data["class_names"]), data["class_names"],
                  data["mean"], data["std"], train, test, loader)  # fmt: skip
        # IDM's get_dataset adds loader_train_dict, class_map, class_map_inv (unused here).
        return common + (None, None, None) if args.method == "idm" else common

    def evaluate_synset(it_eval, net, *_, **__):
        return net, 0.0, 0.0

    default_setting = loop_utils.get_default_convnet_setting

    def get_default_convnet_setting():
        _, depth, act, norm, pooling = default_setting()
        return args.width, depth, act, norm, pooling

    started: list[float] = []
    initial: list = []
    their_get_time = loop_utils.get_time

    def get_time():
        if not started:  # "training begins": their image_syn holds the initial images
            image_syn = inspect.currentframe().f_back.f_locals.get("image_syn")
            if image_syn is not None:
                initial.append(image_syn.detach().float().clone())
        started.append(time.perf_counter())
        return their_get_time()

    data_utils.get_dataset = get_dataset
    loop_utils.evaluate_synset = evaluate_synset
    loop_utils.get_default_convnet_setting = get_default_convnet_setting
    loop_utils.get_time = get_time

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    argv = their_argv(args, save_path)
    sys.argv = argv
    runpy.run_path(str(copy / argv[0]), run_name="__main__")
    finished = time.perf_counter()

    saved = sorted(save_path.glob("res_*.pt"))
    if not saved or not started:
        raise RuntimeError(f"{argv[0]} saved no res_*.pt in {save_path} or never started")
    images, labels = torch.load(saved[-1], weights_only=False)["data"][-1]
    return {
        "images": images.float().contiguous(),
        "labels": labels.long(),
        "initial_images": initial[0] if initial else None,
        "factor": 2 if args.method == "idm" else 1,  # IDM's --aug: 2 x 2 tiles an image
        "loop_seconds": finished - started[0],
        "seconds_per_step": (finished - started[0]) / args.steps,
        "argv": argv,
        "stand_ins": stand_ins,
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
    parser.add_argument("--ce-weight", type=float, default=0.5, help="IDM")
    parser.add_argument("--net-generate-interval", type=int, default=5, help="IDM")
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
        "factor": result["factor"],
        "step": args.steps,
        "init_indices": None,
        "config": data["config"],
    }
    out = Path(args.out)
    torch.save(record, out)
    if result["initial_images"] is not None:  # where their loop started: the initial images
        initial = {**record, "images": result["initial_images"], "step": 0}
        torch.save(initial, out.with_name(f"{out.stem}_init.pt"))
    timing = {key: result[key] for key in ("loop_seconds", "seconds_per_step", "argv", "stand_ins")}
    out.with_suffix(".json").write_text(json.dumps(timing, indent=2) + "\n")


if __name__ == "__main__":
    main()
