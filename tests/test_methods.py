"""What the base promises every method: one global step is one iteration, pixels learned in
[0, 1] stay there under manual optimisation, each method's name is its config file's name, and
the auxiliary parts' DDP policies."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import REPO_ROOT
from helpers.inprocess import tiny, train
from hydra.utils import get_class
from omegaconf import OmegaConf

from dmcondense.augment import NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError
from dmcondense.methods.base import AuxiliaryPart, CondensationMethod, LearnedNetwork
from dmcondense.methods.dm import DistributionMatching
from dmcondense.models.registry import build_model

ITERATIONS = 3
# One tiny run a method: several image updates an iteration where the method makes them (DC and
# DSA: 2 rounds; NCFM: a step a class and a calibration step a class), IDM's queue pushed and
# trained, NCFM's pool built first (1 network x 1 epoch).
RUNS = {
    "dm": [],
    "dm-factor2": ["synthetic.factor=2"],
    "dc": ["method=dc", "method.outer_loop=2", "method.inner_loop=1"],
    "dsa": ["method=dsa", "method.outer_loop=2", "method.inner_loop=1"],
    "m3d": ["method=m3d", "method.redraw_every=2"],
    "idm": [
        "method=idm",
        "method.net_num=4",
        "method.net_generate_interval=2",
        "method.batch_train=16",
        "method.model_train_steps=1",
    ],  # fmt: skip
    "ncfm": [
        "method=ncfm",
        "method.num_freqs=16",
        "pool.size=1",
        "pool.epochs=1",
        "pool.build=auto",
    ],  # fmt: skip
}


@dataclass
class Fitted:
    """A finished run: the (step of the batch, global step after it) of each training step, and
    the module."""

    steps: list[tuple[int, int]]
    module: CondensationMethod
    start: torch.Tensor  # the stored pixels before the first step


@pytest.fixture(scope="module")
def pool_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pools")


@pytest.fixture(scope="module", params=list(RUNS))
def fitted(request, tmp_path_factory, pool_root: Path) -> Fitted:
    """The run of `RUNS[name]` with pixels learned in [0, 1] and an image rate (50) that would
    push them out; recorded from the module's own batch-end hook."""
    steps: list[tuple[int, int]] = []
    modules: list[CondensationMethod] = []
    starts: list[torch.Tensor] = []

    def on_train_start(self) -> None:
        starts.append(self.synthetic.detach().clone())
        base_start(self)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        steps.append((int(batch["step"]), self.trainer.global_step))
        modules.append(self)

    base_start = CondensationMethod.on_train_start
    patch = pytest.MonkeyPatch()
    patch.setattr(CondensationMethod, "on_train_start", on_train_start)
    patch.setattr(CondensationMethod, "on_train_batch_end", on_train_batch_end)
    run_dir = tmp_path_factory.mktemp(request.param)
    try:
        result = train(
            *tiny("ipc=2", f"iterations={ITERATIONS}", "init=real", "++method.pixels=unit",
                  "lr_img=50", f"pool.root={pool_root}", f"hydra.run.dir={run_dir}"),
            *RUNS[request.param],
        )  # fmt: skip
    finally:
        patch.undo()
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(set(map(id, modules))) == 1
    return Fitted(steps, modules[-1], starts[0])


def test_one_global_step_is_one_iteration(fitted: Fitted) -> None:
    assert fitted.module.trainer.global_step == ITERATIONS
    assert [step for step, _ in fitted.steps] == list(range(ITERATIONS))  # each batch once
    assert [after for _, after in fitted.steps] == list(range(1, ITERATIONS + 1))


def test_unit_pixels_stay_in_0_1_under_manual_optimisation(fitted: Fitted) -> None:
    module = fitted.module
    assert module.pixels == "unit" and not module.automatic_optimization
    pixels = module.synthetic.detach()
    assert pixels.min() >= 0 and pixels.max() <= 1
    # The rate pushed pixels past the bounds and the clamp held them there: pixels inside at the
    # start now sit exactly on a bound (where an unclamped update would not land).
    inside = (fitted.start > 0) & (fitted.start < 1)
    assert ((pixels == 0) | (pixels == 1))[inside].any()


# --- names ---------------------------------------------------------------------------------------


def method_targets() -> dict[str, str]:
    """conf/method/<name>.yaml -> its `_target_` (dm.yaml is the group's node itself; the others
    are global packages with a `method:` node)."""
    targets = {}
    for path in sorted((REPO_ROOT / "conf" / "method").glob("*.yaml")):
        node = OmegaConf.load(path)
        targets[path.stem] = node["_target_"] if "_target_" in node else node["method"]["_target_"]
    return targets


