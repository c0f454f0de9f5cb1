"""Parity with the authors' code: condense with theirs and with ours, score both with ours.

    python benchmarks/parity.py --method dsa --official /path/to/DatasetCondensation \
        --dataset mnist_sample --ipc 1 --steps 100 --batch-real 256 --width 128 \
        --eval-models 3 --eval-epochs 300

Both sides condense the same training split with the same budget (steps, batch_real, ConvNet
width, lr_img, init, DSA strategy); ours runs `python -m dmcondense.train`, theirs runs their own
script through benchmarks/parity_official.py (their code is imported from a patched scratch
copy of --official, never from this repository). Both synthetic sets are then scored by our
evaluation library, with one protocol and one seed, so only the condensation differs. The
harness prints both accuracies with their std, the gap (ours - theirs) and the seconds per
condensation step of each, and writes a row of benchmarks/results/parity.md and a JSON file in
benchmarks/results named by method, data set, IPC and budget (`results_name`; e.g.
parity_dm_mnist_sample_ipc10_100st_b64_w64_1r_3x300ep.json, settings changed from their
defaults such as --seed or --lr-img added before the runs). `--score-init` also scores the
real images each side started from (IPC 1 from real images: which images a run starts from can
outweigh the method); `--runs N` pools N condensations a side (seeds seed..seed+N-1).

`--method mtt` first makes (or reuses) our experts for the budget (`--experts-size`,
`--experts-epochs`, `python -m dmcondense.experts`); both sides match them: ours reads them, the
adapter writes them as their replay_buffer_0.pt. `--zca` whitens the data (ours:
dataset.zca=true; theirs gets the same whitened tensors). Both sets are scored under
eval.protocol=mtt, each at its own learned step size (their initial images at lr_teacher).

`--method ncfm` first makes (or reuses) our pretrained pool for the budget (`--pool-size`,
`--pool-epochs`, `python -m dmcondense.pretrain`); both sides match with it: ours reads it, the
adapter hands it to their loop in their file format. `--sampling-net` switches the sampling
network on, both sides. Their loader matches the first batch_real images of each class every
iteration (their AsyncLoader asks for a size, which means "the first images");
`--their-real-batches random` gives their loop a fresh random batch of the class each time, as
their paper and ours have it, to measure what that difference costs. Their loader also reads
each class's synthetic images ahead of use, on a thread; `--their-synthetic-batches when-used`
reads them when they are matched, as ours does.

`--method dance` makes (or reuses) our pool the same way, under DANCE's recipe (pool=dance:
batches of 64, so another key than NCFM's); the adapter hands it to their DANCE.py as their
premodel files. Its image learning rate defaults to their reproduce preset's 0.01 x IPC.

Seconds per step: theirs is their loop's wall time (their "training begins" to the end) over
the steps; ours is Lightning's fit time over the steps, which also holds the fit's start-up, so
ours is if anything overstated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import parity_datm  # noqa: E402
from parity_official import OFFICIAL, missing_files, prepare_copy  # noqa: E402

CIFAR10_ARCHIVE = REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
CIFAR10_MEAN = [0.4914, 0.4822, 0.4465]
CIFAR10_STD = [0.2023, 0.1994, 0.2010]
# Their --dataset name: decides nothing in their loop beyond what the flags set; kept truthful.
THEIR_DATASET = {"mnist_sample": "MNIST", "cifar10": "CIFAR10"}
NCFM_DATASET = {"mnist_sample": "mnist", "cifar10": "cifar10"}  # NCFM's names are lower case
# Their NCFM loader as published: the first real images of a class, the synthetic read ahead.
NCFM_LOADER_DEFAULTS = {"their_real_batches": "first", "their_synthetic_batches": "prefetched"}
# The authors' defaults by method (their README commands): lr_img and init.
METHOD_DEFAULTS = {
    "dc": {"lr_img": 0.1, "init": "noise"},
    "dsa": {"lr_img": 0.1, "init": "real"},
    "dm": {"lr_img": 1.0, "init": "real"},
    "idm": {"lr_img": 0.2, "init": "real"},
    "ncfm": {"lr_img": 1e-3, "init": "real"},  # AdamW: their lr_img 0.01 x lr_scale_adam 0.1
    "dance": {"lr_img": None, "init": "real"},  # None: their reproduce preset's 0.01 x IPC
    "mtt": {"lr_img": 1000.0, "init": "real"},  # distill.py's --lr_img, --pix_init
    "rded": {"lr_img": 1.0, "init": "real"},  # no image optimiser: lr_img is never read
    "datm": parity_datm.DATM_DEFAULTS,
}
POOL_METHODS = ("ncfm", "dance")  # both sides match with our pool; IDC-style names and aug_type
# Their README: no flip on digits.
STRATEGY = {
    "mnist_sample": "color_crop_cutout_scale_rotate",
    "cifar10": "color_crop_cutout_flip_scale_rotate",
}
NCFM_STRATEGY = "color_crop_cutout"  # their aug_type, every data set (NCFM and DANCE)
POOLED = ("ncfm", "rded", "dance")  # the methods whose both sides read our pretrained pool


class UsageError(Exception):
    """A problem the user can fix, reported as one line (exit 2)."""


def within_tolerance(gap: float, std_ours: float, std_theirs: float) -> bool:
    """The issue's criterion: |gap| <= max(1.5, 2 x the larger std), in percentage points."""
    return abs(gap) <= max(1.5, 2.0 * max(std_ours, std_theirs))


