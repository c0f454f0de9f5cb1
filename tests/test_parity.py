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
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "parity.py"

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


def load_parity():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("parity", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    written = json.loads(
        (harness["root"] / "results" / "parity_dsa_mnist_sample_ipc1.json").read_text()
    )
    assert written["gap"] == pytest.approx(row["gap"])
    table = (harness["root"] / "results" / "parity.md").read_text().splitlines()
    assert len(table) == 3 and f"{row['gap']:+.2f}" in table[2]


def test_score_init_needs_real_initial_images(tmp_path):
    official = write_stub(tmp_path / "official")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--method", "dc", "--official", str(official),
         "--score-init"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --score-init scores the real images a run starts from: use --init real"
    )


@pytest.mark.parametrize("method", ["dc", "dsa", "dm", "idm"])
def test_our_overrides_compose_for_every_method(method, tmp_path):
    from hydra import compose, initialize_config_dir

    from dmcondense.cli import CONF_DIR

    parity = load_parity()
    args = parity.parse_args(["--method", method, "--official", str(tmp_path)])
    overrides = parity.dataset_overrides("mnist_sample", tmp_path) + parity.budget_overrides(args)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides)
    assert cfg.lr_img == parity.METHOD_DEFAULTS[method]["lr_img"]
    assert cfg.model.width == args.width and cfg.batch_real == args.batch_real
    if method == "dc":  # augment=none: nothing to set
        assert "strategy" not in cfg.augment
    else:
        assert cfg.augment.strategy == "color_crop_cutout_scale_rotate"


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


@pytest.mark.parametrize(
    ("method", "repository", "needed"),
    [
        ("dsa", "VICO-UoE/DatasetCondensation", "main.py, utils.py, networks.py"),
        ("dm", "VICO-UoE/DatasetCondensation", "main_DM.py, utils.py, networks.py"),
        ("idm", "uitrbn/IDM", "IDM_cifar10.py, utils.py, dc_utils.py, dc_networks.py"),
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
