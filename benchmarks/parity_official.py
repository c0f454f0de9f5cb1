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

MTT (GeorgeCazenavette/mtt-distillation) runs `distill.py` as `__main__` through `run_mtt`:
our experts written as their `replay_buffer_0.pt`, `wandb` a stand-in that records the logged
step size, their ZCA skipped (our data arrive whitened; `kornia` a stand-in where absent).

NCFM (gszfwsb/NCFM) is a torchrun script over packages: `run_ncfm` runs their
`condense/condense_script.py` as `__main__` in one process (a gloo process group of one, on the
CPU), with our pool written as their `premodel<i>_{init,trained}.pth.tar` files and their
config's keys at the budget's values; what it replaces or wraps is listed in run_ncfm.

DANCE (Hansong-Zhang/DANCE, IDC's code) is run by `run_dance`: their DANCE.py as `__main__`,
with our pool as their premodel files; its CUDA device is moved to the CPU by METHOD_EDITS in
the scratch copy, and what it replaces or wraps is listed in run_dance. Their loop makes
`--niter` iterations, so it gets `steps`.

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

import parity_datm


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
    "ncfm": Official("gszfwsb/NCFM", "condense/condense_script.py",
                     ("condense/condense_script.py", "condenser/Condenser.py",
                      "condenser/compute_loss.py", "NCFM/NCFM.py", "NCFM/SampleNet.py",
                      "utils/utils.py", "utils/init_script.py", "utils/diffaug.py",
                      "data/dataloader.py", "data/dataset_statistics.py", "models/convnet.py"),
                     None, data_module="utils.utils", loop_module="condenser.Condenser"),
    "dance": Official("Hansong-Zhang/DANCE", "DANCE.py",
                      ("DANCE.py", "common.py", "data.py", "test.py", "train.py",
                       "misc/utils.py", "misc/augment.py", "models/convnet.py",
                       "arguments/arg_condense.py", "arguments/reproduce_condense.py"),
                      None, data_module="common", loop_module="DANCE"),
    "datm": Official(parity_datm.DATM_REPOSITORY, parity_datm.DATM_SCRIPT,
                     parity_datm.DATM_FILES, None, data_module="utils.utils_baseline",
                     loop_module="utils.utils_baseline"),
    "mtt": Official("GeorgeCazenavette/mtt-distillation", "distill.py",
                    ("distill.py", "utils.py", "networks.py", "reparam_module.py"), None),
    # RDED: benchmarks/parity_rded.py drives their synthesize.main.init_images.
    "rded": Official("LINs-lab/RDED", "main.py", ("argument.py", "synthesize/main.py",
                     "synthesize/utils.py", "synthesize/models.py", "validation/utils.py"), None),
}  # fmt: skip

# (file, pattern, replacement, why): applied to the scratch copy wherever the pattern occurs.
COMPAT_EDITS: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (
        ("utils.py", "dc_utils.py", "utils/utils_baseline.py"),
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
    (
        ("distill.py",),
        r"image_syn\.cuda\(\)",
        "image_syn.to(args.device)",
        "MTT's save step moves the images to CUDA, which a CPU run has not",
    ),
    *parity_datm.DATM_EDITS,
)


# DANCE (IDC's code): their CUDA device, edited to the CPU in the scratch copy, by method.
METHOD_EDITS: dict[str, tuple[tuple[tuple[str, ...], str, str, str], ...]] = {
    "dance": (
        (
            ("DANCE.py", "common.py", "data.py", "train.py"),
            r"device='cuda'",
            "device='cpu'",
            "their default device is CUDA (Synthesizer, condense, diffaug, ClassMemDataLoader; "
            "train.py's normalisation constants, made when test.py imports it)",
        ),
        (
            ("DANCE.py",),
            r"torch\.rand\(1\)\.cuda\(\)",
            "torch.rand(1)",
            "the interpolation weight l is moved to CUDA",
        ),
    ),
}


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


def prepare_copy(official: Path, destination: Path, method: str | None = None) -> list[str]:
    """Copy the checkout's Python files to `destination` and apply COMPAT_EDITS (and the
    method's METHOD_EDITS) there; returns a line for each edit that changed something."""
    destination.mkdir(parents=True, exist_ok=True)
    for source in official.rglob("*.py"):  # NCFM's code lives in packages (condenser/, NCFM/)
        relative = source.relative_to(official)
        if any(part.startswith(".") for part in relative.parts):
            continue
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination / relative)
    applied = []
    for names, pattern, replacement, why in COMPAT_EDITS + METHOD_EDITS.get(method or "", ()):
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


