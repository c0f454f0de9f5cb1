"""What every condensation method shares, written once: the base LightningModule.

It owns the synthetic pixels as the module's only `nn.Parameter`, their SGD optimiser
(`lr_img`, `momentum`), the labels, how stored pixels decode into training images
(`SyntheticImages`, multi-formation by `factor`), the space the pixels are learned in
(`pixels`: normalised network input, or [0, 1] clamped after each step), the normaliser, the
embedding network that a method redraws each step, and the step itself: a method adds only
`step_loss`, or its own `training_step` where it needs more than one image update an iteration.
Pictures, checkpoints, resume, the NaN guard and the image logger (condense/callbacks.py) work on
this base, so they work for every method.

Every method runs under manual optimisation and updates its pixels through `update_images`, so the
clamp of [0, 1] pixels and the global step are the same for all: one global step is one
iteration, however many image updates (DC's rounds, NCFM's classes) it makes.
The real images of a step arrive as uint8 [rounds, classes, per_class, C, H, W], always with the
rounds axis (`real_batches_per_step`, 1 unless a method asks for more).

GPU fast path: under precision=bf16-mixed the network runs in bf16 while the synthetic images and
the features stay fp32; `channels_last` feeds the network NHWC tensors; `compile` wraps the
network's `embed` in torch.compile once (the network is re-initialised in place each step, so the
compiled code is reused); the real images arrive as uint8 on the device and a step has no
host-device sync.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


class CondensationMethod(L.LightningModule):
    name = "method"  # the synthetic set's name in results (results.json, eval/<name>/<model>)
    real_batches_per_step = 1  # real batches a class the DataModule serves each step
    # True: the method matches with a pool of pretrained networks, which the job hands it as
    # `pool=` (a list of (initial, trained) state dicts); see models/pretrained.py.
    uses_pretrained_pool = False
    # Shape of the batches drawn from the whole training set (classes mixed) that the DataModule
    # also serves each step, as batch["whole_images"] and batch["whole_labels"]; () for none.
    whole_set_batches: tuple[int, ...] = ()

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
        self.compile, self.compile_backend = compile, compile_backend
        self._compiled_embed: Callable | None = None
        # Every method steps its pixels by hand (`update_images`): one path for the clamp and one
        # global step an iteration, whatever the number of updates inside it.
        self.automatic_optimization = False

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
        self, loss: torch.Tensor, last: bool = True, inputs: Sequence[torch.Tensor] = ()
    ) -> None:
        """One image update: zero the pixels' gradient, backward of `loss` (also into `inputs`,
        e.g. a part's parameters), an optimiser step, and after the iteration's `last` update the
        clamp of [0, 1] pixels (so a method with several updates an iteration clamps once).

        The last update steps through Lightning's optimizer wrapper, which counts one global
        step; earlier ones (`last=False`: DC's rounds, NCFM's classes) go to the strategy
        directly, through the precision plugin but uncounted. So one global step is one
        iteration, as max_steps, save_every, the DataModule's resume offset and every generator
        keyed by the step assume.
        """
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
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

    def log_loss(self, loss: torch.Tensor) -> None:
        # Each rank holds its classes' share; the logged figure is the sum over all classes.
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            reduce_fx="sum",
            sync_dist=self.trainer.world_size > 1,
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.synthetic], lr=self.lr_img, momentum=self.momentum)

    # --- the images ----------------------------------------------------------------------------
    def unit_from_normalised(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images -> [0, 1] pixels, unclamped (differentiable)."""
        c = self.normaliser.constants(images.device)
        return images * c["std"] + c["mean"]

    def stored_normalised(self) -> torch.Tensor:
        """The stored images as network input (normalised), differentiable: what synthetic.pt
        keeps. Decoding commutes with the per-channel normalisation (bilinear weights sum to 1),
        so decoding these equals normalising the decoded [0, 1] pixels."""
        if self.pixels == "unit":
            c = self.normaliser.constants(self.synthetic.device)
            return (self.synthetic - c["mean"]) / c["std"]
        return self.synthetic

    def training_images(self) -> torch.Tensor:
        """The decoded training images, class-major, differentiable w.r.t. the stored pixels."""
        return self.synthetic_images.decode(self.stored_normalised())

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

    def on_fit_start(self) -> None:
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self._net = (self.embed_net.to(self.device, memory_format=memory_format).train(),)

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
        if not self.compile:
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
