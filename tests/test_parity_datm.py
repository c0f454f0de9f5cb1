"""benchmarks/parity.py --method datm: the adapter against a stub of the authors' DATM code.

The stub stands in for a checkout of NUS-HPC-AI-Lab/DATM: the files the adapter needs, the
functions it replaces or wraps (utils/utils_baseline.py), their yacs config (utils/cfg.py) and a
`distill/DATM.py` that, as theirs, merges its --cfg file into the config, rebuilds its arguments
from `wandb.config`, reads the replay buffers, starts from real images with logits as labels, and
moves the images, the labels and the step size every iteration. It records what it was given, so
the test can check that the budget, the experts and the edits reached it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from test_parity import STUB_UTILS  # the functions the adapter replaces, as DatasetCondensation's

REPO = Path(__file__).resolve().parents[1]

STUB_CFG = """
from yacs.config import CfgNode as CN
CFG = CN()
for key, value in dict(dataset="CIFAR10", model="ConvNet", ipc=1, syn_steps=80, expert_epochs=2,
                       min_start_epoch=0, max_start_epoch=25, current_max_start_epoch=20,
                       expansion_end_epoch=3000, Sequential_Generation=True, lr_img=1000,
                       lr_teacher=0.01, lr_lr=0.00001, lr_y=2.0, Momentum_y=0.9, threshold=1.0,
                       pix_init="samples_predicted_correctly", batch_syn=None, Iteration=5000,
                       eval_it=100, skip_first_eva=False, num_eval=5, buffer_path="",
                       data_path="", zca=True, dsa=True, dsa_strategy="", device=[0],
                       project="TEST").items():
    setattr(CFG, key, value)
"""

STUB_DATM = """
import argparse, json, os, sys
sys.path.append("../")
import pytest
import torch
import wandb
from utils.cfg import CFG as cfg
from utils.utils_baseline import get_dataset, evaluate_synset, get_time, get_default_convnet_setting

def manual_seed(seed=0):
    torch.manual_seed(seed)

def main(args):
    manual_seed()
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device("cuda:0")
    given = get_dataset(args.dataset, args.data_path, 256, "", args=args)
    num_classes, dst_train = given[2], given[6]
    wandb.init(project=args.project, config=args)
    args = type("", (), {})()
    for key in wandb.config._items:
        setattr(args, key, wandb.config._items[key])
    folder = os.path.join(args.buffer_path, args.dataset)
    if args.dataset in ["CIFAR10", "CIFAR100"] and not args.zca:
        folder += "_NO_ZCA"
    folder = os.path.join(folder, args.model)
    files = sorted(f for f in os.listdir(folder) if f.startswith("replay_buffer_"))
    buffers = [torch.load(os.path.join(folder, f)) for f in files]
    experts = [e for b in buffers for e in b]
    labels = dst_train.labels
    image_syn = torch.cat([dst_train.images[labels == c][: args.ipc] for c in range(num_classes)])
    label_syn = torch.zeros(num_classes * args.ipc, num_classes)
    syn_lr = torch.tensor(args.lr_teacher)
    print("%s training begins" % get_time())
    for it in range(args.Iteration + 1):
        wandb.log({"Progress": it}, step=it)
        wandb.log({"Synthetic_LR": syn_lr.detach().cpu()}, step=it)
        image_syn = image_syn + 1.0
        label_syn = label_syn + 0.5
        syn_lr = syn_lr + 0.001
    record = {"args": {k: getattr(args, k) for k in wandb.config._items},
              "device": str(device), "width": get_default_convnet_setting()[0],
              "files": files, "experts": len(experts),
              "snapshots": [len(e) for e in experts],
              "flat": [list(e[0][0].shape) for e in experts],
              "torch_seed": torch.initial_seed()}
    with open(os.path.join(args.buffer_path, "..", "stub_record.json"), "w") as f:
        json.dump(record, f)
    wandb.finish()

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg", type=str, default="")
    args = parser.parse_args()
    cfg.merge_from_file(args.cfg)
    for key, value in cfg.items():
        parser.add_argument("--" + key, type=type(value), default=value)
    main(parser.parse_args())