def replace_loop_functions(loop_utils, width: int, on_start=None) -> list[float]:
    """Replace their evaluate_synset (a no-op: both sets are scored later by ours) and
    get_default_convnet_setting (the budget's width), and wrap their get_time: its calls' clock
    readings go to the returned list, and its first call ("training begins") hands the calling
    frame to `on_start`."""
    default_setting = loop_utils.get_default_convnet_setting
    their_get_time = loop_utils.get_time
    started: list[float] = []

    def evaluate_synset(it_eval, net, *_, **__):
        return net, 0.0, 0.0

    def get_default_convnet_setting():
        _, depth, act, norm, pooling = default_setting()
        return width, depth, act, norm, pooling

    def get_time():
        if not started and on_start is not None:
            on_start(inspect.currentframe().f_back)
        started.append(time.perf_counter())
        return their_get_time()

    loop_utils.evaluate_synset = evaluate_synset
    loop_utils.get_default_convnet_setting = get_default_convnet_setting
    loop_utils.get_time = get_time
    return started


def run_official(args: argparse.Namespace) -> dict:
    """Run their script on the saved data; returns the synthetic set and the timing."""
    import importlib

    import numpy as np
    import torch

    from dmcondense.hostmem import reuse_freed_memory
    from dmcondense.sets import read_dc_res

    torch.set_num_threads(args.threads)
    reuse_freed_memory()  # the allocator setting every dmcondense job runs with
    data = torch.load(args.data, weights_only=True)
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

    initial: list = []

    def keep_initial(frame) -> None:  # "training begins": their image_syn holds the initial images
        image_syn = frame.f_locals.get("image_syn")
        if image_syn is not None:
            initial.append(image_syn.detach().float().clone())

    data_utils.get_dataset = get_dataset
    started = replace_loop_functions(loop_utils, args.width, keep_initial)

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    argv = their_argv(args, save_path)
    sys.argv = argv
    runpy.run_path(str(copy / argv[0]), run_name="__main__")
    finished = time.perf_counter()

    saved = sorted(save_path.glob("res_*.pt"))
    if not saved or not started:
        raise RuntimeError(f"{argv[0]} saved no res_*.pt in {save_path} or never started")
    images, labels = read_dc_res(saved[-1]).experiments[-1]  # the library's res_*.pt reader
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


# NCFM: their network's parameter names for ours (ConvNet: features.<d>.0 is block d's conv,
# features.<d>.1 its norm; theirs keeps convs and norms in layers.conv.<d> and layers.norm.<d>).
NCFM_KEYS = ((r"^features\.(\d+)\.0\.", r"layers.conv.\1."),
             (r"^features\.(\d+)\.1\.", r"layers.norm.\1."))  # fmt: skip


