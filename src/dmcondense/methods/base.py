"""What every condensation method shares, written once: the base LightningModule.

It owns the synthetic pixels as the module's only `nn.Parameter`, their SGD optimiser
(`lr_img`, `momentum`), the labels, how stored pixels decode into training images
(`SyntheticImages`, multi-formation by `factor`), the space the pixels are learned in
(`pixels`: normalised network input, or [0, 1] clamped after each step), the normaliser, the
embedding network that a method redraws each step, the auxiliary parts a method keeps beside the
pixels (`register_part`), and the step itself: a method adds only `step_loss`, or its own
`training_step` where it needs more than one image update an iteration or trains a part.
Pictures, checkpoints, resume, the NaN guard and the image logger (condense/callbacks.py) work on
this base, so they work for every method.

Every method runs under manual optimisation and updates its pixels through `update_images`, so the
clamp of [0, 1] pixels and the global step are the same for all: one global step is one
iteration, however many image updates (DC's rounds, NCFM's classes) or part steps it makes.
The real images of a step arrive as uint8 [rounds, classes, per_class, C, H, W], always with the
rounds axis (`real_batches_per_step`, 1 unless a method asks for more).

GPU fast path: under precision=bf16-mixed (or 16-mixed) the network runs in bf16 while the
synthetic images, the features and every loss stay fp32: `embed` hands back fp32 features, and each
matching function is wrapped in `full_precision` (autocast off, IEEE fp32 matmuls), so the
statistics a loss compares are never rounded to 8 bits. `channels_last` feeds the network NHWC
tensors; `compile` wraps the network's `embed` in torch.compile once (the network is
re-initialised in place each step, so the compiled code is reused; a method whose networks do not
go through `embed` refuses it: `compile_refusal`); the real images arrive as uint8 on the device
and a step has no host-device sync. Precision, compile, TF32 and determinism, method by method:
docs/howto/gpu.md.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import lightning as L
import torch
from torch import nn

from dmcondense.augment import DSA, NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError
from dmcondense.models.init import reset_parameters
from dmcondense.rng import generator
from dmcondense.synthetic import SyntheticImages

# normalised: pixels learned as network input (DM, DC, DSA, IDM); unit: learned in [0, 1] and
# clamped there after each step (IDC's pipeline, M3D).
PIXEL_SPACES = ("normalised", "unit")
# What an auxiliary part does when DDP runs several ranks: refuse: stop with one line (the part
# needs every class, or steps in an order a rank cannot follow); all_reduce: run, with the part's
# gradients summed over the ranks before its optimiser steps (`step_part`).
DDP_POLICIES = ("refuse", "all_reduce")
PARTS_KEY = "auxiliary"  # the checkpoint key that holds every part's state
# Lightning's names of fp16 mixed precision: its gradient scaler sees only `manual_backward`.
FP16_MIXED = ("16-mixed", "16")
LOW_PRECISION = (torch.float16, torch.bfloat16)

Fn = TypeVar("Fn", bound=Callable[..., Any])


def _fp32(value: Any) -> Any:
    """bf16/fp16 tensors (also inside lists and tuples) as fp32; anything else as it is."""
    if torch.is_tensor(value):
        return value.float() if value.dtype in LOW_PRECISION else value
    if isinstance(value, (list, tuple)):
        return type(value)(_fp32(v) for v in value)
    return value


@contextlib.contextmanager
def _ieee_fp32() -> Iterator[None]:
    """Autocast off on every device and CUDA fp32 matmuls without TF32, restored on the way
    out (the CUDA flag only: the CPU's matmuls are left as they are)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32


def full_precision(fn: Fn) -> Fn:
    """Run a matching function (a loss of features or gradients, or a part that makes its
    inputs) in fp32 whatever the run's precision: its low-precision tensor arguments go to fp32
    and it runs with autocast off and TF32 matmuls off. Under bf16-mixed only the networks run
    in bf16: a kernel (xx + yy - 2xy) or a characteristic function (cos of a matmul) computed
    in bf16 cancels most of its 8 bits. On fp32 inputs outside autocast it changes nothing."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _ieee_fp32():
            return fn(*map(_fp32, args), **{k: _fp32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


class AuxiliaryPart:
    """Something a method keeps beside the pixels: networks it trains or only reads, with their
    optimisers and counters (IDM's model queue, NCFM's pool and sampling network).

    Not an nn.Module, so its weights are neither parameters of the LightningModule (the pixels
    stay its only one, and the image optimiser never sees a part) nor in its state_dict: the base
    places a part on the module's device at fit start (`start`), keeps `state_dict()` in every
    checkpoint and gives it back on resume (`load_state_dict`, after `start`).
    """

    saves_state = True  # False: nothing to keep (data handed in again with every run)

    def start(self, device: torch.device) -> None:
        """At fit start: move to `device`, and make what must be made there."""
        raise NotImplementedError(f"{type(self).__name__} must define start")

    def state_dict(self) -> dict:
        """What a resumed run needs to go on bit for bit (weights, optimiser state, counters)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; called after `start`."""


class LearnedNetwork(AuxiliaryPart):
    """A network a method trains beside the pixels, with its optimiser, made by `optimizer`
    from the network's parameters at fit start, once the network is on the device."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[[Iterator[nn.Parameter]], torch.optim.Optimizer],
    ) -> None:
        self.net, self.make_optimizer = net, optimizer
        self.optimizer: torch.optim.Optimizer | None = None

    def start(self, device: torch.device) -> None:
        self.net.to(device).train()
        self.optimizer = self.make_optimizer(self.net.parameters())

    def state_dict(self) -> dict:
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        return {"net": self.net.state_dict(), "optimizer": optimizer}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


