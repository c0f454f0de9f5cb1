"""The two parts of an MTT/DATM iteration where our code and the authors' differ, timed against
their own modules in one process, alternating: the inner steps' augmentation (ours: DSA; theirs:
DiffAugment from utils/utils_baseline.py) and the student's unroll through one flat parameter
vector (ours: flat_forward, a functional_call; theirs: ReparamModule around their ConvNet).

    python benchmarks/datm_parts_time.py --official /path/to/DATM --rounds 60

A whole iteration is measured by mtt_step_time.py, through their script; on a shared machine its
medians move by more than the parts differ, so this splits the iteration where the code differs,
with the sides taking turns a part at a time. Each part is timed in process CPU seconds at one
thread; the rest of an iteration (losses, optimiser steps) is a few operators either side.

- augment: `--syn-steps` augmentations of the IPC x 10 images, one family a call (their
  default, ours one_family=True), then one backward through all of them;
- unroll: `--syn-steps` student steps (cross-entropy, inner gradient with create_graph, SGD) on
  the same images, then the backward to the images, the step size and the start; also ours with
  the ConvNet's ReLU out of place, as it was before it ran in place as theirs.

Printed: each side's median and least CPU milliseconds a part, and each over theirs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import parity_datm  # noqa: E402

from dmcondense.augment import DSA  # noqa: E402
from dmcondense.methods.mtt import flat_forward  # noqa: E402
from dmcondense.models.convnet import ConvNet  # noqa: E402

STRATEGY = "color_crop_cutout_flip_scale_rotate"
OUT_OF_PLACE = "ours, ReLU out of place"
NEEDED = ("networks.py", "reparam_module.py", "utils/utils_baseline.py")


class UsageError(Exception):
    pass


def their_modules(official: Path) -> tuple:
    """(ConvNet, ReparamModule, DiffAugment, ParamDiffAug) from their checkout."""
    missing = [name for name in NEEDED if not (official / name).is_file()]
    if missing:
        raise UsageError(f"--official {official} has no {missing[0]}: give a DATM checkout")
    parity_datm.install_missing(("kornia",))  # their utils import it at the top
    for folder in (official, official / "utils"):
        sys.path.insert(0, str(folder))
    for name in ("networks", "reparam_module", "utils_baseline"):  # this checkout's, not another's
        sys.modules.pop(name, None)
    from networks import ConvNet as TheirConvNet
    from reparam_module import ReparamModule
    from utils_baseline import DiffAugment, ParamDiffAug

    return TheirConvNet, ReparamModule, DiffAugment, ParamDiffAug


def unroll(forward: Callable, start: torch.Tensor, images: torch.Tensor, steps: int) -> None:
    """`steps` differentiable SGD steps of the student from `start`, then the backward."""
    images = images.clone().requires_grad_(True)
    lr = torch.tensor(0.01, requires_grad=True)
    labels = torch.arange(images.shape[0]) % 10
    params = start.clone().requires_grad_(True)
    for _ in range(steps):
        loss = F.cross_entropy(forward(params, images), labels)
        (grad,) = torch.autograd.grad(loss, params, create_graph=True)
        params = params - lr * grad
    params.square().sum().backward()


def flat(net: torch.nn.Module) -> torch.Tensor:
    """The network's initial parameters as one vector: each side's unroll starts there."""
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def augment(apply: Callable, images: torch.Tensor, steps: int) -> None:
    images = images.clone().requires_grad_(True)
    sum(apply(images).square().sum() for _ in range(steps)).backward()


def parts(args: argparse.Namespace) -> dict[str, dict[str, Callable[[], None]]]:
    """{part: {"ours": call, "theirs": call}} on the same images."""
    TheirConvNet, ReparamModule, DiffAugment, ParamDiffAug = their_modules(args.official)
    g = torch.Generator().manual_seed(args.seed)
    images = torch.randn(args.ipc * 10, 3, 32, 32, generator=g)
    their_net = ReparamModule(
        TheirConvNet(3, 10, args.width, 3, "relu", "instancenorm", "avgpooling", (32, 32))
    )
    our_net = ConvNet(3, 10, 32, width=args.width)
    our_forward = flat_forward(our_net)
    out_of_place = copy.deepcopy(our_net)  # the ConvNet's ReLU as it was before it ran in place
    for module in out_of_place.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    dsa, draws, param = DSA(STRATEGY), torch.Generator().manual_seed(args.seed), ParamDiffAug()
    return {
        "augment": {
            "ours": lambda: augment(
                lambda x: dsa.apply(x, dsa.sample(x.shape[0], draws, one_family=True)),
                images, args.syn_steps,
            ),
            "theirs": lambda: augment(
                lambda x: DiffAugment(x, STRATEGY, param=param), images, args.syn_steps
            ),
        },
        "unroll": {
            "ours": lambda: unroll(our_forward, flat(our_net), images, args.syn_steps),
            OUT_OF_PLACE: lambda: unroll(
                flat_forward(out_of_place), flat(out_of_place), images, args.syn_steps
            ),
            "theirs": lambda: unroll(
                lambda p, x: their_net(x, flat_param=p), flat(their_net), images, args.syn_steps
            ),
        },
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="a DATM checkout")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--syn-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise UsageError("--rounds must be 1 or more")
    torch.set_num_threads(1)
    calls = parts(args)
    times = {part: {side: [] for side in sides} for part, sides in calls.items()}
    for sides in calls.values():  # first use (allocations, lazy imports) left out
        for call in sides.values():
            call()
    for _ in range(args.rounds):
        for part, sides in calls.items():
            for side, call in sides.items():
                started = time.process_time()
                call()
                times[part][side].append(time.process_time() - started)
    result = {"times": times, "ratio": {}}
    print(f"IPC {args.ipc}, width {args.width}, {args.syn_steps} inner steps, {args.rounds} "
          "alternating rounds, 1 thread: CPU ms a part (median, least)")  # fmt: skip
    for part, sides in times.items():
        median = {side: statistics.median(t) for side, t in sides.items()}
        least = {side: min(t) for side, t in sides.items()}
        result["ratio"][part] = {
            side: {
                "median": median[side] / median["theirs"],
                "least": least[side] / least["theirs"],
            }
            for side in sides
            if side != "theirs"
        }
        for side in sides:
            ratio = result["ratio"][part].get(side, {"median": 1.0, "least": 1.0})
            print(
                f"  {part:8} {side:24} {1e3 * median[side]:8.2f} {1e3 * least[side]:8.2f}   "
                f"/ theirs {ratio['median']:.3f} {ratio['least']:.3f}"
            )
    return result


if __name__ == "__main__":
    try:
        main()
    except UsageError as error:
        sys.exit(f"error: {error}")