def their_pool_keys(state: dict) -> dict:
    """One of our pool's ConvNet state dicts under their ConvNet's parameter names."""
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in NCFM_KEYS:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def write_their_pool(pool: Path, size: int, folder: Path) -> list[str]:
    """Our pool's first `size` networks as their files: premodel<i>_init.pth.tar and
    premodel<i>_trained.pth.tar (state dicts, which their load_state_dict loads strictly)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(size):
        record = torch.load(pool / f"network_{index:03d}.pt", map_location="cpu", weights_only=True)
        for stage, key in (("init", "initial"), ("trained", "trained")):
            path = folder / f"premodel{index}_{stage}.pth.tar"
            torch.save(their_pool_keys(record[key]), path)
            written.append(path.name)
    return written


def ncfm_config(args: argparse.Namespace, data: dict, pretrain_dir: str, save_dir: Path) -> dict:
    """Their config/ipc10/cifar10.yaml with this budget's values (the condensation keys only;
    their training and evaluation keys are kept at the released values)."""
    images = data["train_images"]
    return {
        "distibution_train": {"backend": "gloo", "init_method": "env://", "workers": 0},
        "dataset": {"dataset": args.their_dataset, "nclass": len(data["class_names"]),
                    "size": int(images.shape[-1]), "data_dir": str(save_dir), "load_memory": True,
                    "batch_real": args.batch_real, "nch": int(images.shape[1])},
        "network": {"net_type": "convnet", "norm_type": "instance", "depth": 3,
                    "width": args.width / 128},  # their width is a multiple of 128 channels
        "train": {"evaluation_epochs": 2000, "epoch_print_freq": 10, "epoch_eval_interval": 100,
                  "pertrain_epochs": 60, "batch_size": 128, "lr": 0.01, "adamw_lr": 0.001,
                  "eval_optimizer": "adamw", "momentum": 0.9, "weight_decay": 5e-4,
                  "seed": args.seed, "model_num": args.pool_size},
        "augmentation": {"mixup": "cut", "beta": 1.0, "mix_p": 0.5, "rrc": True, "dsa": True,
                         "dsa_strategy": "color_crop_cutout_flip_scale_rotate",
                         "aug_type": args.strategy},
        # Their effective image rate is lr_img x lr_scale_adam under AdamW: --lr-img is that.
        "optimization": {"optimizer": "adamw", "lr_scale_adam": 0.1,
                         "lr_img": args.lr_img / 0.1, "mom_img": 0.5,
                         "lr_sampling_net": 1e-3},
        "save_path": {"save_dir": str(save_dir), "pretrain_dir": pretrain_dir},
        "condense": {"ipc": args.ipc, "num_premodel": args.pool_size, "niter": args.steps,
                     "iter_calib": 1, "calib_weight": 1, "sampling_net": args.sampling_net,
                     "num_freqs": args.num_freqs, "dis_metrics": "NCFM", "factor": 2,
                     "alpha_for_loss": 0.5, "beta_for_loss": 0.5, "decode_type": "single",
                     "teacher_model_epoch": 20},
    }  # fmt: skip


class MemoryDataset:
    """A training split as their ClassMemDataLoader reads a torchvision data set: (image,
    label) items of [0, 1] pixels, `targets` and `nclass`."""

    def __init__(self, images, labels, nclass: int) -> None:
        self.images, self.targets, self.nclass = images, labels.tolist(), nclass

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]

    def __len__(self) -> int:
        return len(self.targets)


def pool_loop_setup(args: argparse.Namespace, folder: str) -> tuple:
    """NCFM's and DANCE's common start: threads and allocator as our jobs run, the saved data,
    the scratch copy, their work folder, our split's mean and std [1, C, 1, 1], and the
    training images as the [0, 1] pixels their loops learn and read."""
    import torch

    from dmcondense.hostmem import reuse_freed_memory

    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    data = torch.load(args.data, weights_only=True)
    work = Path(args.out).resolve().parent / folder
    work.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor(data["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(data["std"]).view(1, -1, 1, 1)
    unit = data["train_images"] * std + mean
    return data, Path(args.copy).resolve(), work, mean, std, unit


def efficientnet_stand_in() -> list[str]:
    """IDC-based code (NCFM's, DANCE's) imports efficientnet_pytorch and uses it for no ConvNet:
    where it is not installed, an empty stand-in; the stand-ins made, for the row's edits."""
    import importlib.util
    import types

    if importlib.util.find_spec("efficientnet_pytorch") is not None:
        return []
    sys.modules["efficientnet_pytorch"] = types.SimpleNamespace(EfficientNet=None)
    return ["efficientnet_pytorch"]


