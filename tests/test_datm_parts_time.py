"""benchmarks/datm_parts_time.py: the augmentation and the unroll, ours against a stub of the
authors' modules (networks.ConvNet, reparam_module.ReparamModule, utils_baseline.DiffAugment),
alternating in one process."""

from __future__ import annotations

import statistics
import sys

import pytest
from test_parity import REPO, load_script

SCRIPT = REPO / "benchmarks" / "datm_parts_time.py"
ROUNDS, SYN_STEPS = 3, 2

STUB_NETWORKS = """
import torch
from torch import nn

BUILT = []

class ConvNet(nn.Module):
    def __init__(self, channel, num_classes, net_width, net_depth, net_act, net_norm,
                 net_pooling, im_size=(32, 32)):
        super().__init__()
        BUILT.append((net_width, net_depth, net_act, net_norm, net_pooling, im_size))
        self.conv = nn.Conv2d(channel, net_width, 3, padding=1)
        self.fc = nn.Linear(net_width, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean(dim=(2, 3)))
"""

STUB_REPARAM = """
import torch
from torch import nn
from torch.func import functional_call

CALLS = []

class ReparamModule(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.shapes = [(name, p.shape) for name, p in module.named_parameters()]
        self.module = module
        flat = torch.cat([p.detach().flatten() for p in module.parameters()])
        self.flat_param = nn.Parameter(flat)

    def parameters(self, recurse=True):
        return iter([self.flat_param])

    def forward(self, x, flat_param):
        CALLS.append(x.shape[0])
        pieces = flat_param.split([shape.numel() for _, shape in self.shapes])
        views = {name: piece.view(shape) for (name, shape), piece in zip(self.shapes, pieces)}
        return functional_call(self.module, views, (x,))
"""

STUB_UTILS = """
import kornia  # as theirs: the benchmark must provide it
CALLS = []

class ParamDiffAug:
    pass

def DiffAugment(x, strategy, param=None):
    CALLS.append((x.shape[0], strategy, type(param).__name__))
    return x.flip(3)
"""


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    folder = tmp_path_factory.mktemp("DATM")
    for name, text in (("networks.py", STUB_NETWORKS), ("reparam_module.py", STUB_REPARAM),
                       ("utils/utils_baseline.py", STUB_UTILS)):  # fmt: skip
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def timed(official):
    script = load_script(SCRIPT)
    argv = ["--official", str(official), "--rounds", str(ROUNDS), "--syn-steps", str(SYN_STEPS),
            "--width", "4", "--ipc", "2"]  # fmt: skip
    saved_path, saved_modules = list(sys.path), dict(sys.modules)
    result = script.main(argv)
    # the stub's modules, then out of the way of other tests in this process (wandb, a real
    # package, is left as it was: the benchmark stands in for kornia alone, where it is absent)
    assert sys.modules.get("wandb") is saved_modules.get("wandb")
    names = ("networks", "reparam_module", "utils_baseline")
    networks, reparam_module, utils_baseline = (sys.modules.pop(name) for name in names)
    if "kornia" not in saved_modules:
        sys.modules.pop("kornia", None)
    sys.path[:] = saved_path
    return result, networks.BUILT, reparam_module.CALLS, utils_baseline.CALLS


def test_their_modules_run_each_part_once_a_round_after_a_first_use(timed):
    result, built, reparam_calls, augment_calls = timed
    assert built == [(4, 3, "relu", "instancenorm", "avgpooling", (32, 32))]
    # each part: SYN_STEPS calls a run, ROUNDS timed runs after the first; 20 images (IPC 2)
    assert augment_calls == [(20, "color_crop_cutout_flip_scale_rotate", "ParamDiffAug")] * (
        (ROUNDS + 1) * SYN_STEPS
    )
    assert reparam_calls == [20] * ((ROUNDS + 1) * SYN_STEPS)
    assert {part: set(sides) for part, sides in result["times"].items()} == {
        "augment": {"ours", "theirs"},
        "unroll": {"ours", "theirs", "ours, ReLU out of place"},
    }
    assert all(len(t) == ROUNDS for sides in result["times"].values() for t in sides.values())


def test_ratios_are_ours_over_theirs_of_the_medians_and_the_least(timed):
    result = timed[0]
    for part, sides in result["times"].items():
        theirs = sides["theirs"]
        assert set(result["ratio"][part]) == set(sides) - {"theirs"}
        for side, ratio in result["ratio"][part].items():
            ours = sides[side]
            assert ratio["median"] == pytest.approx(
                statistics.median(ours) / statistics.median(theirs)
            )
            assert ratio["least"] == pytest.approx(min(ours) / min(theirs))


def test_a_folder_without_their_modules_is_one_line(tmp_path):
    script = load_script(SCRIPT)
    with pytest.raises(script.UsageError, match="has no networks.py: give a DATM checkout"):
        script.main(["--official", str(tmp_path)])