def summarise(ours: list[float], theirs: list[float]) -> dict:
    """Mean and population std (percent) of each side, the gap and the verdict."""

    def mean_std(values: list[float]) -> tuple[float, float]:
        mean = sum(values) / len(values)
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))

    ours_mean, ours_std = mean_std(ours)
    theirs_mean, theirs_std = mean_std(theirs)
    gap = ours_mean - theirs_mean
    return {
        "ours_mean": ours_mean,
        "ours_std": ours_std,
        "theirs_mean": theirs_mean,
        "theirs_std": theirs_std,
        "gap": gap,
        "within_tolerance": within_tolerance(gap, ours_std, theirs_std),
    }


def initial_summary(accuracies: dict[str, list[float]]) -> dict:
    """With --score-init: each side's initial images scored, and what condensing added."""
    if "ours_init" not in accuracies:
        return {}
    start = summarise(accuracies["ours_init"], accuracies["theirs_init"])
    final = summarise(accuracies["ours"], accuracies["theirs"])
    return {
        "ours_init_mean": start["ours_mean"], "ours_init_std": start["ours_std"],
        "theirs_init_mean": start["theirs_mean"], "theirs_init_std": start["theirs_std"],
        "ours_gain": final["ours_mean"] - start["ours_mean"],
        "theirs_gain": final["theirs_mean"] - start["theirs_mean"],
        "ours_init_accuracies": accuracies["ours_init"],
        "theirs_init_accuracies": accuracies["theirs_init"],
    }  # fmt: skip


def dataset_overrides(name: str, data_cache: Path) -> list[str]:
    """Our Hydra overrides for the data set (CIFAR-10: the shared JPEG copy, extracted once)."""
    if name == "mnist_sample":
        return ["dataset=mnist_sample"]
    folder = data_cache / "cifar10-jpeg"
    if not (folder / "train").is_dir():
        if not CIFAR10_ARCHIVE.is_file():
            raise UsageError(f"--dataset cifar10 needs {CIFAR10_ARCHIVE}, which is absent")
        folder.mkdir(parents=True, exist_ok=True)
        with tarfile.open(CIFAR10_ARCHIVE) as archive:
            archive.extractall(folder, filter="data")
    mean = ",".join(map(str, CIFAR10_MEAN))
    std = ",".join(map(str, CIFAR10_STD))
    return [
        "dataset=imagefolder", f"dataset.path={folder}", "dataset.num_classes=10",
        f"dataset.mean=[{mean}]", f"dataset.std=[{std}]",
    ]  # fmt: skip


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """Hydra overrides shared by our condensation and the evaluation of both sets."""
    overrides = [
        f"method={args.method}", f"ipc={args.ipc}", f"iterations={args.steps}",
        f"model.width={args.width}", f"lr_img={args.lr_img}", f"init={args.init}",
        f"eval.protocol={'mtt' if args.method == 'mtt' else 'dsa'}",
        f"eval.num_models={args.eval_models}", f"eval.epochs={args.eval_epochs}",
    ]  # fmt: skip
    if args.method not in ("mtt", "datm"):  # MTT and DATM read no real batches while condensing
        overrides.append(f"batch_real={args.batch_real}")
    if args.method in ("mtt", "datm"):
        overrides += [
            f"experts.size={args.experts_size}", f"experts.epochs={args.experts_epochs}",
            f"experts.root={args.data_cache / 'experts'}", f"dataset.zca={str(args.zca).lower()}",
            f"method.syn_steps={args.syn_steps}", f"method.expert_epochs={args.expert_epochs}",
            f"method.max_start_epoch={args.max_start_epoch}", f"method.lr_lr={args.lr_lr}",
            f"method.lr_teacher={args.lr_teacher}",
            f"method.batch_syn={args.batch_syn or 'null'}",
        ]  # fmt: skip
    if args.method == "datm":  # its own settings, its experts' recipe, and its evaluation
        overrides = [o for o in overrides if not o.startswith("eval.protocol=")]
        overrides += parity_datm.harness_overrides(args)
    if args.method not in ("dc", "rded"):  # augment=none has no strategy
        overrides.append(f"augment.strategy={args.strategy}")
    if args.method == "rded":  # the observer: network 0 of a convnet_bn pool
        overrides += [
            "model=convnet_bn", f"pool.size={args.pool_size}", f"pool.epochs={args.pool_epochs}",
            f"pool.root={args.data_cache / 'pools'}", f"method.num_crop={args.num_crop}",
            "method.crop_factor=1",
        ]  # fmt: skip
    if args.method in POOL_METHODS:
        overrides += [
            f"pool.size={args.pool_size}", f"pool.epochs={args.pool_epochs}",
            f"pool.root={args.data_cache / 'pools'}",
        ]  # fmt: skip
    if args.method == "ncfm":
        overrides += [
            f"method.num_freqs={args.num_freqs}",
            f"method.sampling_net={str(args.sampling_net).lower()}",
        ]
    if args.method == "idm":
        # Their accuracy meters restart only at their evaluations, which the adapter skips:
        # ours counts over the whole run as well.
        overrides += [
            f"method.ce_weight={args.ce_weight}",
            f"method.net_generate_interval={args.net_generate_interval}",
            f"method.accuracy_window={args.steps}",
        ]
    return overrides