def run_ncfm(args: argparse.Namespace) -> dict:
    """Run their condense_script.py as __main__ (one process, gloo, CPU) on the saved data with
    our pool; returns the synthetic set and the timing."""
    import importlib
    import random

    import numpy as np
    import torch
    import torch.distributed as dist

    data, copy, work, mean, std, unit = pool_loop_setup(args, "official_ncfm")
    nclass = len(data["class_names"])
    # set_Pretrain_Directory makes it ./<pretrain_dir>/<dataset>, relative to the working folder
    pool_files = write_their_pool(Path(args.pool), args.pool_size, work / "pretrained" /
                                  args.their_dataset)  # fmt: skip
    import yaml

    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(ncfm_config(args, data, "pretrained", work / "results")))

    stand_ins = efficientnet_stand_in()
    sys.path.insert(0, str(copy))
    statistics = importlib.import_module("data.dataset_statistics")
    init_script = importlib.import_module("utils.init_script")
    their_utils = importlib.import_module("utils.utils")
    diffaug_module = importlib.import_module("utils.diffaug")
    dataloader = importlib.import_module("data.dataloader")
    condenser_module = importlib.import_module("condenser.Condenser")
    sample_module = importlib.import_module("NCFM.SampleNet")
    statistics.MEANS[args.their_dataset] = list(data["mean"])  # our split's statistics
    statistics.STDS[args.their_dataset] = list(data["std"])
    device = torch.device("cpu")

    def initialize_distribution_training(backend="gloo", init_method="env://"):
        dist.init_process_group("gloo", init_method=f"file://{work / 'rendezvous'}", rank=0,
                                world_size=1)  # fmt: skip
        return 0, 1, 0, 1, device

    def get_loader(args_):
        train = MemoryDataset(unit, data["train_labels"], nclass)
        loader = dataloader.ClassMemDataLoader(train, batch_size=args_.batch_real, device=device)
        return loader, None

    their_diffaug = diffaug_module.diffaug

    def diffaug(args_, device_=None):
        return their_diffaug(args_, device=device)

    condenser_class = condenser_module.Condenser
    their_init, their_condense = condenser_class.__init__, condenser_class.condense
    timing: dict = {}

    def condenser_init(self, *given, **named):  # their main_worker asks for device="cuda"
        their_init(self, *given, **{**named, "device": device})

    def condense(self, args_, *rest, **kwargs):
        timing["initial"] = self.data.detach().clone()
        bound = inspect.signature(their_condense).bind(self, args_, *rest, **kwargs)
        sampler = bound.arguments.get("sampling_net")
        before = None if sampler is None else [p.detach().clone() for p in sampler.parameters()]
        timing["start"] = time.perf_counter()
        result = their_condense(self, args_, *rest, **kwargs)
        timing["end"] = time.perf_counter()
        timing["final"] = self.data.detach().clone()
        timing["targets"] = self.targets.detach().clone()
        if before is not None:  # did the sampling network learn? (max |after - before|)
            after = list(sampler.parameters())
            pairs = zip(after, before, strict=True)
            changes = [float((a.detach() - b).abs().max()) for a, b in pairs]
            timing["sampling_net_change"] = max(changes)
        return result

    sample_net_class = sample_module.SampleNet
    their_sample_init = sample_net_class.__init__

    def sample_net_init(self, feature_dim=2048, t_batchsize=64, t_var=1):
        # 2048 is ConvNet-128's feature size on 32x32 images: the budget's network gives its own.
        probe = their_utils.define_model(
            args.their_dataset, "instance", "convnet", unit.shape[1], 3, args.width / 128,
            nclass, None, unit.shape[-1])  # fmt: skip
        with torch.no_grad():
            dim = probe(unit[:1], return_features=True)[1].shape[1]
        their_sample_init(self, feature_dim=dim, t_batchsize=t_batchsize, t_var=t_var)

    init_script.initialize_distribution_training = initialize_distribution_training
    if args.real_batches == "random":
        draw_random_real(dataloader.AsyncLoader, dataloader.ClassMemDataLoader)
    if args.synthetic_batches == "when-used":
        read_synthetic_when_used(dataloader.AsyncLoader, condenser_class)
    their_utils.get_loader = get_loader
    diffaug_module.diffaug = diffaug
    condenser_class.__init__ = condenser_init
    condenser_class.condense = condense
    sample_net_class.__init__ = sample_net_init

    random.seed(args.seed)  # their pool pick (random.randint)
    np.random.seed(args.seed)  # their augmentation draws
    torch.manual_seed(args.seed)  # their l, frequencies and sampling-network noise
    argv = [str(copy / OFFICIAL["ncfm"].script), "--config_path", str(config), "--gpu", "0",
            "--ipc", str(args.ipc), "--init", "mix", "--aug_type", args.strategy]  # fmt: skip
    sys.argv = argv
    os.chdir(work)
    runpy.run_path(argv[0], run_name="__main__")
    if "final" not in timing:
        raise RuntimeError(f"{argv[0]} never ran its condensation loop")
    to_input = lambda pixels: (pixels - mean) / std  # noqa: E731  synthetic.pt: network input
    seconds = timing["end"] - timing["start"]
    return {
        "images": to_input(timing["final"]).float().contiguous(),
        "labels": timing["targets"].long(),
        "initial_images": to_input(timing["initial"]).float(),
        "factor": 2,
        "loop_seconds": seconds,
        "seconds_per_step": seconds / args.steps,
        "argv": argv,
        "stand_ins": stand_ins,
        "pool_files": pool_files,
        "sampling_net_change": timing.get("sampling_net_change"),
    }