@dataclass
class RegisteredPart:
    part: AuxiliaryPart
    ddp: str
    why: str  # why it refuses DDP (the one-line error), or why it may all-reduce
    setting: tuple[str, str] | None  # (on, off): the settings that add it and leave it out


class CondensationMethod(L.LightningModule):
    name = "method"  # the synthetic set's name in results (results.json, eval/<name>/<model>)
    real_batches_per_step = 1  # real batches a class the DataModule serves each step
    # True: the method matches with a pool of pretrained networks, which the job hands it as
    # `pool=` (a list of (initial, trained) state dicts); see models/pretrained.py.
    uses_pretrained_pool = False
    # Shape of the batches drawn from the whole training set (classes mixed) that the DataModule
    # also serves each step, as batch["whole_images"] and batch["whole_labels"]; () for none.
    whole_set_batches: tuple[int, ...] = ()
    # Why `compile=true` cannot speed this method up (its networks are not called through
    # `embed_function`), or None: the constructor refuses compile=true in one line with it.
    compile_refusal: str | None = None

    def __init__(
        self,
        embed_net: nn.Module,
        augment: DSA | NoAugment,
        initial_images: torch.Tensor,
        num_classes: int,
        normaliser: Normaliser,
        lr_img: float = 1.0,
        momentum: float = 0.5,
        seed: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        compile_backend: str | Callable = "inductor",
        factor: int = 1,
        pixels: str = "normalised",
    ) -> None:
        super().__init__()
        if compile and self.compile_refusal:
            raise ConfigError(
                f"compile=true does not apply to method={self.name}: {self.compile_refusal}; "
                "set compile=false"
            )
        if initial_images.shape[0] % num_classes:
            raise ValueError("initial_images must hold the same number of images for every class")
        if pixels not in PIXEL_SPACES:
            raise ConfigError(
                f"unknown method.pixels '{pixels}'; choose one of {', '.join(PIXEL_SPACES)}"
            )
        self.num_classes = num_classes
        self.ipc = initial_images.shape[0] // num_classes
        self.synthetic_images = SyntheticImages(num_classes, self.ipc, factor)
        self.normaliser = normaliser
        self.pixels = pixels
        stored = initial_images.clone().float()  # normalised, class-major
        if pixels == "unit":
            stored = self.unit_from_normalised(stored)
        self.synthetic = nn.Parameter(stored)  # stored, in the `pixels` space
        self.register_buffer("labels", torch.arange(num_classes).repeat_interleave(self.ipc))
        # A tuple hides it from nn.Module: its weights are redrawn each step, never learned.
        self._net = (embed_net.requires_grad_(False),)
        self.augment = augment
        self.lr_img, self.momentum, self.seed = lr_img, momentum, seed
        self.channels_last = channels_last
        # Not `self.compile`: that would shadow nn.Module.compile().
        self.compile_embed, self.compile_backend = compile, compile_backend
        self._compiled_embed: Callable | None = None
        # Every method steps its pixels by hand (`update_images`): one path for the clamp and one
        # global step an iteration, whatever the number of updates inside it.
        self.automatic_optimization = False
        self._parts: dict[str, RegisteredPart] = {}
        self._saved_parts: dict[str, dict] = {}  # read from a checkpoint, given back at train start

    # --- the step ------------------------------------------------------------------------------
    def step_loss(self, step: int, classes: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The method's loss of one step for `classes` with uint8 real images [k, n, C, H, W]
        (round 0 of the step's real batches)."""
        raise NotImplementedError(f"{type(self).__name__} must define step_loss")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.step_loss(batch["step"], batch["classes"], batch["images"][0])
        self.update_images(loss)
        self.log_loss(loss)
        return loss.detach()

    def update_images(
        self,
        loss: torch.Tensor | None,
        last: bool = True,
        inputs: Sequence[torch.Tensor] = (),
        rank_local: bool = False,
    ) -> None:
        """One image update: zero the pixels' gradient, backward of `loss` (also into `inputs`,
        e.g. a part's parameters), an optimiser step, and after the iteration's `last` update the
        clamp of [0, 1] pixels (so a method with several updates an iteration clamps once).

        The last update steps through Lightning's optimizer wrapper, which counts one global
        step; earlier ones (`last=False`: DC's rounds, NCFM's classes) go to the strategy
        directly, through the precision plugin but uncounted. So one global step is one
        iteration, as max_steps, save_every, the DataModule's resume offset and every generator
        keyed by the step assume.

        `rank_local=True` (a method that updates one class at a time): under DDP the gradient
        stays on this rank, and `loss=None` is an update for another rank's class, a zero
        gradient here; `share_class_rows` then hands each rank's classes to every rank.
        """
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        if loss is None:
            self.synthetic.grad = torch.zeros_like(self.synthetic)
        elif rank_local and self.trainer.world_size > 1:
            with self.trainer.strategy.block_backward_sync():
                self.manual_backward(loss, inputs=[self.synthetic, *inputs])
        else:
            # DDP averages gradients over ranks; each rank holds a disjoint slice of classes,
            # so scaling by the world size turns that average into the full sum over classes.
            self.manual_backward(loss * self.trainer.world_size, inputs=[self.synthetic, *inputs])
        if not last:
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure)
            return
        optimizer.step()
        if self.pixels == "unit":  # pixels learned in [0, 1] stay there (IDC, M3D, NCFM)
            with torch.no_grad():
                self.synthetic.clamp_(0.0, 1.0)

    @torch.no_grad()
    def share_class_rows(self, classes: torch.Tensor) -> None:
        """After rank-local updates (DDP): every rank takes the pixels of each class, and their
        optimiser state, from the rank that matched it (this rank's are `classes`). Every update
        made the same optimiser step on every rank, with a zero gradient for the others' classes,
        so each rank's own rows are what one process would hold; the sum over ranks of each
        rank's own rows (zeros elsewhere) puts those rows everywhere."""
        if self.trainer.world_size == 1:
            return
        others = ~torch.isin(self.labels, classes)  # the class of each stored image
        state = self.optimizers().optimizer.state[self.synthetic]
        shape = self.synthetic.shape
        moments = [v for v in state.values() if torch.is_tensor(v) and v.shape == shape]
        for tensor in [self.synthetic.data, *moments]:
            tensor[others] = 0
            tensor.copy_(self.trainer.strategy.reduce(tensor, reduce_op="sum"))

    def log_loss(self, loss: torch.Tensor) -> None:
        # Each rank holds its classes' share; the logged figure is the sum over all classes.
        # Not prog_bar: Lightning reads a bar's metrics into numbers after every step (a host
        # sync); the bar reads the loss itself when it refreshes (progress.LossBar).
        several = self.trainer.world_size > 1
        # Under DDP the sum is Lightning's reduce, behind a barrier that waits on the host: made
        # on the steps the logger writes only (after the update, global_step is Lightning's
        # count of logged batches).
        if several and self.trainer.global_step % max(self.trainer.log_every_n_steps, 1):
            return
        self.log("train/loss", loss, reduce_fx="sum", sync_dist=several)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.synthetic], lr=self.lr_img, momentum=self.momentum)

    # --- what the saved set and its scoring read ------------------------------------------------
    def record_extra(self) -> dict:
        """Fields a method adds to synthetic.pt beside the pixels (MTT: its learned step size)."""
        return {}

    def scoring_lr(self) -> float | None:
        """The learning rate eval.protocol=mtt trains the evaluation networks at (a step size
        the method learned), None when the method learns none."""
        return None

    # --- auxiliary parts -----------------------------------------------------------------------
    def register_part(
        self,
        name: str,
        part: AuxiliaryPart,
        ddp: str,
        why: str,
        setting: tuple[str, str] | None = None,
    ) -> AuxiliaryPart:
        """Hold `part` under `name` (its key in the checkpoint) with its DDP policy (one of
        DDP_POLICIES; `why` says why, and is the refusal's reason). `setting`: the (on, off)
        settings when only some runs have the part, named by the error of a resume that does not
        match the checkpoint."""
        if ddp not in DDP_POLICIES:
            raise ValueError(f"unknown DDP policy {ddp!r}; choose one of {', '.join(DDP_POLICIES)}")
        self._parts[name] = RegisteredPart(part, ddp, why, setting)
        return part

    def step_part(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """An optimiser step of part `name`. Under all_reduce its gradients are first summed over
        the ranks, not averaged: each rank's loss is its classes' share of a sum over classes (as
        for the pixels), so the sum is what one process would compute. Parts are not inside the
        DDP-wrapped module, so DDP does not do this for them."""
        if self._parts[name].ddp == "all_reduce" and self.trainer.world_size > 1:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad = self.trainer.strategy.reduce(p.grad, reduce_op="sum")
        optimizer.step()

    def refuse_ddp(self, why: str) -> None:
        """One line when DDP runs several ranks: this run must be one process."""
        if self.trainer.world_size > 1:
            raise ConfigError(
                f"method={self.name} runs on one process: {why}; use trainer=cpu or trainer=gpu"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        parts = {
            name: {"state": r.part.state_dict(), "setting": r.setting}
            for name, r in self._parts.items()
            if r.part.saves_state
        }
        if parts:
            checkpoint[PARTS_KEY] = parts

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(PARTS_KEY, {})
        method = f"method={self.name}"
        for name, r in self._parts.items():
            if r.part.saves_state and name not in saved:
                fix = (
                    f"resume with {r.setting[1]}, as the run was made"
                    if r.setting
                    else f"every {method} checkpoint has one; resume a {method} run"
                )
                raise ConfigError(f"the checkpoint holds no {name}; {fix}")
        for name, entry in saved.items():
            if name not in self._parts:
                fix = (
                    f"resume with {entry['setting'][0]}, as the run was made"
                    if entry["setting"]
                    else "resume it with the method that made it"
                )
                raise ConfigError(
                    f"the checkpoint holds a {name}, which this {method} run does not make; {fix}"
                )
        # Given back at train start: the parts are placed (and IDM's queue made) at fit start,
        # which Lightning calls after it reads the checkpoint.
        self._saved_parts = {name: entry["state"] for name, entry in saved.items()}

    def on_train_start(self) -> None:
        for name, state in self._saved_parts.items():
            self._parts[name].part.load_state_dict(state)
        self._saved_parts = {}

    # --- the images ----------------------------------------------------------------------------
    def unit_from_normalised(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images -> [0, 1] pixels, unclamped (differentiable)."""
        c = self.normaliser.constants(images.device)
        return images * c["std"] + c["mean"]

    def stored_normalised(self, rows: slice = slice(None)) -> torch.Tensor:
        """The stored images (those of `rows`) as network input (normalised), differentiable:
        what synthetic.pt keeps. Decoding commutes with the per-channel normalisation (bilinear
        weights sum to 1), so decoding these equals normalising the decoded [0, 1] pixels."""
        stored = self.synthetic[rows]
        if self.pixels == "unit":
            c = self.normaliser.constants(stored.device)
            return (stored - c["mean"]) / c["std"]
        return stored

    def training_images(self) -> torch.Tensor:
        """The decoded training images, class-major, differentiable w.r.t. the stored pixels."""
        return self.synthetic_images.decode(self.stored_normalised())

    def class_images(self, c: int) -> torch.Tensor:
        """Class `c`'s decoded training images, differentiable w.r.t. the stored pixels: only
        its rows are normalised and decoded (a method that steps class by class would otherwise
        decode the whole set once a class)."""
        return self.synthetic_images.decode(
            self.stored_normalised(slice(c * self.ipc, (c + 1) * self.ipc))
        )

    def decoded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(training images, labels), detached: what evaluation trains on."""
        images = self.synthetic_images.decode(self.stored_normalised().detach())
        return images, self.synthetic_images.decode_labels(self.labels)

    def denormalised(self) -> torch.Tensor:
        """The decoded training images in [0, 1], for pictures."""
        return self.normaliser.to_unit(self.decoded()[0])

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 real images -> network input, on the device that holds them (the hot path)."""
        return self.normaliser.to_input_fused(images)

    # --- the network ---------------------------------------------------------------------------
    @property
    def embed_net(self) -> nn.Module:
        return self._net[0]

    def fp16_refusal(self) -> str | None:
        """Why this run cannot train under precision=16-mixed, or None. Lightning's gradient
        scaler scales the loss of `manual_backward` and unscales, and skips on inf, only the
        optimiser steps it makes; a method that trains a network on its own backward passes, or
        steps a part on the pixels' scaled gradients, says so here."""
        return None

    def check_precision(self) -> None:
        """One line when the trainer's precision is one this run cannot train under."""
        precision = str(getattr(self.trainer, "precision", ""))  # a stand-in trainer has none
        why = self.fp16_refusal() if precision in FP16_MIXED else None
        if why:
            raise ConfigError(
                f"trainer.precision=16-mixed does not work for method={self.name}: {why}; use "
                "trainer.precision=bf16-mixed (or 32-true on a GPU without bf16)"
            )

    def on_fit_start(self) -> None:
        self.check_precision()
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self._net = (self.embed_net.to(self.device, memory_format=memory_format).train(),)
        for r in self._parts.values():
            if r.ddp == "refuse":
                self.refuse_ddp(r.why)
        for r in self._parts.values():
            r.part.start(self.device)

    def draw_network(self, step: int) -> nn.Module:
        """The embedding network of `step`, re-initialised from generator(seed, "net", step)."""
        return reset_parameters(
            self.embed_net, generator(self.seed, "net", step, device=self.device)
        )

    def embed_function(self, net: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """`net.embed`, compiled on first use when `compile` is set.

        The parameters are updated in place (same tensors), so no step recompiles: one graph for
        the real pass (no grad) and one for the synthetic pass. dynamic=False keeps both
        specialised to their fixed batch sizes instead of one dynamic-shape graph.
        """
        if not self.compile_embed:
            return net.embed
        if self._compiled_embed is None:
            self._compiled_embed = torch.compile(
                net.embed, backend=self.compile_backend, dynamic=False
            )
        return self._compiled_embed

    def embed(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Flat features [N, D] in fp32: under bf16 autocast the network computes in bf16, but
        class statistics of nearly equal bf16 features would lose the differences a loss
        measures."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.embed_function(net)(images).flatten(1).float()


def _no_closure() -> None:
    """The closure of an uncounted step: the backward has run already (manual optimisation)."""