def subprocess_env(threads: int) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env


def run(command: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = log.read_text().strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(command[:4])} ... failed; log {log}:\n" + "\n".join(tail))


def condense_ours(args, overrides: list[str], run_dir: Path, seed: int, env) -> tuple[Path, float]:
    """Our train job (its own evaluation cut to one network, one epoch: unused); returns
    synthetic.pt and the seconds per step."""
    command = [
        sys.executable, "-m", "dmcondense.train", *overrides, f"seed={seed}",
        "eval.num_models=1", "eval.epochs=1", "logger=csv", "save_every=1000000",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    run(command, env, run_dir.with_suffix(".log"))
    results = json.loads((run_dir / "results.json").read_text())
    return run_dir / "synthetic.pt", results["condense_seconds"] / results["steps"]


def pretrain_pool(overrides: list[str], run_dir: Path, env) -> Path:
    """NCFM: our pool for the budget (`python -m dmcondense.pretrain`, reused when it exists),
    which both sides match with; returns its folder."""
    log = run_dir.with_suffix(".log")
    command = [sys.executable, "-m", "dmcondense.pretrain", *overrides, f"hydra.run.dir={run_dir}"]
    run(command, env, log)
    lines = [line for line in log.read_text().splitlines() if line.startswith("pool: ")]
    if not lines:
        raise RuntimeError(f"python -m dmcondense.pretrain named no pool folder; log {log}")
    return Path(lines[-1].removeprefix("pool: ").strip())


def make_experts(overrides: list[str], run_dir: Path, env) -> Path:
    """MTT: our experts for the budget (`python -m dmcondense.experts`, reused when they exist),
    which both sides match; returns their folder."""
    log = run_dir.with_suffix(".log")
    command = [sys.executable, "-m", "dmcondense.experts", *overrides, f"hydra.run.dir={run_dir}"]
    run(command, env, log)
    lines = [line for line in log.read_text().splitlines() if line.startswith("experts: ")]
    if not lines:
        raise RuntimeError(f"python -m dmcondense.experts named no folder; log {log}")
    return Path(lines[-1].removeprefix("experts: ").strip())


def save_real_data(synthetic: Path, path: Path) -> None:
    """Our training and test split, normalised as our run normalised them, for their loop."""
    import torch
    from omegaconf import OmegaConf

    from dmcondense.data.spec import DatasetSpec
    from dmcondense.io import read_synthetic
    from dmcondense.jobs import build

    record = read_synthetic(synthetic)
    cfg = OmegaConf.create(record["config"])
    spec = DatasetSpec.from_config(cfg.dataset, zca=record.get("zca"))
    dm = build.datamodule(cfg)
    dm.setup("fit")
    test = dm.load("test")
    train = dm.train_set
    torch.save(
        {
            "train_images": spec.normaliser.to_input(train.images),
            "train_labels": train.labels,
            "test_images": spec.normaliser.to_input(test.images),
            "test_labels": test.labels,
            "class_names": list(record["class_names"]),
            "mean": list(record["mean"]),
            "std": list(record["std"]),
            "zca": record.get("zca"),
            "config": record["config"],
        },
        path,
    )


def condense_theirs(
    args,
    copy: Path,
    data: Path,
    out: Path,
    seed: int,
    env,
    pool: Path | None = None,
    experts: Path | None = None,
) -> float:
    """Their loop through the adapter; returns the seconds per step."""
    command = [
        sys.executable, str(HERE / "parity_official.py"), "--method", args.method,
        "--copy", str(copy), "--data", str(data), "--out", str(out),
        "--their-dataset",
        (NCFM_DATASET if args.method in POOL_METHODS else THEIR_DATASET)[args.dataset],
        "--ipc", str(args.ipc),
        "--steps", str(args.steps), "--batch-real", str(args.batch_real),
        "--width", str(args.width), "--lr-img", str(args.lr_img), "--init", args.init,
        "--strategy", args.strategy if args.method != "dc" else "none",
        "--seed", str(seed), "--threads", str(args.threads),
        "--ce-weight", str(args.ce_weight),
        "--net-generate-interval", str(args.net_generate_interval),
    ]  # fmt: skip
    if args.method == "rded":
        command += ["--pool", str(pool), "--num-crop", str(args.num_crop), "--crop-factor", "1"]
    if args.method == "ncfm":
        command += ["--pool", str(pool), "--pool-size", str(args.pool_size),
                    "--num-freqs", str(args.num_freqs)]  # fmt: skip
        command += ["--sampling-net"] if args.sampling_net else []
        command += ["--real-batches", args.their_real_batches]
        command += ["--synthetic-batches", args.their_synthetic_batches]
    if args.method == "dance":
        command += ["--pool", str(pool), "--pool-size", str(args.pool_size)]
    if args.method in ("mtt", "datm"):
        command += [
            "--experts", str(experts), "--experts-size", str(args.experts_size),
            "--syn-steps", str(args.syn_steps), "--expert-epochs", str(args.expert_epochs),
            "--max-start-epoch", str(args.max_start_epoch), "--lr-lr", str(args.lr_lr),
            "--lr-teacher", str(args.lr_teacher), "--batch-syn", str(args.batch_syn),
        ]  # fmt: skip
    if args.method == "datm":  # and DATM's own settings, and whether the data are whitened
        command += parity_datm.adapter_flags(args) + (["--zca"] if args.zca else [])
    run(command, env, out.with_suffix(".log"))
    return json.loads(out.with_suffix(".json").read_text())["seconds_per_step"]


def save_initial_record(
    synthetic: Path, data: Path, out: Path, experts: Path | None = None
) -> Path:
    """Our run's initial images (its `init_indices`, encoded as the run encoded them) as a
    synthetic.pt record: the random-real start of `init=real`. DATM (`experts`): with the soft
    labels and step size it started from."""
    import torch

    from dmcondense.io import read_synthetic
    from dmcondense.synthetic import SyntheticImages

    record = read_synthetic(synthetic)
    tensors = torch.load(data, weights_only=True)  # real_data.pt: plain tensors and lists
    images = tensors["train_images"][record["init_indices"]]
    encoder = SyntheticImages(len(record["class_names"]), record["ipc"], record.get("factor", 1))
    resize = record["config"]["synthetic"]["init_resize"]  # NCFM and M3D pack nearest
    initial = {**record, "images": encoder.encode(images, resize), "step": 0}
    if "lr" in record:  # MTT: the initial images train at the step size the run started from
        initial["lr"] = float(record["config"]["method"]["lr_teacher"])
    if experts is not None:  # DATM: and on the soft labels it started from
        initial.update(parity_datm.initial_fields(record, experts, initial["images"]))
    torch.save(initial, out)
    return out


def score_sets(args, overrides: list[str], sides: dict[str, list[Path]]) -> dict:
    """Test accuracies (percent, every network of every run) of each side, one protocol and
    one seed: our evaluation library, as `python -m dmcondense.evaluate` runs it."""
    from hydra import compose, initialize_config_dir

    from dmcondense.cli import CONF_DIR
    from dmcondense.evaluation.score import score
    from dmcondense.hostmem import reuse_freed_memory
    from dmcondense.jobs import build
    from dmcondense.jobs.evaluate import synthetic_sets

    reuse_freed_memory()
    sets, spec, cfg = {}, None, None
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for side, paths in sides.items():
            listed = "[" + ",".join(str(p) for p in paths) + "]"
            cfg = compose("evaluate", [*overrides, f"seed={args.seed}", f"condensed={listed}"])
            sets[side], dataset, spec, _, _ = synthetic_sets([str(p) for p in paths], cfg)
    dm = build.datamodule(cfg, dataset)
    test = dm.load("test")
    protocols = build.protocols(cfg, spec)
    if args.method not in ("mtt", "datm"):
        scores = score(
            sets, build.architectures(cfg), protocols, test, args.seed,
            num_models=args.eval_models, normaliser=spec.normaliser,
            backend=build.eval_backend(cfg), device="cpu",
        )  # fmt: skip
        return {side: (scores[side]["convnet"] * 100).tolist() for side in sides}
    import dataclasses

    from dmcondense.io import read_synthetic

    accuracies = {}  # MTT, DATM: each set trains at its own learned step size (eval.protocol=mtt)
    for side, paths in sides.items():
        accuracies[side] = []
        for one, path in zip(sets[side], paths, strict=True):
            lr = float(read_synthetic(path)["lr"])
            scored = score(
                {side: [one]}, build.architectures(cfg),
                {a: dataclasses.replace(p, lr=lr) for a, p in protocols.items()}, test, args.seed,
                num_models=args.eval_models, normaliser=spec.normaliser,
                backend=build.eval_backend(cfg), device="cpu",
            )  # fmt: skip
            accuracies[side] += (scored[side]["convnet"] * 100).tolist()
    return accuracies


def read_lr(path: Path) -> float:
    """A saved set's learned step size (MTT)."""
    from dmcondense.io import read_synthetic

    return read_synthetic(path)["lr"]


def reproducible_arguments(argv: list[str] | None, args: argparse.Namespace) -> list[str]:
    """The command line as given, with $OFFICIAL for the checkout and without this machine's
    folders (--scratch, --data-cache, --results-dir)."""
    given, kept = list(sys.argv[1:] if argv is None else argv), []
    machine_folders = ("--scratch", "--data-cache", "--results-dir")
    while given:
        argument = given.pop(0)
        if argument.split("=")[0] in machine_folders:
            if "=" not in argument and given:
                given.pop(0)
            continue
        kept.append("$OFFICIAL" if argument == str(args.official) else argument)
    return kept


def markdown_row(row: dict) -> str:
    return (
        f"| {row['method']} | {row['dataset']} | {row['ipc']} | {row['budget']} "
        f"| {row['ours_mean']:.2f} ± {row['ours_std']:.2f} "
        f"| {row['theirs_mean']:.2f} ± {row['theirs_std']:.2f} | {row['gap']:+.2f} "
        f"| {'yes' if row['within_tolerance'] else 'no'} "
        f"| {row['ours_seconds_per_step']:.3f} | {row['theirs_seconds_per_step']:.3f} "
        f"| `{row['command']}` |"
    )


MARKDOWN_HEADER = (
    "| method | data set | IPC | budget | ours ± std | theirs ± std | gap | within | "
    "ours s/step | theirs s/step | command |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
)


def default_strategy(method: str, dataset: str) -> str:
    """The augmentation strategy the authors' code uses for the method on the data set."""
    return NCFM_STRATEGY if method in POOL_METHODS else STRATEGY[dataset]


def default_lr_img(method: str, ipc: int) -> float:
    """The authors' image learning rate for the method (DANCE's grows with the IPC)."""
    lr = METHOD_DEFAULTS[method]["lr_img"]
    return 0.01 * ipc if lr is None else lr


def idm_generate_interval(ipc: int) -> int:
    """IDM's steps between fresh queue networks in the authors' commands: 5 at IPC 1, else 30."""
    return 5 if ipc == 1 else 30


def changed_settings(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The settings a row was run with that differ from their defaults, as (file-name token,
    budget text) pairs: together with the budget they tell two rows apart."""
    defaults = METHOD_DEFAULTS[args.method]
    changed = []
    if args.lr_img != default_lr_img(args.method, args.ipc):
        changed.append((f"lr{args.lr_img:g}", f"lr_img {args.lr_img:g}"))
    if args.init != defaults["init"]:
        changed.append((f"init-{args.init}", f"init {args.init}"))
    if args.strategy != default_strategy(args.method, args.dataset):
        changed.append((f"aug-{args.strategy}", f"strategy {args.strategy}"))
    if args.method == "ncfm" and args.num_freqs != 4096:
        changed.append((f"nf{args.num_freqs}", f"{args.num_freqs} freqs"))
    if args.their_real_batches != "first":
        changed.append(("their-real-random", "their real batches random"))
    if args.their_synthetic_batches != "prefetched":
        changed.append(("their-syn-when-used", "their synthetic read when used"))
    if args.method == "idm":
        if args.ce_weight != 0.5:
            changed.append((f"ce{args.ce_weight:g}", f"ce_weight {args.ce_weight:g}"))
        if args.net_generate_interval != idm_generate_interval(args.ipc):
            interval = args.net_generate_interval
            changed.append((f"gen{interval}", f"net_generate_interval {interval}"))
    if args.method in ("mtt", "datm") and args.zca:
        changed.append(("zca", "ZCA"))
    if args.seed != 0:
        changed.append((f"seed{args.seed}", f"seed {args.seed}"))
    if args.method == "datm":
        changed.append(parity_datm.budget_tokens(args))
    return changed


def mtt_budget(args: argparse.Namespace) -> tuple[str, str]:
    """MTT's settings in the budget text and the file name."""
    text = (f"experts {args.experts_size} x {args.experts_epochs} ep, syn_steps "
            f"{args.syn_steps}, expert_epochs {args.expert_epochs}, max_start "
            f"{args.max_start_epoch}, lr_lr {args.lr_lr:g}, ")  # fmt: skip
    token = (f"exp{args.experts_size}x{args.experts_epochs}_n{args.syn_steps}"
             f"m{args.expert_epochs}t{args.max_start_epoch}")  # fmt: skip
    return text, token


def budget_text(args: argparse.Namespace) -> str:
    """The row's budget as parity.md shows it (and keys its rows by)."""
    return (
        f"{args.steps} steps, "
        + (f"batch_real {args.batch_real}, " if args.method != "mtt" else "")
        + f"width {args.width}, "
        + (f"pool {args.pool_size} x {args.pool_epochs} ep, " if args.method in POOLED else "")
        + (f"{args.num_crop} crops, " if args.method == "rded" else "")
        + (mtt_budget(args)[0] if args.method == "mtt" else "")
        + "".join(f"{text}, " for _, text in changed_settings(args))
        + f"{args.runs} run(s) x {args.eval_models} nets x {args.eval_epochs} ep"
    )


def results_name(label: str, args: argparse.Namespace) -> str:
    """The row's JSON file: method, data set, IPC and budget, so that rows of one method, data
    set and IPC at different budgets are kept apart."""
    tokens = [
        f"parity_{label}_{args.dataset}_ipc{args.ipc}",
        f"{args.steps}st", f"b{args.batch_real}", f"w{args.width}",
        *([f"pool{args.pool_size}x{args.pool_epochs}"] if args.method in POOLED else []),
        *([f"cr{args.num_crop}"] if args.method == "rded" else []),
        *([mtt_budget(args)[1]] if args.method == "mtt" else []),
        *(token for token, _ in changed_settings(args)),
        f"{args.runs}r", f"{args.eval_models}x{args.eval_epochs}ep",
    ]  # fmt: skip
    return "_".join(tokens) + ".json"


def write_results(row: dict, name: str, results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / name).write_text(json.dumps(row, indent=2) + "\n")
    table = results_dir / "parity.md"
    rows = table.read_text().splitlines()[2:] if table.is_file() else []
    key = f"| {row['method']} | {row['dataset']} | {row['ipc']} | {row['budget']} |"
    rows = [r for r in rows if not r.startswith(key)] + [markdown_row(row)]
    table.write_text(MARKDOWN_HEADER + "\n".join(rows) + "\n")
    return results_dir / name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Condense with the authors' code and ours, score both with ours."
    )
    parser.add_argument("--method", choices=sorted(OFFICIAL), required=True)
    parser.add_argument("--official", required=True, type=Path,
                        help="a checkout of the authors' repository")  # fmt: skip
    parser.add_argument("--dataset", choices=sorted(THEIR_DATASET), default="mnist_sample")
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100, help="image updates of each side")
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--width", type=int, default=128, help="ConvNet width, both sides and eval")
    parser.add_argument("--lr-img", type=float, help="default: the authors' for the method")
    parser.add_argument("--init", choices=("real", "noise", "correct"),
                        help="default: the authors' (correct: DATM's)")  # fmt: skip
    parser.add_argument("--strategy", help="DSA strategy (DSA, DM); default: theirs for the data")
    parser.add_argument("--ce-weight", type=float, default=0.5, help="IDM (their IPC 1, 10)")
    parser.add_argument(
        "--net-generate-interval", type=int, help="IDM; default 5 at IPC 1, else 30"
    )
    parser.add_argument("--pool-size", type=int, default=4, help="NCFM, DANCE: pool networks")
    parser.add_argument("--pool-epochs", type=int, default=2, help="NCFM, DANCE: epochs of each")
    parser.add_argument("--experts-size", type=int, default=4, help="MTT: experts")
    parser.add_argument("--experts-epochs", type=int, default=4, help="MTT: epochs of each")
    parser.add_argument("--syn-steps", type=int, default=20, help="MTT: student steps")
    parser.add_argument("--expert-epochs", type=int, default=3, help="MTT: target epochs ahead")
    parser.add_argument("--max-start-epoch", type=int, default=25, help="MTT")
    parser.add_argument("--lr-lr", type=float, default=1e-5, help="MTT: step size's lr")
    parser.add_argument("--lr-teacher", type=float, default=0.01, help="MTT: initial step size")
    parser.add_argument("--batch-syn", type=int, default=0, help="MTT: 0: all images")
    parser.add_argument(
        "--zca", action="store_true", help="MTT, DATM: ZCA-whitened data, both sides"
    )
    parser.add_argument("--num-freqs", type=int, default=4096, help="NCFM: frequencies")
    parser.add_argument("--num-crop", type=int, default=5, help="RDED: crops scored an image")
    parser.add_argument(
        "--sampling-net", action="store_true", help="NCFM: the sampling network, both sides"
    )
    parser.add_argument(
        "--their-real-batches",
        choices=("first", "random"),
        default=NCFM_LOADER_DEFAULTS["their_real_batches"],
        help="NCFM: their loader matches the first batch_real images of a class every "
        "iteration (first, their code) or a fresh random batch (random, their paper and ours)",
    )
    parser.add_argument(
        "--their-synthetic-batches",
        choices=("prefetched", "when-used"),
        default=NCFM_LOADER_DEFAULTS["their_synthetic_batches"],
        help="NCFM: their loader reads a class's synthetic images ahead of use, before that "
        "class's previous step (prefetched, their code), or when they are matched (when-used)",
    )
    parity_datm.add_harness_arguments(parser)
    parser.add_argument("--eval-models", type=int, default=3, help="networks per condensed set")
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--runs", type=int, default=1, help="condensations a side (seed + r)")
    parser.add_argument(
        "--score-init", action="store_true", help="also score each side's initial images"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of each process")
    parser.add_argument("--scratch", type=Path, help="work folder (default: a new temp folder)")
    parser.add_argument("--data-cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "dmcondense-parity-data")  # fmt: skip
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    defaults = METHOD_DEFAULTS[args.method]
    args.lr_img = default_lr_img(args.method, args.ipc) if args.lr_img is None else args.lr_img
    args.init = args.init or defaults["init"]
    if not args.strategy:
        args.strategy = default_strategy(args.method, args.dataset)
    if args.net_generate_interval is None:
        args.net_generate_interval = idm_generate_interval(args.ipc)
    if args.method == "rded":  # one selection a run; --batch-real is their --mipc
        args.steps = 1
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    problem = missing_files(args.official, args.method)
    if problem:
        raise UsageError(problem)
    if args.score_init and args.init not in ("real", "correct"):
        raise UsageError("--score-init scores the real images a run starts from: use --init real")
    names = ("steps", "batch_real", "width", "eval_models", "eval_epochs", "runs", "ipc",
             "pool_size", "pool_epochs", "num_freqs", "experts_size", "experts_epochs",
             "syn_steps", "expert_epochs", "max_start_epoch")  # fmt: skip
    if args.sampling_net and args.method != "ncfm":
        raise UsageError("--sampling-net is NCFM's: use it with --method ncfm")
    for flag in ("their_real_batches", "their_synthetic_batches"):
        if getattr(args, flag) != NCFM_LOADER_DEFAULTS[flag] and args.method != "ncfm":
            raise UsageError(f"--{flag.replace('_', '-')} is NCFM's: use it with --method ncfm")
    for name in names:
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    started = time.time()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="dmcondense-parity-"))
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / "official"
    edits = prepare_copy(args.official, copy, args.method)
    overrides = dataset_overrides(args.dataset, args.data_cache) + budget_overrides(args)
    env = subprocess_env(args.threads)

    ours, theirs, ours_seconds, theirs_seconds = [], [], [], []
    data = scratch / "real_data.pt"
    pool = pretrain_pool(overrides, scratch / "pretrain", env) if args.method in POOLED else None
    experts = (make_experts(overrides, scratch / "experts", env)
               if args.method in ("mtt", "datm") else None)  # fmt: skip
    for r in range(args.runs):
        seed = args.seed + r
        synthetic, seconds = condense_ours(args, overrides, scratch / f"ours_{r}", seed, env)
        ours.append(synthetic)
        ours_seconds.append(seconds)
        print(f"ours   run {r}: {seconds:.3f} s/step", flush=True)
        if not data.is_file():
            save_real_data(synthetic, data)
        out = scratch / f"theirs_{r}.pt"
        theirs_seconds.append(condense_theirs(args, copy, data, out, seed, env, pool, experts))
        theirs.append(out)
        print(f"theirs run {r}: {theirs_seconds[-1]:.3f} s/step", flush=True)

    sides = {"ours": ours, "theirs": theirs}
    if args.score_init:
        trajectories = experts if args.method == "datm" else None
        sides["ours_init"] = [save_initial_record(p, data, scratch / f"{p.parent.name}_init.pt",
                                                  trajectories) for p in ours]  # fmt: skip
        sides["theirs_init"] = [p.with_name(f"{p.stem}_init.pt") for p in theirs]
    accuracies = score_sets(args, overrides, sides)
    budget = budget_text(args)
    label = args.method + ("-sampling-net" if args.sampling_net else "")
    command = "python benchmarks/parity.py " + " ".join(reproducible_arguments(argv, args))
    row = {
        "method": label, "dataset": args.dataset, "ipc": args.ipc, "budget": budget,
        **summarise(accuracies["ours"], accuracies["theirs"]),
        "ours_accuracies": accuracies["ours"], "theirs_accuracies": accuracies["theirs"],
        **initial_summary(accuracies),
        "ours_seconds_per_step": sum(ours_seconds) / len(ours_seconds),
        "theirs_seconds_per_step": sum(theirs_seconds) / len(theirs_seconds),
        "lr_img": args.lr_img, "init": args.init, "strategy": args.strategy,
        "seed": args.seed, "threads": args.threads, "compat_edits": edits,
        "official": str(args.official), "seconds": round(time.time() - started, 1),
        **({"pool": str(pool), "pool_size": args.pool_size, "pool_epochs": args.pool_epochs,
            "num_freqs": args.num_freqs, "sampling_net": args.sampling_net,
            "their_real_batches": args.their_real_batches,
            "their_synthetic_batches": args.their_synthetic_batches,
            "sampling_net_change": [json.loads(p.with_suffix(".json").read_text())
                                    .get("sampling_net_change") for p in theirs]}
           if args.method == "ncfm" else {}),
        **({"pool": str(pool), "pool_size": args.pool_size, "pool_epochs": args.pool_epochs}
           if args.method == "dance" else {}),
        **({"experts": str(experts), "learned_lr": {
                side: [float(read_lr(p)) for p in sides[side]] for side in ("ours", "theirs")}}
           if args.method in ("mtt", "datm") else {}),
        "command": command,
    }  # fmt: skip
    path = write_results(row, results_name(label, args), args.results_dir)
    print(
        f"{label} {args.dataset} IPC {args.ipc} ({budget})\n"
        f"  ours   {row['ours_mean']:6.2f} +- {row['ours_std']:.2f} %   "
        f"{row['ours_seconds_per_step']:.3f} s/step\n"
        f"  theirs {row['theirs_mean']:6.2f} +- {row['theirs_std']:.2f} %   "
        f"{row['theirs_seconds_per_step']:.3f} s/step\n"
        + (
            f"  initial images: ours {row['ours_init_mean']:6.2f} +- {row['ours_init_std']:.2f} %, "
            f"theirs {row['theirs_init_mean']:6.2f} +- {row['theirs_init_std']:.2f} %; "
            f"gain ours {row['ours_gain']:+.2f}, theirs {row['theirs_gain']:+.2f}\n"
            if "ours_init_mean" in row
            else ""
        )
        + f"  gap    {row['gap']:+6.2f} points "
        f"({'within' if row['within_tolerance'] else 'outside'} max(1.5, 2 x std))\n"
        f"  written: {path}"
    )
    return row


if __name__ == "__main__":
    try:
        main()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