def dance_argv(args: argparse.Namespace) -> list[str]:
    """Their DANCE.py command line for this budget: their README's `-d <data> --ipc N --factor
    2` with the budget's values in place of their reproduce preset; --test keeps their loop from
    saving pictures and scoring its initial set (it changes nothing in the loop). Their pool
    folder is no flag (their reproduce preset sets it): run_dance sets it on their parsed args."""
    return [
        OFFICIAL["dance"].script, "-d", args.their_dataset, "--ipc", str(args.ipc),
        "--factor", "2", "--niter", str(args.steps), "--lr_img", str(args.lr_img),
        "--batch_real", str(args.batch_real), "--num_premodel", str(args.pool_size),
        "--iter_calib", "1", "--net_type", "convnet",
        "--depth", "3", "--width", str(args.width / 128), "--norm_type", "instance",
        "--aug_type", args.strategy, "--seed", str(args.seed), "--workers", "0", "--test",
    ]  # fmt: skip


def run_dance(args: argparse.Namespace) -> dict:
    """Run their DANCE.py as __main__ on the saved data with our pool (their premodel files);
    returns the synthetic set and the timing.

    Replaced or wrapped, in their modules (the scratch copy's METHOD_EDITS move their CUDA
    device to the CPU):
        common.load_resized_data  our training split ([0, 1] pixels, in memory); no test loader
        test.test_data            does nothing: both sets are scored later by our evaluation
        misc.utils.TimeStamp      their own, wrapped: made just before their loop, it starts the
                                  clock and keeps their Synthesizer (its data at that moment are
                                  the initial images)
        data.MEANS / data.STDS    our split's statistics under their data set's name
    and `efficientnet_pytorch`, imported for no ConvNet, is a stand-in where absent."""
    import importlib
    import random

    import numpy as np
    import torch

    data, copy, work, mean, std, unit = pool_loop_setup(args, "official_dance")
    nclass = len(data["class_names"])
    pool_files = write_their_pool(Path(args.pool), args.pool_size, work / "pretrained")

    stand_ins = efficientnet_stand_in()
    sys.path.insert(0, str(copy))
    their_data = importlib.import_module("data")
    common = importlib.import_module("common")
    their_test = importlib.import_module("test")
    misc_utils = importlib.import_module("misc.utils")
    their_data.MEANS[args.their_dataset] = list(data["mean"])
    their_data.STDS[args.their_dataset] = list(data["std"])

    def load_resized_data(args_):
        return MemoryDataset(unit, data["train_labels"], nclass), None

    def test_data(*_, **__):
        return 0.0

    timing: dict = {}
    their_stamp = misc_utils.TimeStamp

    class TimeStamp(their_stamp):
        def __init__(self, *given, **named):
            synset = inspect.currentframe().f_back.f_locals.get("synset")
            if synset is not None and "synset" not in timing:
                timing["synset"] = synset
                timing["initial"] = synset.data.detach().clone()
                timing["start"] = time.perf_counter()
            super().__init__(*given, **named)

    common.load_resized_data = load_resized_data
    their_test.test_data = test_data
    misc_utils.TimeStamp = TimeStamp

    random.seed(args.seed)  # their pool pick (random.randint)
    np.random.seed(args.seed)  # their augmentation draws
    torch.manual_seed(args.seed)  # their l and the noise their Synthesizer starts from
    argv = dance_argv(args)
    sys.argv = [str(copy / argv[0]), *argv[1:]]
    # Their arguments are parsed when DANCE.py imports arguments.arg_condense: parse them here
    # (the same module object) and add the pool folder, which only their --reproduce sets.
    importlib.import_module("arguments.arg_condense").args.pretrain_dir = str(work / "pretrained")
    os.chdir(work)
    runpy.run_path(sys.argv[0], run_name="__main__")
    finished = time.perf_counter()
    if "synset" not in timing:
        raise RuntimeError(f"{argv[0]} never reached its condensation loop")
    synset = timing["synset"]
    to_input = lambda pixels: (pixels - mean) / std  # noqa: E731  synthetic.pt: network input
    seconds = finished - timing["start"]
    return {
        "images": to_input(synset.data.detach()).float().contiguous(),
        "labels": synset.targets.detach().long(),
        "initial_images": to_input(timing["initial"]).float(),
        "factor": 2,
        "loop_seconds": seconds,
        "seconds_per_step": seconds / args.steps,
        "argv": argv,
        "stand_ins": stand_ins,
        "pool_files": pool_files,
    }


