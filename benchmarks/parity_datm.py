"""The DATM side of benchmarks/parity_official.py: run the authors' `distill/DATM.py` on our data
and our experts.

Nothing of their code is kept in this repository. `run_datm` imports their modules from the
patched scratch copy (`prepare_copy`, with the edits of parity_official.COMPAT_EDITS that touch
their files), writes our experts as their replay buffers, writes their yacs config with the
budget's values, replaces or wraps a few of their functions and runs their script unchanged as
`__main__`:

    get_dataset                  returns our training split (the tensors the harness saved),
                                 already whitened where our run whitens (dataset.zca)
    evaluate_synset              does nothing: both sets are scored later by our evaluation
    get_default_convnet_setting  returns the ConvNet width of the budget
    get_time                     their own, wrapped: its first call ("training begins") starts
                                 the clock of the loop
    wandb                        a stand-in: `init` keeps the config their script rebuilds its
                                 arguments from; the first `log` of their loop keeps the
                                 initial images, soft labels and step size (`--score-init`),
                                 `finish` the final ones; each iteration's `log` of its step
                                 size, and `finish`, mark the clock of each iteration
                                 (benchmarks/mtt_step_time.py --method datm)
    yacs, kornia                 small stand-ins where they are not installed (their CfgNode's
                                 merge_from_file; kornia is imported for ZCA only)

Their experts: `<buffer_path>/<dataset>/<model>/replay_buffer_<n>.pt`, lists of trajectories,
each a list of snapshots, each a list of parameter tensors. Their loop flattens each snapshot
(torch.cat of every tensor reshaped to -1) in their ReparamModule's order, which is the order of
`named_parameters()`, ours too; so one flat tensor a snapshot is what their loop reads. Ten
experts a file, as their buffer script saves them (their initialisation finds expert i in file
i // 10).

Their script makes `Iteration + 1` updates; the adapter passes `steps - 1`. Their evaluation
interval is set past the last iteration, so no evaluation runs and no file is saved by them.
"""

from __future__ import annotations

import argparse
import inspect
import os
import runpy
import sys
import time
import types
from pathlib import Path

DATM_REPOSITORY = "NUS-HPC-AI-Lab/DATM"
DATM_SCRIPT = "distill/DATM.py"
DATM_FILES = (
    "distill/DATM.py",
    "utils/utils_baseline.py",
    "utils/cfg.py",
    "networks.py",
    "reparam_module.py",
)
EXPERTS_A_FILE = 10  # their buffer script's save_interval
# Marks the modules install_stand_ins made, so a second run in one process knows them.
STAND_IN = "_dmcondense_stand_in"
# Edits of their files in the scratch copy (file, pattern, replacement, why), added to
# parity_official.COMPAT_EDITS.
DATM_EDITS: tuple[tuple[tuple[str, ...], str, str, str], ...] = (
    (
        ("distill/DATM.py",),
        r'torch\.device\("cuda:0"\)',
        "torch.device(args.device)",
        "their initialisation and evaluation name cuda:0 outright; the CPU runs them here",
    ),
    (
        ("distill/DATM.py",),
        r"^(\s*)manual_seed\(\)$",
        r'\1manual_seed(int(os.environ.get("PARITY_SEED", "0")))',
        "their seed is fixed at 0 in main(); the harness's --seed reaches it through the "
        "environment (their get_network still reseeds torch from the clock, as published)",
    ),
)


