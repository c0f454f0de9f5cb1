"""benchmarks/parity.py: end to end against a stub of the authors' code, its gap arithmetic and
its one-line errors.

The stub stands in for a checkout of VICO-UoE/DatasetCondensation: the file names and the
functions the adapter (benchmarks/parity_official.py) replaces or wraps, and a `main.py` that
parses their flags, draws one network an iteration, keeps the synthetic images at the first
real images of each class, and saves `res_*.pt` as their script does. It records what it was
given, so the test can check the budget reached it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.inprocess import ENTRY_POINTS

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "parity.py"
RESCORE = REPO / "benchmarks" / "parity_rescore.py"

STUB_UTILS = """
import json, os
import torch
from torch.utils.data import Dataset

RECORD = {"widths": [], "networks": 0}

class TensorDataset(Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images.detach().float(), labels.detach()
    def __getitem__(self, index):
        return self.images[index], self.labels[index]
    def __len__(self):
        return self.images.shape[0]

def get_dataset(dataset, data_path):
    raise RuntimeError("the adapter must replace get_dataset")

def evaluate_synset(it_eval, net, images_train, labels_train, testloader, args):
    raise RuntimeError("the adapter must replace evaluate_synset")

def get_default_convnet_setting():
    return 128, 3, "relu", "instancenorm", "avgpooling"

def get_time():
    return "[now]"

def get_network(model, channel, num_classes, im_size=(32, 32)):
    width = get_default_convnet_setting()[0]
    RECORD["widths"].append(width)
    RECORD["networks"] += 1
    return torch.nn.Conv2d(channel, width, 3)

def rand_flip(x):
    randf = torch.rand(x.shape[0], 1, 1, 1)
    randf[:] = randf[0]
    return randf
"""

STUB_MAIN = """
import argparse, json, os
import torch
import utils
from utils import get_dataset, get_network, evaluate_synset, get_time

parser = argparse.ArgumentParser()
for flag in ("method", "dataset", "model", "eval_mode", "init", "dsa_strategy", "data_path",
             "save_path"):
    parser.add_argument("--" + flag, type=str, default="")
for flag in ("ipc", "num_exp", "num_eval", "Iteration", "batch_real"):
    parser.add_argument("--" + flag, type=int, default=0)
parser.add_argument("--lr_img", type=float, default=0.0)
args = parser.parse_args()
channel, im_size, num_classes, names, mean, std, dst_train, dst_test, loader = get_dataset(
    args.dataset, args.data_path)
labels = dst_train.labels
image_syn = torch.cat([dst_train.images[labels == c][: args.ipc] for c in range(num_classes)])
label_syn = torch.arange(num_classes).repeat_interleave(args.ipc)
print("%s training begins" % get_time())
for it in range(args.Iteration + 1):
    if it == args.Iteration:
        evaluate_synset(0, get_network(args.model, channel, num_classes, im_size), image_syn,
                        label_syn, loader, args)
    get_network(args.model, channel, num_classes, im_size)
torch.save({"data": [[image_syn, label_syn]]},
           os.path.join(args.save_path, "res_stub_%dipc.pt" % args.ipc))
with open(os.path.join(args.save_path, "stub_record.json"), "w") as f:
    json.dump({"args": vars(args), **utils.RECORD}, f)
"""

STEPS, IPC, WIDTH, BATCH_REAL, EVAL_MODELS = 3, 1, 8, 8, 2


def load_script(path: Path):
    """A benchmarks/ script as a module (it imports its neighbours, hence the path)."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_parity():
    return load_script(SCRIPT)


def write_stub(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "utils.py").write_text(STUB_UTILS)
    (folder / "main.py").write_text(STUB_MAIN)
    (folder / "main_DM.py").write_text(STUB_MAIN)
    (folder / "networks.py").write_text("# the stub's networks live in utils.get_network\n")
    return folder


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("parity")
    official = write_stub(root / "official_checkout")
    parity = load_parity()
    row = parity.main([
        "--method", "dsa", "--official", str(official), "--dataset", "mnist_sample",
        "--ipc", str(IPC), "--steps", str(STEPS), "--batch-real", str(BATCH_REAL),
        "--width", str(WIDTH), "--eval-models", str(EVAL_MODELS), "--eval-epochs", "1",
        "--scratch", str(root / "scratch"), "--results-dir", str(root / "results"),
        "--score-init",
    ])  # fmt: skip
    return {"root": root, "official": official, "row": row, "parity": parity}


def test_the_budget_reaches_their_script(harness):
    record = json.loads(
        (harness["root"] / "scratch" / "official_dsa" / "stub_record.json").read_text()
    )
    args = record["args"]
    assert args["Iteration"] == STEPS - 1  # their loop makes Iteration + 1 updates
    assert (args["ipc"], args["batch_real"], args["method"]) == (IPC, BATCH_REAL, "DSA")
    assert args["dsa_strategy"] == "color_crop_cutout_scale_rotate"  # digits: no flip
    assert args["init"] == "real" and args["lr_img"] == 0.1
    assert record["networks"] == STEPS + 1  # one an iteration and one evaluation network
    assert set(record["widths"]) == {WIDTH}


def test_compat_edits_change_the_copy_only(harness):
    copy = (harness["root"] / "scratch" / "official" / "utils.py").read_text()
    original = (harness["official"] / "utils.py").read_text()
    assert "randf[:] = randf[0].clone()" in copy
    assert "randf[:] = randf[0]\n" in original
    assert any("utils.py: 1 x" in line for line in harness["row"]["compat_edits"])


def test_both_sets_are_scored_and_the_gap_is_their_difference(harness):
    row = harness["row"]
    assert len(row["ours_accuracies"]) == EVAL_MODELS
    assert len(row["theirs_accuracies"]) == EVAL_MODELS
    assert row["ours_mean"] == pytest.approx(sum(row["ours_accuracies"]) / EVAL_MODELS)
    assert row["theirs_mean"] == pytest.approx(sum(row["theirs_accuracies"]) / EVAL_MODELS)
    assert row["gap"] == pytest.approx(row["ours_mean"] - row["theirs_mean"])
    assert row["ours_seconds_per_step"] > 0 and row["theirs_seconds_per_step"] > 0
    # Theirs is the stub's set: the first real image of each class, normalised by our split.
    theirs = torch.load(harness["root"] / "scratch" / "theirs_0.pt", weights_only=False)
    data = torch.load(harness["root"] / "scratch" / "real_data.pt", weights_only=False)
    first = torch.stack([data["train_images"][data["train_labels"] == c][0] for c in range(10)])
    assert torch.equal(theirs["images"], first)
    # --score-init: their initial images (image_syn when their loop starts) and ours.
    theirs_init = torch.load(harness["root"] / "scratch" / "theirs_0_init.pt", weights_only=False)
    assert torch.equal(theirs_init["images"], first)
    ours_final = torch.load(
        harness["root"] / "scratch" / "ours_0" / "synthetic.pt", weights_only=False
    )
    ours_init = torch.load(harness["root"] / "scratch" / "ours_0_init.pt", weights_only=False)
    assert torch.equal(ours_init["images"], data["train_images"][ours_final["init_indices"]])
    assert len(row["ours_init_accuracies"]) == len(row["theirs_init_accuracies"]) == EVAL_MODELS
    assert row["ours_gain"] == pytest.approx(row["ours_mean"] - row["ours_init_mean"])
    assert row["theirs_gain"] == pytest.approx(row["theirs_mean"] - row["theirs_init_mean"])
    name = f"parity_dsa_mnist_sample_ipc{IPC}_{STEPS}st_b{BATCH_REAL}_w{WIDTH}_1r_{EVAL_MODELS}x1ep"
    written = json.loads((harness["root"] / "results" / f"{name}.json").read_text())
    assert written["gap"] == pytest.approx(row["gap"])
    table = (harness["root"] / "results" / "parity.md").read_text().splitlines()
    assert len(table) == 3 and f"{row['gap']:+.2f}" in table[2]


@pytest.mark.parametrize(
    ("method", "flag", "message"),
    [
        ("dc", "--score-init",
         "error: --score-init scores the real images a run starts from: use --init real"),
        ("dm", "--sampling-net", "error: --sampling-net is NCFM's: use it with --method ncfm"),
        ("dsa", "--their-real-batches=random",
         "error: --their-real-batches is NCFM's: use it with --method ncfm"),
        ("dm", "--their-synthetic-batches=when-used",
         "error: --their-synthetic-batches is NCFM's: use it with --method ncfm"),
    ],
    ids=["score-init-needs-real-init", "sampling-net-is-ncfm-only", "real-batches-is-ncfm-only",
         "synthetic-batches-is-ncfm-only"],
)  # fmt: skip
def test_a_flag_the_method_cannot_take_is_one_line(tmp_path, method, flag, message):
    official = write_stub(tmp_path / "official")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--method", method, "--official", str(official), flag],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == message


@pytest.mark.parametrize("method", ["dc", "dsa", "dm", "idm", "ncfm", "dance"])
def test_our_overrides_compose_for_every_method(method, tmp_path):
    from hydra import compose, initialize_config_dir

    from dmcondense.cli import CONF_DIR

    parity = load_parity()
    args = parity.parse_args(["--method", method, "--official", str(tmp_path)])
    overrides = parity.dataset_overrides("mnist_sample", tmp_path) + parity.budget_overrides(args)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides)
    assert cfg.lr_img == parity.default_lr_img(method, args.ipc)
    assert cfg.model.width == args.width and cfg.batch_real == args.batch_real
    if method == "dc":  # augment=none: nothing to set
        assert "strategy" not in cfg.augment
    elif method == "ncfm":  # their aug_type on every data set; the pool of the budget
        assert cfg.augment.strategy == "color_crop_cutout" and cfg.augment.choice == "idc"
        assert (cfg.pool.size, cfg.pool.epochs) == (args.pool_size, args.pool_epochs)
        assert cfg.method.sampling_net is False and cfg.synthetic.factor == 2
    elif method == "dance":  # their aug_type; the pool of the budget, under their recipe
        assert cfg.augment.strategy == "color_crop_cutout" and cfg.augment.choice == "idc"
        assert (cfg.pool.size, cfg.pool.epochs) == (args.pool_size, args.pool_epochs)
        assert cfg.pool.batch_size == 64 and cfg.synthetic.factor == 2
        assert cfg.lr_img == pytest.approx(0.01 * args.ipc)
    else:
        assert cfg.augment.strategy == "color_crop_cutout_scale_rotate"