def test_each_method_is_named_as_its_config_file() -> None:
    targets = method_targets()
    assert {"dm", "dc", "dsa", "m3d", "idm", "ncfm"} <= set(targets)
    for stem, target in targets.items():
        cls = get_class(target)
        assert issubclass(cls, CondensationMethod), stem
        assert cls.name == stem, f"conf/method/{stem}.yaml makes {target}, named {cls.name!r}"


# --- auxiliary parts -----------------------------------------------------------------------------


class Counter(AuxiliaryPart):
    def __init__(self) -> None:
        self.count, self.device = torch.zeros(()), None

    def start(self, device: torch.device) -> None:
        self.device, self.count = device, self.count.to(device)

    def state_dict(self) -> dict:
        return {"count": self.count.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.count.copy_(state["count"])


def dm() -> DistributionMatching:
    net = build_model("convnet", 1, 2, 4, width=4, depth=1)
    return DistributionMatching(
        net, NoAugment(), torch.zeros(2, 1, 4, 4), 2, Normaliser([0.5], [0.25])
    )


def attach(module: CondensationMethod, world_size: int, reduce=None) -> None:
    """A stand-in trainer: what on_fit_start, refuse_ddp and step_part read."""
    strategy = SimpleNamespace(reduce=reduce)
    module.trainer = SimpleNamespace(world_size=world_size, strategy=strategy)


def test_a_refusing_part_stops_a_ddp_run_in_one_line() -> None:
    module = dm()
    module.register_part("counter", Counter(), ddp="refuse", why="it counts every class")
    attach(module, world_size=2)
    with pytest.raises(ConfigError) as error:
        module.on_fit_start()
    assert str(error.value) == (
        "method=dm runs on one process: it counts every class; use trainer=cpu or trainer=gpu"
    )
    attach(module, world_size=1)
    module.on_fit_start()
    assert module._parts["counter"].part.device == module.device
    with pytest.raises(ValueError, match="unknown DDP policy 'average'"):
        module.register_part("other", Counter(), ddp="average", why="")


def test_an_all_reduce_part_steps_on_gradients_summed_over_the_ranks() -> None:
    module = dm()
    net = torch.nn.Linear(2, 1, bias=False)
    part = LearnedNetwork(net, lambda params: torch.optim.SGD(params, lr=1.0))
    module.register_part("learned", part, ddp="all_reduce", why="test")
    reduced = []

    def reduce(tensor, reduce_op):  # two ranks with the same gradient
        reduced.append(reduce_op)
        return tensor * 2

    attach(module, world_size=2, reduce=reduce)
    module.on_fit_start()
    net.weight.data.fill_(1.0)
    net.weight.grad = torch.full_like(net.weight, 0.25)
    module.step_part("learned", part.optimizer)
    assert reduced == ["sum"]
    assert torch.equal(net.weight.detach(), torch.full((1, 2), 0.5))  # 1 - (0.25 + 0.25)
    attach(module, world_size=1, reduce=reduce)  # one process: nothing to reduce
    net.weight.grad = torch.full_like(net.weight, 0.25)
    module.step_part("learned", part.optimizer)
    assert reduced == ["sum"] and torch.equal(net.weight.detach(), torch.full((1, 2), 0.25))


def test_a_part_is_saved_under_one_key_and_given_back_after_fit_start() -> None:
    module = dm()
    counter = module.register_part("counter", Counter(), ddp="refuse", why="test")
    counter.count.fill_(7.0)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert list(checkpoint) == ["auxiliary"]
    assert checkpoint["auxiliary"]["counter"]["state"]["count"].item() == 7.0

    resumed = dm()
    again = resumed.register_part("counter", Counter(), ddp="refuse", why="test")
    resumed.on_load_checkpoint(checkpoint)
    assert again.count.item() == 0.0  # not before the part is started
    attach(resumed, world_size=1)
    resumed.on_fit_start()
    resumed.on_train_start()
    assert again.count.item() == 7.0

    with pytest.raises(ConfigError) as error:
        resumed.on_load_checkpoint({})
    assert str(error.value) == (
        "the checkpoint holds no counter; every method=dm checkpoint has one; resume a "
        "method=dm run"
    )
    with pytest.raises(ConfigError, match="holds a counter, which this method=dm run does not"):
        dm().on_load_checkpoint(checkpoint)


def test_trainer_gradient_clipping_and_accumulation_get_one_line(tmp_path: Path) -> None:
    for override in ("+trainer.gradient_clip_val=1.0", "+trainer.accumulate_grad_batches=2"):
        result = train(*tiny(override, f"hydra.run.dir={tmp_path / 'run'}"))
        assert result.returncode == 2
        (line,) = result.error_lines
        assert "manual optimisation" in line and override.split("=")[0][1:] in line