class CfgNode(dict):
    """Stand-in for yacs.config.CfgNode: attribute access and merge_from_file, which (as yacs)
    refuses keys the defaults lack and keeps a default's type where the file's value is an
    int for a float."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error

    def __setattr__(self, name: str, value) -> None:
        self[name] = value

    def merge_from_file(self, path: str) -> None:
        import yaml

        with open(path) as handle:
            loaded = yaml.safe_load(handle) or {}
        for key, value in loaded.items():
            if key not in self:
                raise KeyError(f"Non-existent config key: {key}")
            default = self[key]
            if isinstance(default, float) and isinstance(value, int):
                value = float(value)
            self[key] = value


class WandbStandIn(types.ModuleType):
    """Stand-in for wandb: keeps the config (their script rebuilds `args` from
    `wandb.config._items`), the state of their loop at its first `log` inside the loop and at
    `finish` (the locals of the calling frame), and a clock mark (parity_official.clock_mark)
    when each iteration logs its step size (before that iteration's update) and at `finish`."""

    def __init__(self) -> None:
        super().__init__("wandb")
        self.config = types.SimpleNamespace(_items={})
        self.run = types.SimpleNamespace(name="parity")
        self.states: dict[str, dict] = {}
        self.marks: list[tuple[float, float, float]] = []  # (wall, cpu, peak MiB)

    def _mark(self) -> None:
        from parity_official import clock_mark  # its neighbour (imports this one)

        self.marks.append(clock_mark())

    def init(self, config=None, **_) -> types.SimpleNamespace:
        items = dict(vars(config)) if config is not None else {}
        self.config = types.SimpleNamespace(_items=items)
        return self.run

    def _keep(self, key: str, frame) -> None:
        names = ("image_syn", "label_syn", "syn_lr")
        found = {n: frame.f_locals.get(n) for n in names}
        if all(v is not None for v in found.values()):
            self.states[key] = {n: v.detach().float().clone() for n, v in found.items()}

    def log(self, data: dict, step=None, **_) -> None:
        if "Progress" in data and "initial" not in self.states:
            self._keep("initial", inspect.currentframe().f_back)
        if "Synthetic_LR" in data:
            self._mark()

    def finish(self) -> None:
        self._mark()
        self._keep("final", inspect.currentframe().f_back)

    @staticmethod
    def Histogram(*_, **__) -> None:  # noqa: N802  (their names)
        return None

    @staticmethod
    def Image(*_, **__) -> None:  # noqa: N802
        return None


def install_stand_ins() -> tuple[WandbStandIn, list[str]]:
    """wandb always (their script needs a run); yacs and kornia where not installed."""
    wandb = WandbStandIn()
    sys.modules["wandb"] = wandb
    return wandb, ["wandb", *install_missing(("yacs", "kornia"))]


def install_missing(names: tuple[str, ...]) -> list[str]:
    """Stand-ins for those of `names` (yacs, kornia) that are not installed; returns the names
    stood in for. A stand-in an earlier run in this process installed is still the module their
    script imports, so it is listed again."""
    import importlib.util

    installed = []
    for name in names:
        if getattr(sys.modules.get(name), STAND_IN, False):
            installed.append(name)
        elif name not in sys.modules and importlib.util.find_spec(name) is None:
            module = types.ModuleType(name)
            setattr(module, STAND_IN, True)
            sys.modules[name] = module
            if name == "yacs":
                module.config = types.SimpleNamespace(CfgNode=CfgNode)
                sys.modules["yacs.config"] = module.config
            installed.append(name)
    return installed


def write_their_buffers(experts: list, folder: Path) -> list[str]:
    """Trajectories [epochs + 1, P] (ours, flat in named_parameters order) as their
    replay_buffer_<n>.pt files of EXPERTS_A_FILE experts, one flat tensor a snapshot."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for n, start in enumerate(range(0, len(experts), EXPERTS_A_FILE)):
        chunk = [[[snapshot.clone()] for snapshot in trajectory]
                 for trajectory in experts[start : start + EXPERTS_A_FILE]]  # fmt: skip
        path = folder / f"replay_buffer_{n}.pt"
        torch.save(chunk, path)
        written.append(path.name)
    return written


def datm_config(args: argparse.Namespace, buffer_path: Path, num_classes: int) -> dict:
    """Their yacs config (configs/<data set>/ConvIN/IPC<n>.yaml's keys) at the budget's values."""
    config = {
        "dataset": args.their_dataset,
        "model": "ConvNet",
        "ipc": args.ipc,
        "syn_steps": args.syn_steps,
        "expert_epochs": args.expert_epochs,
        "min_start_epoch": args.min_start_epoch,
        "max_start_epoch": args.max_start_epoch,
        "Sequential_Generation": args.initial_max_start_epoch is not None,
        "lr_img": args.lr_img,
        "lr_teacher": args.lr_teacher,
        "lr_lr": args.lr_lr,
        "lr_y": args.lr_y,
        "Momentum_y": args.momentum_y,
        "threshold": args.threshold,
        "pix_init": "samples_predicted_correctly" if args.init == "correct" else "real",
        "batch_syn": args.batch_syn or num_classes * args.ipc,
        "Iteration": args.steps - 1,
        "eval_it": args.steps + 1,  # past the last iteration: no evaluation, nothing saved
        "skip_first_eva": True,
        "num_eval": 1,
        "buffer_path": str(buffer_path),
        "data_path": str(buffer_path),
        "zca": bool(args.zca),
        "dsa": True,
        "dsa_strategy": args.strategy,
        "device": [0],
        "project": "parity",
    }
    if args.initial_max_start_epoch is not None:
        config["current_max_start_epoch"] = args.initial_max_start_epoch
        config["expansion_end_epoch"] = args.expansion_end
    return config


def their_buffer_folder(args: argparse.Namespace) -> str:
    """The folder their loop reads the experts from: CIFAR's name says whether the data are
    whitened (theirs: `<dataset>_NO_ZCA` without ZCA)."""
    unwhitened = args.their_dataset in ("CIFAR10", "CIFAR100") and not args.zca
    return args.their_dataset + ("_NO_ZCA" if unwhitened else "")


def run_datm(args: argparse.Namespace) -> dict:
    """Run their DATM.py as __main__ on the saved data with our experts; returns the synthetic
    set (images, hard labels, soft labels, step size) and the timing."""
    import importlib

    import torch
    import yaml

    from dmcondense.hostmem import reuse_freed_memory

    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    data = torch.load(args.data, weights_only=False)
    experts = load_trajectories(args.experts, args.experts_size)
    copy = Path(args.copy).resolve()
    work = Path(args.out).resolve().parent / "official_datm"
    buffer_path = work / "buffers"
    num_classes = len(data["class_names"])
    buffers = write_their_buffers(experts, buffer_path / their_buffer_folder(args) / "ConvNet")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(datm_config(args, buffer_path, num_classes)))

    wandb, stand_ins = install_stand_ins()
    sys.path.insert(0, str(copy))
    loop_utils = importlib.import_module("utils.utils_baseline")

    def get_dataset(*_, args=None, **__):
        train = loop_utils.TensorDataset(data["train_images"], data["train_labels"])
        test = loop_utils.TensorDataset(data["test_images"], data["test_labels"])
        loader = torch.utils.data.DataLoader(test, batch_size=256, shuffle=False)
        channels, size = data["train_images"].shape[1], data["train_images"].shape[-1]
        if args is not None and getattr(args, "zca", False):
            args.zca_trans = None  # read only to save unwhitened pictures, which never happens
        identity = {c: c for c in range(num_classes)}
        return (channels, (size, size), num_classes, data["class_names"], data["mean"],
                data["std"], train, test, loader, None, identity, identity)  # fmt: skip

    from parity_official import iteration_clock, replace_loop_functions  # its neighbour

    loop_utils.get_dataset = get_dataset
    started = replace_loop_functions(loop_utils, args.width)

    os.environ["PARITY_SEED"] = str(args.seed)
    argv = [str(copy / DATM_SCRIPT), "--cfg", str(config)]
    sys.argv = argv
    os.chdir(copy / "distill")
    runpy.run_path(argv[0], run_name="__main__")
    finished = time.perf_counter()
    if "final" not in wandb.states or not started:
        raise RuntimeError(f"{argv[0]} never finished its loop")
    final, initial = wandb.states["final"], wandb.states.get("initial")
    labels = torch.arange(num_classes).repeat_interleave(args.ipc)
    seconds = finished - started[0]
    return {
        "images": final["image_syn"].contiguous(),
        "labels": labels,
        "fields": {"soft_labels": final["label_syn"], "lr": float(final["syn_lr"])},
        "initial_images": None if initial is None else initial["image_syn"],
        "initial_fields": {} if initial is None else {
            "soft_labels": initial["label_syn"], "lr": float(initial["syn_lr"]),
        },
        "factor": 1,
        "loop_seconds": seconds,
        "seconds_per_step": seconds / args.steps,
        **iteration_clock(wandb.marks),
        "argv": argv,
        "stand_ins": stand_ins,
        "buffers": buffers,
    }  # fmt: skip


# --- the harness's side (benchmarks/parity.py) -------------------------------------------------
DATM_DEFAULTS = {"lr_img": 100.0, "init": "correct"}  # their CIFAR-10 IPC 1 and 10 configs
# The flags of both sides (harness name, adapter flag, method key, default).
DATM_SETTINGS = (
    ("syn_steps", "--syn-steps", "syn_steps", 20),
    ("expert_epochs", "--expert-epochs", "expert_epochs", 2),
    ("min_start_epoch", "--min-start-epoch", "min_start_epoch", 0),
    ("max_start_epoch", "--max-start-epoch", "max_start_epoch", 2),
    ("initial_max_start_epoch", "--initial-max-start-epoch", "initial_max_start_epoch", None),
    ("expansion_end", "--expansion-end", "expansion_end", 1000),
    ("lr_teacher", "--lr-teacher", "lr_teacher", 0.01),
    ("lr_lr", "--lr-lr", "lr_lr", 1e-5),
    ("lr_y", "--lr-y", "lr_y", 2.0),
    ("momentum_y", "--momentum-y", "momentum_y", 0.9),
    ("threshold", "--threshold", "threshold", 1.0),
    ("batch_syn", "--batch-syn", "batch_syn", None),
)


def add_settings(parser: argparse.ArgumentParser, own_only: bool = False) -> None:
    """The DATM settings as flags (`own_only`: those it does not share with MTT)."""
    for name, flag, _, default in DATM_SETTINGS:
        if own_only and name in SHARED:
            continue
        kind = float if isinstance(default, float) else int
        parser.add_argument(flag, type=kind, default=default, help=f"DATM (default {default})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """parity_official.py's DATM flags: its own settings (MTT's flags give the shared ones and
    --experts, our experts' folder, and --experts-size, how many of them both sides use)."""
    add_settings(parser, own_only=True)
    if "--zca" not in parser._option_string_actions:
        parser.add_argument("--zca", action="store_true", help="DATM: the data are whitened")


SHARED = ("syn_steps", "expert_epochs", "max_start_epoch", "lr_teacher", "lr_lr", "batch_syn")


def add_harness_arguments(parser: argparse.ArgumentParser) -> None:
    """parity.py's DATM flags: DATM's own settings (the ones it shares with MTT, and the
    experts' size and epochs, are parity.py's MTT flags) and the experts' recipe."""
    add_settings(parser, own_only=True)
    parser.add_argument("--expert-recipe", choices=("gsam", "default"), default="gsam",
                        help="DATM: the experts group (gsam: their buffer_FTD.py)")  # fmt: skip


def harness_overrides(args: argparse.Namespace) -> list[str]:
    """Our overrides for method=datm at the budget (the experts in the harness's data cache)."""
    overrides = [f"experts={args.expert_recipe}", "eval.protocol=mtt"]
    for name, _, key, _ in DATM_SETTINGS:
        if name not in SHARED:
            value = getattr(args, name)
            overrides.append(f"method.{key}={'null' if value is None else value}")
    return overrides


def adapter_flags(args: argparse.Namespace) -> list[str]:
    """parity_official.py's flags of DATM's own settings at the budget."""
    flags = []
    for name, flag, _, _ in DATM_SETTINGS:
        value = getattr(args, name)
        if name not in SHARED and value is not None:  # None: no widening, their default
            flags += [flag, str(value)]
    return flags


def budget_tokens(args: argparse.Namespace) -> tuple[str, str]:
    """(file-name token, budget text) of the DATM settings a row ran with."""
    window = (f"{args.min_start_epoch}-{args.max_start_epoch}" if args.initial_max_start_epoch
              is None else f"{args.min_start_epoch}-{args.initial_max_start_epoch}>"
              f"{args.max_start_epoch}/{args.expansion_end}")  # fmt: skip
    token = (f"syn{args.syn_steps}_ee{args.expert_epochs}_st{window.replace('>', 'to')}"
             f"_x{args.experts_size}x{args.experts_epochs}{args.expert_recipe}")  # fmt: skip
    text = (
        f"syn_steps {args.syn_steps}, expert_epochs {args.expert_epochs}, start {window}, "
        f"{args.experts_size} {args.expert_recipe} experts x {args.experts_epochs} ep"
    )
    return token, text


def load_trajectories(folder: Path | str, count: int | None = None) -> list:
    """Our experts' trajectories [epochs + 1, P] (expert_<i>.pt in `folder`, the first `count`)."""
    import torch

    paths = sorted(Path(folder).glob("expert_*.pt"))[:count]
    if not paths:
        raise RuntimeError(f"no experts in {folder}")
    return [torch.load(p, map_location="cpu", weights_only=True)["trajectory"] for p in paths]


def initial_fields(record: dict, experts: Path, images) -> dict:
    """The soft labels and step size our run started from (for --score-init): recomputed from
    the experts as the method makes them (methods/datm.py: initial_soft_labels)."""
    import torch
    from omegaconf import OmegaConf

    from dmcondense.data.spec import DatasetSpec
    from dmcondense.jobs import build
    from dmcondense.methods.datm import initial_soft_labels

    cfg = OmegaConf.create(record["config"])
    spec = DatasetSpec.from_config(cfg.dataset, zca=record.get("zca"))  # the run's whitening
    net = build.embedding_network(cfg, spec)
    trajectories = load_trajectories(experts, int(cfg.experts.size))
    labels = torch.arange(len(record["class_names"])).repeat_interleave(record["ipc"])
    soft = initial_soft_labels(net, trajectories, images, labels, cfg.method.label_init)
    return {"soft_labels": soft, "lr": float(cfg.method.lr_teacher)}