def test_a_clamped_copy_holds_the_pixels_in_0_1(tmp_path):
    images = torch.tensor([-3.0, -2.0, 0.0, 1.5, 2.0, 3.0]).view(1, 1, 2, 3)
    torch.save({"images": images, "mean": [0.5], "std": [0.25], "ipc": 1}, tmp_path / "set.pt")
    out = load_script(RESCORE).clamped_copy(tmp_path / "set.pt", tmp_path / "clamped.pt")
    clamped = torch.load(out, weights_only=False)
    # normalised -2 and 2 are pixels 0 and 1 under mean 0.5, std 0.25
    assert clamped["images"].flatten().tolist() == [-2.0, -2.0, 0.0, 1.5, 2.0, 2.0]
    assert (clamped["mean"], clamped["std"], clamped["ipc"]) == ([0.5], [0.25], 1)


def test_rescoring_a_finished_run_repeats_its_row(harness):
    (row,) = (harness["root"] / "results").glob("parity_dsa_*.json")
    scratch = harness["root"] / "scratch"
    found = load_script(RESCORE).main(["--row", str(row), "--scratch", str(scratch), "--init"])
    assert found["repeats_row"] is True
    # the initial images rebuilt from the run's folder score as the run's --score-init did
    assert found["accuracies"]["ours_init"] == harness["row"]["ours_init_accuracies"]
    assert found["accuracies"]["theirs_init"] == harness["row"]["theirs_init_accuracies"]
    assert found["as_saved"]["ours_mean"] == pytest.approx(harness["row"]["ours_mean"])
    assert len(found["accuracies"]["theirs_clamped"]) == EVAL_MODELS
    assert row.with_name(row.stem + "_rescored.json").is_file()


def test_gap_arithmetic_and_tolerance():
    parity = load_parity()
    summary = parity.summarise([90.0, 92.0], [85.0, 87.0])
    assert summary["gap"] == pytest.approx(5.0)
    assert (summary["ours_std"], summary["theirs_std"]) == (pytest.approx(1.0),) * 2
    assert summary["within_tolerance"] is False
    assert parity.within_tolerance(-1.4, 0.1, 0.2)  # the 1.5-point floor
    assert not parity.within_tolerance(-1.6, 0.1, 0.2)
    assert parity.within_tolerance(2.2, 1.1, 0.5)  # 2 x the larger std
    assert not parity.within_tolerance(2.3, 1.1, 0.5)