"""


def load_benchmark(name: str):
    """A benchmarks/ module, imported as its neighbours import it."""
    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def write_datm_stub(folder: Path) -> Path:
    for name, text in (("distill/DATM.py", STUB_DATM), ("utils/utils_baseline.py", STUB_UTILS),
                       ("utils/cfg.py", STUB_CFG), ("networks.py", "# stub\n"),
                       ("reparam_module.py", "# stub\n")):  # fmt: skip
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize("their_dataset, zca", [("MNIST", False), ("CIFAR10", False),
                                                ("CIFAR10", True)])  # fmt: skip
def test_the_adapter_runs_their_loop_on_our_data_and_experts(
    tmp_path, monkeypatch, their_dataset, zca
) -> None:
    """Their loop finds the experts where it looks (CIFAR's folder says whether the data are
    whitened) and is told whether they are."""
    official = load_benchmark("parity_official")
    checkout = write_datm_stub(tmp_path / "checkout")
    assert official.missing_files(checkout, "datm") is None
    edits = official.prepare_copy(checkout, tmp_path / "copy")
    assert any("cuda:0" in e for e in edits) and any("seed" in e for e in edits)
    assert "cuda:0" in (checkout / "distill" / "DATM.py").read_text()  # theirs untouched
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(4)
    torch.save({"train_images": torch.randn(12, 1, 8, 8, generator=g), "train_labels": labels,
                "test_images": torch.randn(6, 1, 8, 8, generator=g),
                "test_labels": torch.arange(3).repeat(2), "class_names": ["a", "b", "c"],
                "mean": [0.5], "std": [0.5], "config": {}}, tmp_path / "data.pt")  # fmt: skip
    folder = tmp_path / "experts"  # 12 experts of 5 epochs, as our experts job writes them
    folder.mkdir()
    for i in range(12):
        torch.save({"trajectory": torch.randn(6, 40, generator=g)}, folder / f"expert_{i:03d}.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("utils", "utils.cfg", "utils.utils_baseline", "wandb", "yacs", "yacs.config"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    steps, out = 3, tmp_path / "theirs.pt"
    official.main([
        "--method", "datm", "--copy", str(tmp_path / "copy"), "--data", str(tmp_path / "data.pt"),
        "--out", str(out), "--their-dataset", their_dataset, "--ipc", "2", "--steps", str(steps),
        "--batch-real", "1", "--width", "8", "--lr-img", "100", "--init", "correct",
        "--strategy", "color_crop", "--seed", "3", "--experts", str(folder), "--experts-size", "12",
        "--syn-steps", "7", "--expert-epochs", "2", "--max-start-epoch", "3",
        "--initial-max-start-epoch", "2", "--expansion-end", "50", "--lr-y", "5.0",
        "--threshold", "1.1", "--lr-lr", "1e-07", *(["--zca"] if zca else []),
    ])  # fmt: skip
    record = json.loads((tmp_path / "official_datm" / "stub_record.json").read_text())
    given = record["args"]
    assert given["Iteration"] == steps - 1 and given["eval_it"] > given["Iteration"]
    assert (given["syn_steps"], given["expert_epochs"], given["max_start_epoch"]) == (7, 2, 3)
    assert given["current_max_start_epoch"] == 2 and given["expansion_end_epoch"] == 50
    assert given["Sequential_Generation"] is True and given["pix_init"].startswith("samples")
    assert (given["lr_y"], given["threshold"], given["lr_lr"], given["ipc"]) == (5.0, 1.1, 1e-7, 2)
    assert given["batch_syn"] == 6 and given["dsa_strategy"] == "color_crop"
    assert given["zca"] is zca and given["dataset"] == their_dataset
    assert record["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert record["width"] == 8 and record["torch_seed"] == 3
    # 12 experts in files of 10, each snapshot one flat tensor of the trajectory
    assert record["files"] == ["replay_buffer_0.pt", "replay_buffer_1.pt"]
    assert record["experts"] == 12 and record["snapshots"] == [6] * 12
    assert record["flat"] == [[40]] * 12
    saved = torch.load(out, weights_only=False)
    initial = torch.load(tmp_path / "theirs_init.pt", weights_only=False)
    start = torch.cat([torch.load(tmp_path / "data.pt")["train_images"][labels == c][:2]
                       for c in range(3)])  # fmt: skip
    assert torch.equal(initial["images"], start)  # kept at their loop's first log
    assert torch.allclose(saved["images"], start + steps)  # and at its end
    assert torch.allclose(saved["soft_labels"], torch.full((6, 3), 0.5 * steps))
    assert torch.equal(initial["soft_labels"], torch.zeros(6, 3))
    assert abs(saved["lr"] - (0.01 + 0.001 * steps)) < 1e-6 and abs(initial["lr"] - 0.01) < 1e-6
    assert saved["labels"].tolist() == [0, 0, 1, 1, 2, 2] and saved["ipc"] == 2
    timing = json.loads(out.with_suffix(".json").read_text())
    assert "wandb" in timing["stand_ins"] and timing["seconds_per_step"] > 0
    # steps updates, each clocked from its step size's log; the first, with its one-off costs,
    # is left out (benchmarks/mtt_step_time.py --method datm)
    assert len(timing["iteration_seconds"]) == len(timing["iteration_cpu_seconds"]) == steps - 1
    assert min(timing["iteration_seconds"]) > 0
    assert timing["rss_after_loop_mib"] >= timing["rss_before_loop_mib"] > 0


@pytest.mark.parametrize("zca", [False, True])
def test_the_harness_end_to_end_scores_each_set_at_its_own_rate(tmp_path, monkeypatch, zca) -> None:
    from test_parity import ours_in_process

    from dmcondense.io import read_synthetic

    parity = load_benchmark("parity")
    monkeypatch.setattr(parity, "run", ours_in_process(parity.run))
    checkout = write_datm_stub(tmp_path / "DATM")
    for name in ("utils", "utils.cfg", "utils.utils_baseline", "wandb", "yacs", "yacs.config"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    steps = 2
    row = parity.main([
        "--method", "datm", "--official", str(checkout), "--dataset", "mnist_sample",
        "--ipc", "1", "--steps", str(steps), "--width", "8", "--eval-models", "1",
        "--eval-epochs", "1", "--syn-steps", "2", "--expert-epochs", "1",
        "--max-start-epoch", "2", "--experts-size", "2", "--experts-epochs", "2",
        "--lr-lr", "0.001", "--threshold", "10", "--lr-img", "100", "--score-init",
        "--scratch", str(tmp_path / "scratch"), "--data-cache", str(tmp_path / "cache"),
        "--results-dir", str(tmp_path / "results"), *(["--zca"] if zca else []),
    ])  # fmt: skip
    record = json.loads((tmp_path / "scratch" / "official_datm" / "stub_record.json").read_text())
    assert record["args"]["zca"] is zca
    ours = read_synthetic(tmp_path / "scratch" / "ours_0")
    # Both sides match the same experts: ours, written as their replay buffer.
    assert record["experts"] == 2 and record["snapshots"] == [3, 3]
    assert record["args"]["syn_steps"] == 2 and record["args"]["Iteration"] == steps - 1
    assert record["args"]["threshold"] == 10.0 and record["args"]["lr_y"] == 2.0
    # Each set carries its learned rate: ours, and theirs (the stub's 0.01 + 0.001 a step).
    assert row["learned_lr"]["ours"] == [pytest.approx(ours["lr"])]
    assert row["learned_lr"]["theirs"] == [pytest.approx(0.01 + 0.001 * steps)]
    assert len(row["ours_accuracies"]) == len(row["theirs_accuracies"]) == 1
    assert "ours_init_mean" in row and "start 0-2" in row["budget"]
    initial = torch.load(tmp_path / "scratch" / "ours_0_init.pt", weights_only=False)
    assert initial["soft_labels"].shape == ours["soft_labels"].shape
    assert not torch.equal(initial["soft_labels"], ours["soft_labels"])  # ours learned labels


def test_the_harness_tells_their_datm_loop_whether_the_data_are_whitened(
    tmp_path, monkeypatch
) -> None:
    parity = load_benchmark("parity")
    commands = []

    def run(command, env, log):
        commands.append(command)
        Path(command[command.index("--out") + 1]).with_suffix(".json").write_text(
            json.dumps({"seconds_per_step": 1.0})
        )

    monkeypatch.setattr(parity, "run", run)
    for zca in (False, True):
        args = parity.parse_args(["--method", "datm", "--official", str(tmp_path),
                                  "--dataset", "cifar10", *(["--zca"] if zca else [])])  # fmt: skip
        parity.condense_theirs(args, tmp_path, tmp_path / "data.pt", tmp_path / "theirs.pt", 0,
                               {}, experts=tmp_path / "experts")  # fmt: skip
        assert ("--zca" in commands[-1]) is zca
        assert ("zca" in parity.results_name("parity_datm", args)) is zca


def test_a_second_run_in_one_process_lists_the_stand_ins_it_reuses(monkeypatch) -> None:
    """Their script imports yacs and kornia; where neither is installed, the first run's stand-ins
    are the modules a second run's script imports, so its record names them too."""
    adapter = load_benchmark("parity_datm")
    for name in ("wandb", "yacs", "yacs.config", "kornia"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    real_find_spec = importlib.util.find_spec
    absent = {"yacs", "kornia"}
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in absent else real_find_spec(name, *a),
    )
    first = adapter.install_stand_ins()[1]
    second = adapter.install_stand_ins()[1]
    assert first == second == ["wandb", "yacs", "kornia"]
    from yacs.config import CfgNode  # the stand-in's, still importable

    assert CfgNode is adapter.CfgNode
