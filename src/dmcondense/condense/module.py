"""The condensation LightningModule: the synthetic images are its one and only parameter.

Each step draws a fresh, never-trained embedding network from generator(seed, "net", step),
one Siamese DSA draw per class from generator(seed, "augment", step), and matches the mean
embeddings of real and synthetic images class by class. All classes of this rank go through the
network in one batched call per side (required with BatchNorm, cheaper without).

GPU fast path: under precision=bf16-mixed the network runs in bf16 while the synthetic images,
the class means and the loss stay fp32; `channels_last` feeds the network NHWC tensors;
`compile` wraps the network's `embed` in torch.compile once (the network is re-initialised in
place each step, so the compiled code is reused); the real images arrive as uint8 on the
device (the DataModule gathers them there) and a step has no host-device sync (no `.item()`,
no `nonzero`; DSA selects by family with `torch.where` off the CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn

from dmcondense.augment import DSA, NoAugment
from dmcondense.condense.loss import class_means, matching_loss
from dmcondense.models.init import reset_parameters
from dmcondense.rng import generator


class DistributionMatching(L.LightningModule):
    def __init__(
        self,
        embed_net: nn.Module,
        augment: DSA | NoAugment,
        initial_images: torch.Tensor,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        lr_img: float = 1.0,
        momentum: float = 0.5,
        seed: int = 0,
        channels_last: bool = False,
        compile: bool = False,
        compile_backend: str | Callable = "inductor",
    ) -> None:
        super().__init__()
        if initial_images.shape[0] % num_classes:
            raise ValueError("initial_images must hold the same number of images for every class")
        self.num_classes = num_classes
        self.ipc = initial_images.shape[0] // num_classes
        self.synthetic = nn.Parameter(initial_images.clone().float())  # class-major
        self.register_buffer("labels", torch.arange(num_classes).repeat_interleave(self.ipc))
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(shape))
        # (x / 255 - mean) / std as x * scale - shift
        self.register_buffer("pixel_scale", 1.0 / (255.0 * self.std), persistent=False)
        self.register_buffer("pixel_shift", self.mean / self.std, persistent=False)
        # A tuple hides it from nn.Module: its weights are redrawn each step, never learned.
        self._net = (embed_net.requires_grad_(False),)
        self.augment = augment
        self.lr_img, self.momentum, self.seed = lr_img, momentum, seed
        self.channels_last = channels_last
        self.compile, self.compile_backend = compile, compile_backend
        self._compiled_embed: Callable | None = None

    @property
    def embed_net(self) -> nn.Module:
        return self._net[0]

    def on_fit_start(self) -> None:
        memory_format = torch.channels_last if self.channels_last else torch.preserve_format
        self._net = (self.embed_net.to(self.device, memory_format=memory_format).train(),)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, C, H, W] -> float, normalised on the device that holds them."""
        return images.float().mul_(self.pixel_scale).sub_(self.pixel_shift)  # two in-place passes

    def draw_network(self, step: int) -> nn.Module:
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
        class means of nearly equal bf16 features would lose the difference the loss measures."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.embed_function(net)(images).flatten(1).float()

    def step_loss(self, step: int, classes: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Matching loss of one step for `classes` with uint8 real images [k, n, C, H, W]."""
        net = self.draw_network(step)
        params = self.augment.sample(
            self.num_classes, generator(self.seed, "augment", step, device=self.device)
        )
        k, n = real.shape[:2]
        real_groups = classes.repeat_interleave(n)
        with torch.no_grad():
            real_x = self.augment.apply(self.normalise(real.flatten(0, 1)), params, real_groups)
            real_means = class_means(self.embed(net, real_x), k)
        synthetic = self.synthetic.view(self.num_classes, self.ipc, *self.synthetic.shape[1:])
        synthetic_x = self.augment.apply(
            synthetic[classes].flatten(0, 1), params, classes.repeat_interleave(self.ipc)
        )
        synthetic_means = class_means(self.embed(net, synthetic_x), k)
        return matching_loss(real_means, synthetic_means)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.step_loss(batch["step"], batch["classes"], batch["images"])
        # Each rank holds its classes' share; the logged figure is the sum over all classes.
        self.log(
            "train/loss",
            loss,
            prog_bar=True,
            reduce_fx="sum",
            sync_dist=self.trainer.world_size > 1,
        )
        # DDP averages gradients over ranks; each rank holds a disjoint slice of classes,
        # so scaling by the world size turns that average into the full sum over classes.
        return loss * self.trainer.world_size

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.synthetic], lr=self.lr_img, momentum=self.momentum)

    def denormalised(self) -> torch.Tensor:
        """The synthetic images in [0, 1], for pictures and exports."""
        return (self.synthetic.detach() * self.std + self.mean).clamp(0, 1)