def test_rows_at_other_budgets_or_settings_get_their_own_file_and_table_row():
    parity = load_parity()
    base = ["--method", "dm", "--official", "x", "--ipc", "10", "--steps", "100",
            "--batch-real", "64", "--width", "32"]  # fmt: skip
    args = parity.parse_args(base)
    assert parity.results_name("dm", args) == (
        "parity_dm_mnist_sample_ipc10_100st_b64_w32_1r_3x300ep.json"
    )
    assert parity.budget_text(args) == (
        "100 steps, batch_real 64, width 32, 1 run(s) x 3 nets x 300 ep"
    )
    variants = [["--steps", "40"], ["--batch-real", "256"], ["--width", "64"], ["--runs", "3"],
                ["--eval-models", "5"], ["--eval-epochs", "50"], ["--seed", "1"],
                ["--lr-img", "0.5"], ["--init", "noise"], ["--strategy", "color"]]  # fmt: skip
    names = {parity.results_name("dm", parity.parse_args(base + v)) for v in variants}
    budgets = {parity.budget_text(parity.parse_args(base + v)) for v in variants}
    assert len(names) == len(budgets) == len(variants)
    assert parity.results_name("dm", args) not in names
    ncfm = parity.parse_args(["--method", "ncfm", "--official", "x", "--pool-size", "4",
                              "--pool-epochs", "3", "--num-freqs", "1024"])  # fmt: skip
    assert parity.results_name("ncfm", ncfm) == (
        "parity_ncfm_mnist_sample_ipc1_100st_b256_w128_pool4x3_nf1024_1r_3x300ep.json"
    )
    random_real = parity.parse_args(["--method", "ncfm", "--official", "x",
                                     "--their-real-batches", "random"])  # fmt: skip
    assert parity.results_name("ncfm", random_real) == (
        "parity_ncfm_mnist_sample_ipc1_100st_b256_w128_pool4x2_their-real-random_1r_3x300ep.json"
    )
    assert "their real batches random" in parity.budget_text(random_real)
    when_used = parity.parse_args(["--method", "ncfm", "--official", "x",
                                   "--their-synthetic-batches", "when-used"])  # fmt: skip
    assert "_their-syn-when-used_" in parity.results_name("ncfm", when_used)
    assert "their synthetic read when used" in parity.budget_text(when_used)


@pytest.mark.parametrize(
    ("method", "repository", "needed"),
    [
        ("dsa", "VICO-UoE/DatasetCondensation", "main.py, utils.py, networks.py"),
        ("dm", "VICO-UoE/DatasetCondensation", "main_DM.py, utils.py, networks.py"),
        ("idm", "uitrbn/IDM", "IDM_cifar10.py, utils.py, dc_utils.py, dc_networks.py"),
        ("ncfm", "gszfwsb/NCFM", "condense/condense_script.py, condenser/Condenser.py"),
        ("rded", "LINs-lab/RDED", "argument.py, synthesize/main.py, synthesize/utils.py"),
        ("mtt", "GeorgeCazenavette/mtt-distillation", "distill.py, utils.py, networks.py"),
    ],
)
def test_a_checkout_without_the_files_is_one_line(tmp_path, method, repository, needed):
    (tmp_path / "utils.py").write_text("")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--method", method, "--official", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1, result.stderr
    assert repository in lines[0] and needed in lines[0]


# --- NCFM: a stub of gszfwsb/NCFM -----------------------------------------------------------
# Their layout (packages under the checkout), the functions the adapter replaces or wraps, and a
# condensation loop that loads a pool network strictly by their parameter names each iteration,
# keeps the synthetic images at the first real images of each class, and records what it got.

NCFM_STUB = {
    "condense/condense_script.py": """
import argparse, json, os, sys
sys.path.append(os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))
import yaml
from utils.init_script import init_script
from utils.utils import get_loader, get_feature_extractor
from utils.diffaug import diffaug
from condenser.Condenser import Condenser
from NCFM.SampleNet import SampleNet
import torch

parser = argparse.ArgumentParser()
parser.add_argument('--config_path', type=str, required=True)
parser.add_argument('--gpu', type=str, required=True)
parser.add_argument('-i', '--ipc', type=int, required=True)
parser.add_argument('--init', type=str, default='mix')
parser.add_argument('-a', '--aug_type', type=str, default='color_crop_cutout')
args = parser.parse_args()
with open(args.config_path) as f:
    for group in yaml.safe_load(f).values():
        for key, value in group.items():
            setattr(args, key, value)
init_script(args)
loader_real, _ = get_loader(args)
aug, _ = diffaug(args)
condenser = Condenser(args, list(range(args.nclass)), args.nch, args.size, args.size, device='cuda')
condenser.load_condensed_data(loader_real)
sampling_net = SampleNet(feature_dim=2048) if args.sampling_net else None
optim_sampling_net = (torch.optim.SGD(sampling_net.parameters(), lr=1e-3)
                      if sampling_net is not None else None)
model_init, model_interval, model_final = get_feature_extractor(args)
condenser.condense(args, None, loader_real, aug, None, model_init, model_interval, model_final,
                   sampling_net, optim_sampling_net)
""",
    "condenser/Condenser.py": """
import json, os
import torch
from utils.ddp import load_state_dict

class Condenser:
    def __init__(self, args, nclass_list, nchannel, hs, ws, device='cuda'):
        self.device, self.ipc, self.nclass_list = device, args.ipc, nclass_list
        self.data = torch.zeros(len(nclass_list) * args.ipc, nchannel, hs, ws, device=device)
        self.targets = torch.arange(len(nclass_list), device=device).repeat_interleave(args.ipc)

    def load_condensed_data(self, loader, init_type='mix', load_path=None):
        for c in self.nclass_list:
            self.data[c * self.ipc:(c + 1) * self.ipc] = loader.class_sample(c, self.ipc)[0]

    def condense(self, args, plotter, loader_real, aug, optim_img, model_init, model_interval,
                 model_final, sampling_net=None, optim_sampling_net=None):
        record = {'args': {k: v for k, v in vars(args).items() if k != 'device'},
                  'device': str(args.device), 'loaded': [], 'real': [],
                  'sampling_net_dim': None if sampling_net is None else sampling_net.dim}
        for it in range(args.niter):
            index = it % args.num_premodel
            for stage, model in (('init', model_init), ('trained', model_final)):
                name = f'premodel{index}_{stage}.pth.tar'
                load_state_dict(os.path.join(args.pretrain_dir, name), model)  # strict
                record['loaded'].append(name)
            images, _ = loader_real.class_sample(0)
            record['real'].append([float(images.min()), float(images.max()), len(images)])
            aug(images)
        with open('stub_record.json', 'w') as f:
            json.dump(record, f)
""",
    "condenser/compute_loss.py": "# the stub's loop is in Condenser.condense\n",
    "NCFM/NCFM.py": "# the stub computes no loss\n",
    "NCFM/SampleNet.py": """
import torch

class SampleNet(torch.nn.Module):
    def __init__(self, feature_dim=64, t_batchsize=64, t_var=1):
        super(SampleNet, self).__init__()
        self.dim = feature_dim
        self.layer = torch.nn.Linear(feature_dim, feature_dim)
""",
    "utils/utils.py": """
import torch
from models.convnet import ConvNet

def define_model(dataset, norm_type, net_type, nch, depth, width, nclass, logger, size):
    return ConvNet(nclass, net_width=int(128 * width), channel=nch, im_size=(size, size))

def get_loader(args):
    raise RuntimeError('the adapter must replace get_loader')

def get_feature_extractor(args):
    return tuple(define_model(args.dataset, args.norm_type, args.net_type, args.nch, args.depth,
                              args.width, args.nclass, None, args.size).to(args.device)
                 for _ in range(3))
""",
    "utils/ddp.py": """
import torch

def load_state_dict(path, model):
    model.load_state_dict(torch.load(path, map_location='cpu'))
""",
    "utils/init_script.py": """
import os

def initialize_distribution_training(backend='nccl', init_method='env://'):
    raise RuntimeError('the adapter must replace initialize_distribution_training')

def init_script(args):
    _, _, _, _, args.device = initialize_distribution_training(args.backend, args.init_method)
    args.pretrain_dir = f'./{args.pretrain_dir}/{args.dataset}'
    args.lr_img = args.lr_img * args.lr_scale_adam
""",
    "utils/diffaug.py": """
from data.dataset_statistics import MEANS, STDS
from data.augment import Normalize

def diffaug(args, device='cuda'):
    normalize = Normalize(MEANS[args.dataset], STDS[args.dataset], device=device)
    return normalize, normalize
""",
    "data/augment.py": """
import torch

class Normalize:
    def __init__(self, mean, std, device='cpu'):
        self.mean = torch.tensor(mean, device=device).reshape(1, len(mean), 1, 1)
        self.std = torch.tensor(std, device=device).reshape(1, len(mean), 1, 1)

    def __call__(self, x):
        return (x - self.mean) / self.std
""",
    "data/dataset_statistics.py": "MEANS = {'mnist': [0.1307]}\nSTDS = {'mnist': [0.3081]}\n",
    "data/dataloader.py": """
import torch

class ClassMemDataLoader:
    def __init__(self, dataset, batch_size, drop_last=False, device='cuda'):
        self.data = torch.stack([d[0].to(device) for d in dataset])
        self.targets = torch.tensor(dataset.targets, device=device)
        self.batch_size = batch_size

    def class_sample(self, c, ipc=-1):
        size = ipc if ipc > 0 else self.batch_size
        return self.data[self.targets == c][:size], torch.full((size,), c)
""",
    "models/convnet.py": """
import torch
import torch.nn as nn

class ConvNet(nn.Module):
    def __init__(self, num_classes, net_width=128, channel=3, im_size=(32, 32)):
        super().__init__()
        side = 32 if im_size[0] == 28 else im_size[0]
        convs, norms = [], []
        for d in range(3):
            convs.append(nn.Conv2d(channel if d == 0 else net_width, net_width, 3,
                                   padding=3 if channel == 1 and d == 0 else 1))
            norms.append(nn.GroupNorm(net_width, net_width, affine=True))
            side //= 2
        self.layers = nn.ModuleDict({'conv': nn.ModuleList(convs), 'norm': nn.ModuleList(norms)})
        self.classifier = nn.Linear(net_width * side * side, num_classes)

    def forward(self, x, return_features=False):
        for conv, norm in zip(self.layers['conv'], self.layers['norm']):
            x = nn.functional.avg_pool2d(torch.relu(norm(conv(x))), 2)
        out = x.reshape(x.shape[0], -1)
        return (self.classifier(out), out) if return_features else self.classifier(out)
""",
}
NCFM_STEPS, NCFM_IPC, NCFM_POOL = 3, 2, 2