def draw_random_real(async_loader: type, memory_loader: type) -> None:
    """Their AsyncLoader asks the real loader for `class_sample(c, batch_real)`, and a size asks
    for the first images of the class: every iteration matches the same batch_real images.
    Their paper, and ours, match a fresh random batch: with this, the real loader's size is
    dropped, so its own per-class random sampler draws each batch. The synthetic loader and
    the initial images (`class_sample(c, ipc)` on the loader itself) are left as they are."""
    their_init = async_loader.__init__

    class RandomClassBatches:
        def __init__(self, loader):
            self.loader = loader

        def class_sample(self, c, ipc=-1):
            return self.loader.class_sample(c)

    def init(self, loader_real, *given, **named):
        if isinstance(loader_real, memory_loader):
            loader_real = RandomClassBatches(loader_real)
        their_init(self, loader_real, *given, **named)

    async_loader.__init__ = init


def read_synthetic_when_used(async_loader: type, condenser: type) -> None:
    """Their AsyncLoader also serves the synthetic images: its thread decodes each class's
    images ahead of use into a queue of 10, one class after another, so the images a step
    matches were read before that class's previous step updated them (the gradient is taken at
    the images of one step earlier). With this, the synthetic loader's thread is stopped and
    each call decodes the class's images as they are when asked. The real loader is left as it
    is."""
    their_init, their_sample = async_loader.__init__, async_loader.class_sample

    def init(self, loader, *given, **named):
        their_init(self, loader, *given, **named)
        self.read_when_used = isinstance(loader, condenser)
        if self.read_when_used:
            self.stop()

    def class_sample(self, c):
        if getattr(self, "read_when_used", False):
            return self.loader_real.class_sample(c, self.batch_size)
        return their_sample(self, c)

    async_loader.__init__ = init
    async_loader.class_sample = class_sample


class WandbStandIn:
    """Stand-in for the `wandb` module MTT's distill.py calls: `init` keeps the config (their
    script rebuilds its args from `wandb.config._items`), `log` keeps the logged step size by
    step and, as the clock of their loop, the wall and CPU time and the peak resident memory
    when each iteration logs it (after that iteration's evaluation and saves, before its update);
    the rest does nothing."""

    def __init__(self) -> None:
        import types

        self.config = types.SimpleNamespace(_items={})
        self.run = types.SimpleNamespace(name="parity")
        self.step_sizes: dict[int, float] = {}
        self.marks: list[tuple[float, float, float]] = []  # (wall, cpu, peak MiB) by iteration

    def init(self, config=None, **_) -> None:
        self.config._items = dict(vars(config))

    def log(self, values: dict, step: int | None = None) -> None:
        if "Synthetic_LR" in values and step is not None:
            self.marks.append(clock_mark())
            self.step_sizes[step] = float(values["Synthetic_LR"])

    def Histogram(self, *_, **__) -> None:  # noqa: N802 (their API's name)
        return None

    def Image(self, *_, **__) -> None:  # noqa: N802
        return None

    def finish(self) -> None:
        return None


def clock_mark() -> tuple[float, float, float]:
    """Wall seconds, this process's CPU seconds and its peak resident memory (MiB), now."""
    from dmcondense.hostmem import peak_resident_mib

    return time.perf_counter(), time.process_time(), peak_resident_mib()


def iteration_clock(marks: list[tuple[float, float, float]]) -> dict:
    """Their loop's iterations from its marks (one when each iteration logs its step size, one
    after the loop): the wall and CPU seconds of each iteration but the first, which pays the
    one-off costs (as benchmarks/clocked_train.py times ours), and the peak resident memory
    before the first update and after the last."""
    pairs = list(zip(marks[1:-1], marks[2:], strict=True))
    return {
        "iteration_seconds": [b[0] - a[0] for a, b in pairs],
        "iteration_cpu_seconds": [b[1] - a[1] for a, b in pairs],
        "rss_before_loop_mib": marks[0][2],
        "rss_after_loop_mib": marks[-1][2],
    }


def write_their_buffer(experts: Path, size: int, shapes: list, folder: Path) -> Path:
    """Our first `size` experts (expert_<i>.pt: flat trajectories) as their replay_buffer_0.pt:
    a list of trajectories, each a list (epoch) of lists of parameter tensors shaped as their
    network's parameters (the same order: named_parameters)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    numels = [int(torch.Size(s).numel()) for s in shapes]
    buffer = []
    for index in range(size):
        record = torch.load(
            experts / f"expert_{index:03d}.pt", map_location="cpu", weights_only=True
        )
        trajectory = []
        for flat in record["trajectory"]:
            parts = flat.split(numels)
            trajectory.append([p.reshape(s).clone() for p, s in zip(parts, shapes, strict=True)])
        buffer.append(trajectory)
    path = folder / "replay_buffer_0.pt"
    torch.save(buffer, path)
    return path


def run_mtt(args: argparse.Namespace) -> dict:
    """Their distill.py on the saved data and our experts. Their loop makes Iteration + 1
    updates and saves the images (and here, through the wandb stand-in, the step size) at the
    evaluation iterations, before that iteration's update: with --Iteration steps and --eval_it
    steps the set of iteration `steps` has `steps` updates, and that of iteration 0 is where the
    loop started."""
    import importlib
    import importlib.util
    import random
    import types

    import numpy as np
    import torch

    from dmcondense.hostmem import reuse_freed_memory

    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    data = torch.load(args.data, weights_only=False)
    copy = Path(args.copy).resolve()
    work = Path(args.out).resolve().parent / "official_mtt"
    work.mkdir(parents=True, exist_ok=True)
    wandb = WandbStandIn()
    module = types.ModuleType("wandb")
    for name in ("init", "log", "Histogram", "Image", "finish"):
        setattr(module, name, getattr(wandb, name))
    module.config, module.run = wandb.config, wandb.run
    sys.modules["wandb"] = module
    stand_ins = ["wandb"]
    if importlib.util.find_spec("kornia") is None:
        sys.modules["kornia"] = types.ModuleType("kornia")
        stand_ins.append("kornia")
    sys.path.insert(0, str(copy))
    utils = importlib.import_module("utils")
    channels, size = data["train_images"].shape[1], data["train_images"].shape[-1]
    classes = len(data["class_names"])

    def get_dataset(*_, **__):
        train = utils.TensorDataset(data["train_images"], data["train_labels"])
        test = utils.TensorDataset(data["test_images"], data["test_labels"])
        loader = torch.utils.data.DataLoader(test, batch_size=256, shuffle=False)
        mapping = {c: c for c in range(classes)}
        return (channels, (size, size), classes, data["class_names"], data["mean"], data["std"],
                train, test, loader, None, mapping, mapping)  # fmt: skip

    scores = []

    def evaluate_synset(it_eval, net, *_, **__):
        scores.append(len(scores) + 1.0)  # rising: their loop saves the set at each evaluation
        return net, [0.0], scores[-1]

    default_setting = utils.get_default_convnet_setting

    def get_default_convnet_setting():
        _, depth, act, norm, pooling = default_setting()
        return args.width, depth, act, norm, pooling

    started: list[float] = []
    their_get_time = utils.get_time

    def get_time():
        started.append(time.perf_counter())
        return their_get_time()

    utils.get_dataset = get_dataset
    utils.evaluate_synset = evaluate_synset
    utils.get_default_convnet_setting = get_default_convnet_setting
    utils.get_time = get_time

    net = utils.get_network("ConvNet", channels, classes, (size, size), dist=False)
    shapes = [tuple(p.shape) for p in net.parameters()]
    folder = args.their_dataset + (
        "_NO_ZCA" if args.their_dataset in ("CIFAR10", "CIFAR100") else ""
    )
    buffer = write_their_buffer(Path(args.experts), args.experts_size, shapes,
                                work / "buffers" / folder / "ConvNet")  # fmt: skip

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    argv = [
        "distill.py", "--dataset", args.their_dataset, "--model", "ConvNet",
        "--ipc", str(args.ipc), "--eval_mode", "S", "--num_eval", "1",
        "--eval_it", str(args.steps), "--epoch_eval_train", "1", "--Iteration", str(args.steps),
        "--lr_img", str(args.lr_img), "--lr_lr", str(args.lr_lr),
        "--lr_teacher", str(args.lr_teacher), "--pix_init", args.init, "--dsa", "True",
        "--dsa_strategy", args.strategy, "--data_path", str(work),
        "--buffer_path", str(work / "buffers"), "--expert_epochs", str(args.expert_epochs),
        "--syn_steps", str(args.syn_steps), "--max_start_epoch", str(args.max_start_epoch),
    ]  # fmt: skip
    if args.batch_syn:
        argv += ["--batch_syn", str(args.batch_syn)]
    sys.argv = argv
    os.chdir(work)  # their images go to ./logged_files/<dataset>/<run name>/
    runpy.run_path(str(copy / "distill.py"), run_name="__main__")
    finished = time.perf_counter()
    wandb.marks.append(clock_mark())

    logged = work / "logged_files" / args.their_dataset / wandb.run.name
    final, first = logged / f"images_{args.steps}.pt", logged / "images_0.pt"
    if not final.is_file() or not started:
        raise RuntimeError(f"distill.py saved no {final.name} in {logged} or never started")
    return {
        # their saves keep image_syn's requires_grad: detached here
        "images": torch.load(final, weights_only=False).detach().float().contiguous(),
        "labels": torch.load(logged / f"labels_{args.steps}.pt", weights_only=False).long(),
        "initial_images": torch.load(first, weights_only=False).detach().float().contiguous(),
        "initial_lr": args.lr_teacher,
        "lr": wandb.step_sizes[args.steps],
        "factor": 1,
        "loop_seconds": finished - started[0],
        "seconds_per_step": (finished - started[0]) / (args.steps + 1),
        **iteration_clock(wandb.marks),
        "argv": argv,
        "stand_ins": stand_ins,
        "buffer": str(buffer),
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
    parser.add_argument("--init", choices=("real", "noise", "correct"), required=True)
    parser.add_argument("--strategy", required=True, help="their --dsa_strategy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ce-weight", type=float, default=0.5, help="IDM")
    parser.add_argument("--net-generate-interval", type=int, default=5, help="IDM")
    parser.add_argument("--pool", help="NCFM, RDED, DANCE: our pool folder (network_<i>.pt)")
    parser.add_argument("--experts", help="MTT: our experts' folder (expert_<i>.pt)")
    parser.add_argument("--experts-size", type=int, default=4, help="MTT: experts to use")
    parser.add_argument("--syn-steps", type=int, default=20, help="MTT")
    parser.add_argument("--expert-epochs", type=int, default=3, help="MTT")
    parser.add_argument("--max-start-epoch", type=int, default=25, help="MTT")
    parser.add_argument("--lr-lr", type=float, default=1e-5, help="MTT")
    parser.add_argument("--lr-teacher", type=float, default=0.01, help="MTT")
    parser.add_argument("--batch-syn", type=int, default=0, help="MTT; 0: all images")
    parser.add_argument("--num-crop", type=int, default=5, help="RDED: crops an image")
    parser.add_argument("--crop-factor", type=int, default=1, help="RDED: crops a side")
    parser.add_argument("--pool-size", type=int, default=4, help="NCFM, DANCE: pool networks")
    parser.add_argument("--num-freqs", type=int, default=4096, help="NCFM")
    parser.add_argument("--sampling-net", action="store_true", help="NCFM: their min-max")
    parser.add_argument(
        "--real-batches",
        choices=("first", "random"),
        default="first",
        help="NCFM: their loader's real batch of a class (see draw_random_real)",
    )
    parser.add_argument(
        "--synthetic-batches",
        choices=("prefetched", "when-used"),
        default="prefetched",
        help="NCFM: when their loader reads the synthetic images (see read_synthetic_when_used)",
    )
    parity_datm.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    here = os.getcwd()
    try:
        if args.method == "rded":
            from parity_rded import run_rded

            result = run_rded(args)
        else:
            runners = {
                "ncfm": run_ncfm,
                "dance": run_dance,
                "mtt": run_mtt,
                "datm": parity_datm.run_datm,
            }
            runner = runners.get(args.method, run_official)
            result = runner(args)
    finally:
        os.chdir(here)
    import torch

    data = torch.load(args.data, weights_only=True)
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
        **({"lr": result["lr"]} if "lr" in result else {}),  # MTT: their learned step size
        **({"pixels": "zca", "zca": data["zca"]} if data.get("zca") is not None else {}),
        **result.get("fields", {}),  # DATM: soft_labels and lr, learned beside the images
    }
    out = Path(args.out)
    torch.save(record, out)
    if result["initial_images"] is not None:  # where their loop started: the initial images
        initial = {**record, "images": result["initial_images"], "step": 0,
                   **result.get("initial_fields", {})}  # fmt: skip
        if "initial_lr" in result:
            initial["lr"] = result["initial_lr"]
        torch.save(initial, out.with_name(f"{out.stem}_init.pt"))
    keys = ("loop_seconds", "seconds_per_step", "argv", "stand_ins", "sampling_net_change")
    clock = ("iteration_seconds", "iteration_cpu_seconds", "rss_before_loop_mib",
             "rss_after_loop_mib")  # fmt: skip
    timing = {key: result.get(key) for key in keys} | {k: result[k] for k in clock if k in result}
    out.with_suffix(".json").write_text(json.dumps(timing, indent=2) + "\n")


if __name__ == "__main__":
    main()