def write_ncfm_stub(folder: Path) -> Path:
    for name, text in NCFM_STUB.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def ours_in_process(run: Callable[[list[str], dict, Path], None]) -> Callable:
    """The harness's `run`, with our jobs (`python -m dmcondense.*`) called in this process;
    their script still runs as a process (the DSA harness above runs ours as one too)."""

    def run_here(command: list[str], env: dict, log: Path) -> None:
        if command[1] != "-m":
            return run(command, env, log)
        result = ENTRY_POINTS[command[2]](*command[3:])
        log.write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]

    return run_here


@pytest.fixture(scope="module")
def ncfm_harness(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("parity_ncfm")
    official = write_ncfm_stub(root / "NCFM")
    parity = load_parity()
    parity.run = ours_in_process(parity.run)
    row = parity.main([
        "--method", "ncfm", "--official", str(official), "--dataset", "mnist_sample",
        "--ipc", str(NCFM_IPC), "--steps", str(NCFM_STEPS), "--batch-real", str(BATCH_REAL),
        "--width", str(WIDTH), "--eval-models", str(EVAL_MODELS), "--eval-epochs", "1",
        "--pool-size", str(NCFM_POOL), "--pool-epochs", "1", "--num-freqs", "16",
        "--sampling-net", "--scratch", str(root / "scratch"),
        "--data-cache", str(root / "cache"), "--results-dir", str(root / "results"),
    ])  # fmt: skip
    record = json.loads((root / "scratch" / "official_ncfm" / "stub_record.json").read_text())
    return {"root": root, "row": row, "record": record}


def test_ncfm_budget_and_pool_reach_their_loop(ncfm_harness):
    record, row = ncfm_harness["record"], ncfm_harness["row"]
    args = record["args"]
    assert record["device"] == "cpu"
    assert (args["niter"], args["ipc"], args["batch_real"]) == (NCFM_STEPS, NCFM_IPC, BATCH_REAL)
    assert args["width"] * 128 == WIDTH and args["num_premodel"] == NCFM_POOL
    assert args["num_freqs"] == 16 and args["sampling_net"] is True
    assert args["aug_type"] == "color_crop_cutout" and args["factor"] == 2
    assert args["lr_img"] == pytest.approx(1e-3)  # their lr_img x lr_scale_adam: ours
    # Our pool's networks, loaded strictly by their parameter names, both weight sets.
    assert record["loaded"][:4] == [
        "premodel0_init.pth.tar", "premodel0_trained.pth.tar",
        "premodel1_init.pth.tar", "premodel1_trained.pth.tar",
    ]  # fmt: skip
    # Their sampling network is sized to the budget's features (width x 4 x 4 on MNIST).
    assert record["sampling_net_dim"] == WIDTH * 16
    # Real images reach their loop as [0, 1] pixels, a batch of batch_real.
    low, high, count = record["real"][0]
    assert 0.0 <= low < high <= 1.0 + 1e-6 and count == BATCH_REAL
    assert row["method"] == "ncfm-sampling-net" and row["pool_size"] == NCFM_POOL


def test_ncfm_their_set_is_scored_as_network_input(ncfm_harness):
    root, row = ncfm_harness["root"], ncfm_harness["row"]
    theirs = torch.load(root / "scratch" / "theirs_0.pt", weights_only=False)
    data = torch.load(root / "scratch" / "real_data.pt", weights_only=False)
    labels = data["train_labels"]
    first = torch.cat([data["train_images"][labels == c][:NCFM_IPC] for c in range(10)])
    assert theirs["factor"] == 2 and theirs["ipc"] == NCFM_IPC
    torch.testing.assert_close(theirs["images"], first, atol=1e-5, rtol=0)
    assert len(row["ours_accuracies"]) == len(row["theirs_accuracies"]) == EVAL_MODELS
    assert row["gap"] == pytest.approx(row["ours_mean"] - row["theirs_mean"])


def test_their_real_batches_random_drops_the_size_of_the_real_loader_only():
    """Their AsyncLoader asks `class_sample(c, batch_real)`, the first images of the class;
    `--their-real-batches random` makes the real loader's calls draw its random batch, and
    leaves the synthetic loader (not a ClassMemDataLoader) and direct calls as they were."""
    load_parity()  # puts benchmarks/ on the path
    from parity_official import draw_random_real

    class ClassMemDataLoader:  # theirs: a size asks for the first images, none a random batch
        def class_sample(self, c, ipc=-1):
            return ("first", c, ipc) if ipc > 0 else ("random", c)

    class Condenser:  # their synthetic loader also answers class_sample(c, size)
        def class_sample(self, c, max_size=10000):
            return ("synthetic", c, max_size)

    class AsyncLoader:  # theirs, without the thread: it asks for a batch of its batch_size
        def __init__(self, loader_real, class_list, batch_size, device):
            self.loader_real, self.batch_size = loader_real, batch_size

        def class_sample(self, c):
            return self.loader_real.class_sample(c, self.batch_size)

    real, synthetic = ClassMemDataLoader(), Condenser()
    assert AsyncLoader(real, [0, 1], 256, "cpu").class_sample(1) == ("first", 1, 256)
    draw_random_real(AsyncLoader, ClassMemDataLoader)
    assert AsyncLoader(real, [0, 1], 256, "cpu").class_sample(1) == ("random", 1)
    assert AsyncLoader(synthetic, [0, 1], 100000, "cpu").class_sample(1) == ("synthetic", 1, 100000)
    assert real.class_sample(1, 10) == ("first", 1, 10)  # their initial images: unchanged


def test_their_synthetic_batches_when_used_reads_the_images_as_they_are_when_asked():
    """Their AsyncLoader's thread reads a class's synthetic images ahead of use;
    `--their-synthetic-batches when-used` stops that thread for the synthetic loader (their
    Condenser) and reads the images at each call, and leaves the real loader as it was."""
    load_parity()  # puts benchmarks/ on the path
    from parity_official import read_synthetic_when_used

    class Condenser:  # theirs: the stored images, changed by every image step
        version = 0

        def class_sample(self, c, max_size=10000):
            return ("synthetic", c, self.version)

    class ClassMemDataLoader:
        def class_sample(self, c, ipc=-1):
            return ("real", c, ipc)

    class AsyncLoader:  # theirs, in miniature: reads every class once, ahead of use
        def __init__(self, loader_real, class_list, batch_size, device):
            self.loader_real, self.batch_size, self.stopped = loader_real, batch_size, False
            self.queue = {c: loader_real.class_sample(c, batch_size) for c in class_list}

        def stop(self):
            self.stopped = True

        def class_sample(self, c):
            return self.queue[c]

    images = Condenser()
    ahead = AsyncLoader(images, [0, 1], 100000, "cpu")
    images.version = 1  # an image step after the loader read ahead
    assert ahead.class_sample(1) == ("synthetic", 1, 0)  # theirs: the images before the step
    read_synthetic_when_used(AsyncLoader, Condenser)
    when_used = AsyncLoader(images, [0, 1], 100000, "cpu")
    images.version = 2
    assert when_used.class_sample(1) == ("synthetic", 1, 2) and when_used.stopped
    real = AsyncLoader(ClassMemDataLoader(), [0, 1], 256, "cpu")
    assert real.class_sample(1) == ("real", 1, 256) and not real.stopped


@pytest.mark.parametrize("resize", ["nearest", "bilinear"])
def test_our_initial_set_is_packed_as_the_run_packed_it(tmp_path, resize) -> None:
    """--score-init scores our real start: a factor-2 run's tiles shrunk as its config says
    (NCFM and M3D nearest, IDM bilinear), not always bilinear."""
    from dmcondense.io import FORMAT
    from dmcondense.synthetic import SyntheticImages

    images = torch.arange(8 * 16.0).view(8, 1, 4, 4)  # 2 classes x 1 image x 4 tiles
    record = {"format": FORMAT, "class_names": ["0", "1"], "ipc": 1, "factor": 2,
              "init_indices": torch.tensor([5, 1, 2, 7, 0, 3, 6, 4]),
              "images": torch.zeros(2, 1, 4, 4),
              "config": {"synthetic": {"init_resize": resize}}}  # fmt: skip
    torch.save(record, tmp_path / "synthetic.pt")
    torch.save({"train_images": images}, tmp_path / "data.pt")
    out = load_parity().save_initial_record(tmp_path, tmp_path / "data.pt", tmp_path / "init.pt")
    packer, start = SyntheticImages(2, 1, 2), images[record["init_indices"]]
    expected = packer.encode(start, resize)
    assert torch.equal(torch.load(out, weights_only=False)["images"], expected)
    other = "bilinear" if resize == "nearest" else "nearest"
    assert not torch.equal(expected, packer.encode(start, other))  # the two packings differ


# --- RDED: a stub of LINs-lab/RDED ------------------------------------------------------------

RDED_IPC = 2
RDED_STUB = {
    "argument.py": """
import argparse
parser = argparse.ArgumentParser("stub")
for flag in ("--subset", "--arch-name", "--stud-name"):
    parser.add_argument(flag, type=str)
for flag in ("--factor", "--num-crop", "--mipc", "--ipc"):
    parser.add_argument(flag, type=int)
args = parser.parse_args()
""",
    "main.py": "# the stub's work is in synthesize/main.py\n",
    "synthesize/__init__.py": "",
    "synthesize/models.py": "# no networks: the adapter hands in the observer\n",
    "synthesize/utils.py": """
import torch
from torchvision import transforms
normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
denormalize = transforms.Normalize(mean=[-2.1179, -2.0357, -1.8044], std=[4.3668, 4.4643, 4.4444])
def to_device(x):
    return x.cuda()
""",
    "synthesize/main.py": """
import json, os
import torch
from torchvision import transforms
from synthesize.utils import *
from validation.utils import ImageFolder
def init_images(args, model=None):
    trainset = ImageFolder(classes=args.classes, ipc=args.mipc, shuffle=True,
                           root=args.train_dir, transform=None)
    trainset.transform = transforms.Compose([transforms.ToTensor(), normalize])
    for c in range(len(args.classes)):
        rows = [i for i in range(len(trainset)) if trainset.targets[i] == c][: args.ipc]
        images = to_device(torch.stack([trainset[i][0] for i in rows]))
        model(images)  # the stub keeps the first ipc images of its shuffled order
        save_images(args, denormalize(images), c)
def save_images(args, images, class_id):
    os.makedirs(args.syn_data_path, exist_ok=True)
    with open(os.path.join(args.syn_data_path, "stub_record.json"), "w") as f:
        json.dump({"mipc": args.mipc, "ipc": args.ipc, "num_crop": args.num_crop,
                   "factor": args.factor, "input_size": args.input_size,
                   "mean": list(normalize.mean)}, f)
""",
    "validation/__init__.py": "",
    "validation/utils.py": """
import os, random
import torchvision
class ImageFolder(torchvision.datasets.ImageFolder):
    def __init__(self, classes, ipc, mem=False, shuffle=False, **kwargs):
        super().__init__(**kwargs)
        self.image_paths, self.targets = [], []
        for c in range(len(classes)):
            dir_path = self.root + "/" + str(classes[c]).zfill(5)
            files = sorted(os.listdir(dir_path))
            if shuffle:
                random.shuffle(files)
            for i in range(ipc):
                self.image_paths.append(dir_path + "/" + files[i])
                self.targets.append(c)
    def __getitem__(self, index):
        return self.transform(self.loader(self.image_paths[index])), self.targets[index]
    def __len__(self):
        return len(self.targets)
""",
}


@pytest.fixture(scope="module")
def rded_harness(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("parity_rded")
    official = root / "RDED"
    for name, text in RDED_STUB.items():
        (official / name).parent.mkdir(parents=True, exist_ok=True)
        (official / name).write_text(text)
    parity = load_parity()
    parity.run = ours_in_process(parity.run)
    row = parity.main([
        "--method", "rded", "--official", str(official), "--dataset", "mnist_sample",
        "--ipc", str(RDED_IPC), "--batch-real", str(BATCH_REAL), "--num-crop", "3",
        "--width", str(WIDTH), "--eval-models", str(EVAL_MODELS), "--eval-epochs", "1",
        "--pool-size", "1", "--pool-epochs", "1", "--score-init",
        "--scratch", str(root / "scratch"), "--data-cache", str(root / "cache"),
        "--results-dir", str(root / "results"),
    ])  # fmt: skip
    syn = root / "scratch" / "official_rded" / "syn" / "stub_record.json"
    return {"root": root, "row": row, "record": json.loads(syn.read_text())}


def test_rded_budget_statistics_and_set_reach_and_leave_their_code(rded_harness):
    root, row, record = rded_harness["root"], rded_harness["row"], rded_harness["record"]
    assert (record["mipc"], record["ipc"], record["num_crop"]) == (BATCH_REAL, RDED_IPC, 3)
    assert record["factor"] == 1 and record["input_size"] == 28
    assert record["mean"] == pytest.approx([0.1307] * 3)  # our split's, not ImageNet's
    theirs = torch.load(root / "scratch" / "theirs_0.pt", weights_only=False)
    start = torch.load(root / "scratch" / "theirs_0_init.pt", weights_only=False)
    # The stub keeps its shuffle's first images: their set is their start, through their
    # denormalise and their file writer's truncation to 8 bits (within one grey level).
    assert theirs["images"].shape == (10 * RDED_IPC, 1, 28, 28) and theirs["factor"] == 1
    torch.testing.assert_close(theirs["images"], start["images"], atol=1.01 / 255 / 0.3081,
                               rtol=0)  # fmt: skip
    json_row = json.loads(next((root / "results").glob("parity_rded_*.json")).read_text())
    assert json_row["budget"].startswith("1 steps") and "3 crops" in json_row["budget"]
    assert row["gap"] == pytest.approx(row["ours_mean"] - row["theirs_mean"])
    assert len(row["ours_init_accuracies"]) == EVAL_MODELS


# --- DANCE: a stub of Hansong-Zhang/DANCE -------------------------------------------------------
# Their layout (IDC's: DANCE.py beside common.py, data.py, test.py, train.py, misc/, models/ and
# arguments/), their CUDA defaults (which the scratch copy must move to the CPU), their
# argument module parsed at import, and a loop that loads a pool network strictly by their
# parameter names each iteration and keeps the images at the first real images of each class.
DANCE_STUB = {
    "DANCE.py": """
import json, os, random
import torch
from data import ClassMemDataLoader
from common import define_model, load_resized_data, diffaug
from test import test_data
from misc import utils

class Synthesizer():
    def __init__(self, args, nclass, nchannel, hs, ws, device='cuda'):
        self.data = torch.zeros(nclass * args.ipc, nchannel, hs, ws, device=device)
        self.targets = torch.arange(nclass, device=device).repeat_interleave(args.ipc)

def condense(args, logger, device='cuda'):
    trainset, val_loader = load_resized_data(args)
    loader_real = ClassMemDataLoader(trainset, batch_size=args.batch_real)
    synset = Synthesizer(args, trainset.nclass, *trainset[0][0].shape)
    for c in range(trainset.nclass):  # their 'mix' init reads the first images of a class
        synset.data[args.ipc * c:args.ipc * (c + 1)] = loader_real.class_sample(c, args.ipc)[0]
    aug, _ = diffaug(args)
    record = {"args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str))},
              "device": str(synset.data.device), "loaded": [], "real": [],
              "test": test_data(args, None, val_loader)}
    ts = utils.TimeStamp(args.time)
    model = define_model(args, trainset.nclass)
    for it in range(args.niter):
        i = random.randint(0, args.num_premodel - 1)
        for stage in ("init", "trained"):
            name = f"premodel{i}_{stage}.pth.tar"
            model.load_state_dict(torch.load(os.path.join(args.pretrain_dir, name)))
            record["loaded"].append(name)
        l = torch.rand(1).cuda()
        img, _ = loader_real.class_sample(it % trainset.nclass)
        record["real"].append([float(img.min()), float(img.max()), int(img.shape[0])])
    json.dump(record, open("stub_record.json", "w"))

if __name__ == '__main__':
    from arguments.arg_condense import args
    condense(args, print)
""",
    "common.py": """
import torch
from data import MEANS, STDS
from models.convnet import ConvNet

def define_model(args, nclass):
    return ConvNet(nclass, int(128 * args.width), args.depth, args.nch, args.size)

def load_resized_data(args):
    raise RuntimeError("the adapter must replace load_resized_data")

def diffaug(args, device='cuda'):
    mean = torch.tensor(MEANS[args.dataset], device=device)
    return (lambda x: x - mean.view(1, -1, 1, 1)), None
""",
    "data.py": """
import torch
MEANS = {'cifar10': [0.5, 0.5, 0.5]}
STDS = {'cifar10': [0.25, 0.25, 0.25]}

class ClassMemDataLoader():
    def __init__(self, dataset, batch_size, drop_last=False, device='cuda'):
        self.data = torch.stack([d[0] for d in dataset]).to(device)
        self.targets = torch.tensor(dataset.targets, device=device)
        self.batch_size = batch_size

    def class_sample(self, c, ipc=-1):
        index = (self.targets == c).nonzero().flatten()
        return self.data[index[:ipc if ipc > 0 else self.batch_size]], c
""",
    "test.py": """
from train import train
def test_data(*args, **kwargs):
    raise RuntimeError("the adapter must replace test_data")
""",
    "train.py": """
import torch
mean_torch = torch.tensor([0.5], device='cuda')
def train():
    pass
""",
    "misc/utils.py": """
import time
class TimeStamp():
    def __init__(self, print_log=True):
        self.prev = time.time()
""",
    "misc/augment.py": "",
    "models/convnet.py": """
import torch
from torch import nn

class ConvNet(nn.Module):
    def __init__(self, num_classes, net_width, net_depth, channel, size):
        super().__init__()
        convs, norms, side = [], [], 32 if size == 28 else size  # digits padded to 32
        for d in range(net_depth):
            pad = 3 if d == 0 and size == 28 else 1
            convs.append(nn.Conv2d(channel if d == 0 else net_width, net_width, 3, padding=pad))
            norms.append(nn.GroupNorm(net_width, net_width, affine=True))
            side //= 2
        self.layers = nn.ModuleDict({'conv': nn.ModuleList(convs), 'norm': nn.ModuleList(norms)})
        self.classifier = nn.Linear(net_width * side * side, num_classes)
""",
    "arguments/arg_condense.py": """
import argparse
parser = argparse.ArgumentParser()
for flag, kind, default in (("-d", str, "cifar10"), ("--ipc", int, -1), ("--factor", int, 1),
        ("--niter", int, 500), ("--lr_img", float, 5e-3), ("--batch_real", int, 128),
        ("--num_premodel", int, 5), ("--iter_calib", int, 1), ("--net_type", str, "convnet"),
        ("--depth", int, 10), ("--width", float, 1.0), ("--norm_type", str, "instance"),
        ("--aug_type", str, "color_crop_cutout"), ("--seed", int, 0), ("--workers", int, 8)):
    parser.add_argument(flag, type=kind, default=default)
parser.add_argument("--test", action="store_true")
parser.add_argument("--time", action="store_true")
args = parser.parse_args()
args.dataset = args.d
args.nclass, args.nch, args.size = 10, (1 if args.dataset == 'mnist' else 3), 28
""",
    "arguments/reproduce_condense.py": "",
}
DANCE_STEPS, DANCE_IPC, DANCE_POOL = 3, 2, 2


@pytest.fixture(scope="module")
def dance_harness(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("parity_dance")
    official = root / "DANCE"
    for name, text in DANCE_STUB.items():
        (official / name).parent.mkdir(parents=True, exist_ok=True)
        (official / name).write_text(text)
    parity = load_parity()
    parity.run = ours_in_process(parity.run)
    row = parity.main([
        "--method", "dance", "--official", str(official), "--dataset", "mnist_sample",
        "--ipc", str(DANCE_IPC), "--steps", str(DANCE_STEPS), "--batch-real", str(BATCH_REAL),
        "--width", str(WIDTH), "--eval-models", str(EVAL_MODELS), "--eval-epochs", "1",
        "--pool-size", str(DANCE_POOL), "--pool-epochs", "1", "--score-init",
        "--scratch", str(root / "scratch"), "--data-cache", str(root / "cache"),
        "--results-dir", str(root / "results"),
    ])  # fmt: skip
    record = json.loads((root / "scratch" / "official_dance" / "stub_record.json").read_text())
    return {"root": root, "row": row, "record": record}


def test_dance_budget_and_pool_reach_their_loop(dance_harness):
    record, row = dance_harness["record"], dance_harness["row"]
    args = record["args"]
    assert record["device"] == "cpu" and record["test"] == 0.0  # their evaluation: a no-op
    assert (args["niter"], args["ipc"], args["batch_real"]) == (DANCE_STEPS, DANCE_IPC, BATCH_REAL)
    assert args["width"] * 128 == WIDTH and args["num_premodel"] == DANCE_POOL
    assert (args["depth"], args["factor"], args["iter_calib"]) == (3, 2, 1)
    assert args["aug_type"] == "color_crop_cutout" and args["dataset"] == "mnist"
    assert args["lr_img"] == pytest.approx(0.01 * DANCE_IPC)  # their reproduce preset's
    assert len(record["loaded"]) == 2 * DANCE_STEPS and all(
        name.startswith(("premodel0_", "premodel1_")) for name in record["loaded"]
    )
    low, high, count = record["real"][0]  # [0, 1] pixels, a batch of batch_real
    assert 0.0 <= low < high <= 1.0 + 1e-6 and count == BATCH_REAL
    assert row["method"] == "dance" and row["pool_size"] == DANCE_POOL
    edits = " ".join(row["compat_edits"])
    assert "DANCE.py: 2 x their default device is CUDA" in edits
    assert "DANCE.py: 1 x the interpolation weight l is moved to CUDA" in edits
    assert f"pool {DANCE_POOL} x 1 ep" in row["budget"]


def test_dance_their_sets_are_scored_as_network_input(dance_harness):
    root, row = dance_harness["root"], dance_harness["row"]
    data = torch.load(root / "scratch" / "real_data.pt", weights_only=False)
    labels = data["train_labels"]
    first = torch.cat([data["train_images"][labels == c][:DANCE_IPC] for c in range(10)])
    for name in ("theirs_0.pt", "theirs_0_init.pt"):  # the stub's loop leaves its start alone
        theirs = torch.load(root / "scratch" / name, weights_only=False)
        assert theirs["factor"] == 2 and theirs["ipc"] == DANCE_IPC
        torch.testing.assert_close(theirs["images"], first, atol=1e-5, rtol=0)
    assert len(row["theirs_init_accuracies"]) == EVAL_MODELS
    assert row["gap"] == pytest.approx(row["ours_mean"] - row["theirs_mean"])


# --- MTT: a stub of GeorgeCazenavette/mtt-distillation ---------------------------------------
# distill.py's flags, its wandb calls (init with the args, which it rebuilds from
# wandb.config._items; the step size logged every iteration), the replay buffer it loads, and
# its saves at the evaluation iterations (./logged_files/<dataset>/<run name>/images_<it>.pt);
# its "update" multiplies the step size by 1.1 and leaves the images at the first real images.

MTT_STUB_UTILS = STUB_UTILS.replace(
    "def get_network(model, channel, num_classes, im_size=(32, 32)):\n"
    "    width = get_default_convnet_setting()[0]\n"
    '    RECORD["widths"].append(width)\n'
    '    RECORD["networks"] += 1\n'
    "    return torch.nn.Conv2d(channel, width, 3)\n",
    "def get_network(model, channel, num_classes, im_size=(32, 32), dist=True):\n"
    "    from dmcondense.models.registry import build_model  # stands in for their ConvNet\n"
    "    width = get_default_convnet_setting()[0]\n"
    '    RECORD["widths"].append(width)\n'
    '    return build_model("convnet", channel, num_classes, im_size[0], width=width)\n',
)

MTT_STUB_DISTILL = """
import argparse, json, os
import numpy as np
import torch
import wandb
import utils
from utils import get_dataset, get_network, evaluate_synset, get_time

parser = argparse.ArgumentParser()
for flag in ("dataset", "model", "eval_mode", "pix_init", "dsa", "dsa_strategy", "data_path",
             "buffer_path"):
    parser.add_argument("--" + flag, type=str, default="")
for flag in ("ipc", "num_eval", "eval_it", "epoch_eval_train", "Iteration", "expert_epochs",
             "syn_steps", "max_start_epoch", "batch_syn"):
    parser.add_argument("--" + flag, type=int, default=0)
for flag in ("lr_img", "lr_lr", "lr_teacher"):
    parser.add_argument("--" + flag, type=float, default=0.0)
args = parser.parse_args()
wandb.init(config=args)
args = type("", (), {})()
for key in wandb.config._items:
    setattr(args, key, wandb.config._items[key])
args.device = "cpu"
channel, im_size, num_classes, names, mean, std, dst_train, dst_test, loader, _, _, _ = (
    get_dataset(args.dataset, args.data_path, 256, None, args=args))
buffer = torch.load(os.path.join(args.buffer_path, args.dataset, args.model, "replay_buffer_0.pt"))
labels = dst_train.labels
image_syn = torch.cat([dst_train.images[labels == c][: args.ipc] for c in range(num_classes)])
label_syn = torch.arange(num_classes).repeat_interleave(args.ipc)
syn_lr = torch.tensor(args.lr_teacher)
eval_it_pool = np.arange(0, args.Iteration + 1, args.eval_it).tolist()
print("%s training begins" % get_time())
for it in range(args.Iteration + 1):
    if it in eval_it_pool:
        evaluate_synset(0, None, image_syn, label_syn, loader, args)
        image_save = image_syn.cuda()
        save_dir = os.path.join(".", "logged_files", args.dataset, wandb.run.name)
        os.makedirs(save_dir, exist_ok=True)
        torch.save(image_save.cpu(), os.path.join(save_dir, "images_{}.pt".format(it)))
        torch.save(label_syn.cpu(), os.path.join(save_dir, "labels_{}.pt".format(it)))
    wandb.log({"Synthetic_LR": syn_lr.detach().cpu()}, step=it)
    syn_lr = syn_lr * 1.1
with open("stub_record.json", "w") as f:
    json.dump({"args": vars(args), "widths": utils.RECORD["widths"], "experts": len(buffer),
               "snapshots": len(buffer[0]), "shapes": [list(p.shape) for p in buffer[0][0]]}, f)
"""

MTT_STEPS, MTT_IPC = 2, 1


def write_mtt_stub(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "utils.py").write_text(MTT_STUB_UTILS)
    (folder / "distill.py").write_text(MTT_STUB_DISTILL)
    (folder / "networks.py").write_text("# the stub's network is utils.get_network's\n")
    (folder / "reparam_module.py").write_text("# unused by the stub\n")
    return folder


@pytest.fixture(scope="module")
def mtt_harness(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("parity_mtt")
    official = write_mtt_stub(root / "mtt-distillation")
    parity = load_parity()
    parity.run = ours_in_process(parity.run)
    row = parity.main([
        "--method", "mtt", "--official", str(official), "--dataset", "mnist_sample",
        "--ipc", str(MTT_IPC), "--steps", str(MTT_STEPS), "--width", str(WIDTH),
        "--eval-models", "1", "--eval-epochs", "1", "--experts-size", "1",
        "--experts-epochs", "2", "--syn-steps", "2", "--expert-epochs", "1",
        "--max-start-epoch", "1", "--lr-lr", "1e-3", "--score-init",
        "--scratch", str(root / "scratch"), "--data-cache", str(root / "cache"),
        "--results-dir", str(root / "results"),
    ])  # fmt: skip
    record = json.loads((root / "scratch" / "official_mtt" / "stub_record.json").read_text())
    return {"root": root, "row": row, "record": record, "official": official}


def test_mtt_budget_and_experts_reach_their_script(mtt_harness):
    record, row = mtt_harness["record"], mtt_harness["row"]
    args = record["args"]
    assert (args["ipc"], args["Iteration"], args["eval_it"]) == (MTT_IPC, MTT_STEPS, MTT_STEPS)
    assert (args["syn_steps"], args["expert_epochs"], args["max_start_epoch"]) == (2, 1, 1)
    assert (args["lr_lr"], args["lr_teacher"], args["lr_img"]) == (1e-3, 0.01, 1000.0)
    assert args["pix_init"] == "real" and args["dsa"] == "True"
    assert set(record["widths"]) == {WIDTH}
    # our one expert, 2 epochs: 3 snapshots, split into their network's parameter shapes
    assert (record["experts"], record["snapshots"]) == (1, 3)
    ours = torch.load(Path(row["experts"]) / "expert_000.pt", weights_only=True)
    assert sum(torch.Size(s).numel() for s in record["shapes"]) == ours["trajectory"].shape[1]
    copy = (mtt_harness["root"] / "scratch" / "official" / "distill.py").read_text()
    assert "image_syn.to(args.device)" in copy and ".cuda()" not in copy
    assert ".cuda()" in (mtt_harness["official"] / "distill.py").read_text()


def test_mtt_sets_are_scored_at_their_own_learned_step_sizes(mtt_harness):
    row = mtt_harness["row"]
    theirs = torch.load(mtt_harness["root"] / "scratch" / "theirs_0.pt", weights_only=False)
    # their step size after MTT_STEPS updates (the stub's x 1.1 an update), logged through wandb
    assert theirs["lr"] == pytest.approx(0.01 * 1.1**MTT_STEPS)
    init = torch.load(mtt_harness["root"] / "scratch" / "theirs_0_init.pt", weights_only=False)
    assert init["lr"] == 0.01
    assert row["learned_lr"]["theirs"] == [theirs["lr"]] and len(row["learned_lr"]["ours"]) == 1
    assert len(row["ours_accuracies"]) == len(row["theirs_accuracies"]) == 1
    assert len(row["theirs_init_accuracies"]) == 1
    assert row["ours_seconds_per_step"] > 0 and row["theirs_seconds_per_step"] > 0


def test_mtt_adapter_clocks_each_of_their_iterations(mtt_harness):
    timing = json.loads((mtt_harness["root"] / "scratch" / "theirs_0.json").read_text())
    # their loop makes MTT_STEPS + 1 updates; the first, with its one-off costs, is left out
    assert len(timing["iteration_seconds"]) == len(timing["iteration_cpu_seconds"]) == MTT_STEPS
    assert min(timing["iteration_seconds"]) > 0 and min(timing["iteration_cpu_seconds"]) >= 0
    assert timing["rss_after_loop_mib"] >= timing["rss_before_loop_mib"] > 0
