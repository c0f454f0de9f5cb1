"""Gradient matching: DC (Zhao, Mopuri, Bilen, ICLR 2021) and DSA (Zhao, Bilen, ICML 2021).

    for each iteration t (one training_step):
        theta = a fresh network                                         generator(seed, "net", t)
        for round r in 1..outer_loop:
            BatchNorm only: running statistics from 16 real images a class, then frozen (eval)
            for each class c (all classes in one vmapped call where the network allows):
                g_real = grad_theta CE(theta(A(real_c)), c)                          constant
                g_syn  = grad_theta CE(theta(A(S_c)), c)           differentiable w.r.t. S
                loss  += D(g_real, g_syn)
            S <- S - lr_img * grad_S loss          (SGD with momentum: the base's update_images)
            unless r is the last round: train theta `inner_loop` epochs on S (detached)

DSA is DC with one augmentation draw a class shared by the real and the synthetic batch
(Siamese), and augmented batches in the inner loop (one family a batch, each image its own
parameters, as the reference draws them; `inner_family=image` draws a family per image); DC
runs with augment=none. The real batches
of the rounds come with the step (`real_batches_per_step`): [outer_loop, classes, n, C, H, W].
Only the last round's update counts a global step (the base's update_images), so one global
step is one iteration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from dmcondense.errors import ConfigError
from dmcondense.methods.base import CondensationMethod, full_precision
from dmcondense.models.registry import BATCH_NORMS, uses_batchnorm
from dmcondense.rng import generator, to_device

DISTANCES = ("ours", "mse", "cos")
PER_CLASS = ("auto", "vmap", "loop")
INNER_FAMILIES = ("batch", "image")
# (outer_loop, inner_loop) by IPC: the authors' table; other IPCs are set by hand.
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
BATCHNORM_IMAGES_PER_CLASS = 16  # real images a class that set the running statistics
EPS = 1e-6


@full_precision
def gradient_distance(real: Sequence[Tensor], synthetic: Sequence[Tensor], kind: str) -> Tensor:
    """Per-class distance [k] of two gradients given layer by layer as [k, *parameter shape].

    ours  sum over layers and output rows of 1 - cosine (a weight is read as [out, rest]);
          1-D parameters (biases, norm affines) count 0
    mse   squared distance of all gradients, concatenated
    cos   1 - cosine of all gradients, concatenated
    """
    if kind == "ours":
        total = real[0].new_zeros(real[0].shape[0])
        for r, s in zip(real, synthetic, strict=True):
            if r.dim() <= 2:  # [k, n]: a 1-D parameter
                continue
            r, s = r.flatten(2), s.flatten(2)  # [k, out, rest]
            cosine = (r * s).sum(-1) / (r.norm(dim=-1) * s.norm(dim=-1) + EPS)
            total = total + (1 - cosine).sum(-1)
        return total
    r = torch.cat([g.flatten(1) for g in real], dim=1)
    s = torch.cat([g.flatten(1) for g in synthetic], dim=1)
    if kind == "mse":
        return (r - s).pow(2).sum(-1)
    if kind == "cos":
        return 1 - (r * s).sum(-1) / (r.norm(dim=-1) * s.norm(dim=-1) + EPS)
    raise ValueError(f"unknown distance {kind!r}; choose one of {', '.join(DISTANCES)}")


def loops_for(ipc: int, outer_loop: int | None, inner_loop: int | None) -> tuple[int, int]:
    """(outer_loop, inner_loop): as given, else the authors' table for `ipc`."""
    if outer_loop is not None and inner_loop is not None:
        return int(outer_loop), int(inner_loop)
    if ipc not in LOOPS:
        raise ConfigError(
            f"no outer/inner loop counts for ipc={ipc}; the table knows ipc "
            f"{', '.join(map(str, LOOPS))}; set method.outer_loop=N method.inner_loop=M"
        )
    table_outer, table_inner = LOOPS[ipc]
    return (table_outer if outer_loop is None else int(outer_loop),
            table_inner if inner_loop is None else int(inner_loop))  # fmt: skip


class GradientMatching(CondensationMethod):
    """The bilevel loop of DC; `DatasetCondensation` and `SiameseAugmentation` name it."""

    compile_refusal = (
        "its per-class gradients are differentiated again (a double backward), which "
        "torch.compile does not support, and its network is called directly, not via embed"
    )

    def fp16_refusal(self) -> str | None:
        return (
            "its inner loop trains the network with backward passes the gradient scaler never "
            "sees, where fp16 gradients underflow"
        )

    def __init__(
        self,
        *args,
        outer_loop: int | None = None,
        inner_loop: int | None = None,
        lr_net: float = 0.01,
        batch_train: int = 256,
        distance: str = "ours",
        per_class: str = "auto",
        inner_family: str = "batch",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.embed_net.requires_grad_(True)  # it is trained between rounds (not a parameter)
        if distance not in DISTANCES:
            raise ConfigError(
                f"unknown method.distance '{distance}'; choose one of {', '.join(DISTANCES)}"
            )
        if per_class not in PER_CLASS:
            raise ConfigError(
                f"unknown method.per_class '{per_class}'; choose one of {', '.join(PER_CLASS)}"
            )
        if inner_family not in INNER_FAMILIES:
            raise ConfigError(
                f"unknown method.inner_family '{inner_family}'; choose one of "
                f"{', '.join(INNER_FAMILIES)}"
            )
        self.inner_family = inner_family
        net = self.embed_net
        matched = [p for p in net.parameters() if distance != "ours" or p.dim() > 1]
        if not matched:
            raise ConfigError(
                f"{type(net).__name__} has no parameters for gradient matching to compare "
                f"(distance '{distance}'); use a ConvNet"
            )
        self.outer_loop, self.inner_loop = loops_for(self.ipc, outer_loop, inner_loop)
        self.lr_net, self.batch_train, self.distance = lr_net, batch_train, distance
        self.batchnorm = uses_batchnorm(net)
        self.per_class = per_class
        self.real_batches_per_step = self.outer_loop

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.batchnorm and self.trainer.world_size > 1:
            raise ConfigError(
                "gradient matching with a BatchNorm network runs on one process: its running "
                "statistics need every class, but DDP ranks hold a slice; use model=convnet"
            )

    # --- one iteration -------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        step, classes, real = batch["step"], batch["classes"], batch["images"]
        net = self.draw_network(step)
        losses = []
        for r in range(self.outer_loop):
            if self.batchnorm:
                self.set_batchnorm_statistics(net, real[r])
            loss = self.round_loss(net, step, r, classes, real[r])
            last = r + 1 == self.outer_loop
            self.update_images(loss, last=last)
            if not last:
                self.train_network(net, step, r)
            losses.append(loss.detach())
        loss = torch.stack(losses).mean()
        self.log_loss(loss)
        return loss

    def round_loss(
        self, net: nn.Module, step: int, round: int, classes: Tensor, real: Tensor
    ) -> Tensor:
        """Sum over `classes` of the gradient distance for uint8 real images [k, n, C, H, W]."""
        k, n = real.shape[:2]
        omega = self.augment.sample(
            self.num_classes, generator(self.seed, "augment", step, round, device=self.device)
        )
        real_x = self.augment.apply(
            self.normalise(real.flatten(0, 1)), omega, classes.repeat_interleave(n)
        )
        synthetic = self.synthetic_images.per_class(self.training_images())[classes]
        m = synthetic.shape[1]
        synthetic_x = self.augment.apply(
            synthetic.flatten(0, 1), omega, classes.repeat_interleave(m)
        )
        real_x, synthetic_x = (
            real_x.view(k, n, *real_x.shape[1:]),
            synthetic_x.view(k, m, *real_x.shape[1:]),
        )
        vmapped = self.gradient_path() == "vmap"
        gradients = self.class_gradients_vmap if vmapped else self.class_gradients_loop
        with torch.no_grad():
            g_real = gradients(net, real_x, classes)
        g_synthetic = gradients(net, synthetic_x, classes)
        return gradient_distance(g_real, g_synthetic, self.distance).sum()

    # --- per-class gradients, two ways with one result -----------------------------------------
    def gradient_path(self) -> str:
        """`per_class` with auto resolved: vmap on a GPU, where one batched call replaces a
        launch-bound loop over classes; the loop on a CPU, where vmap measured slower and held
        more memory (benchmarks/README.md), and for BatchNorm networks (samples interact)."""
        if self.per_class != "auto":
            return self.per_class
        return "vmap" if self.device.type == "cuda" and not self.batchnorm else "loop"

    @staticmethod
    def class_gradients_vmap(net: nn.Module, x: Tensor, classes: Tensor) -> list[Tensor]:
        """grad_theta CE(net(x[c]), classes[c]) for every class at once: [k, *shape] per
        parameter, differentiable w.r.t. x (torch.func: vmap over grad)."""
        params = {name: p.detach() for name, p in net.named_parameters()}
        buffers = dict(net.named_buffers())

        def class_loss(p: dict, images: Tensor, label: Tensor) -> Tensor:
            logits = functional_call(net, (p, buffers), (images,))
            return F.cross_entropy(logits, label.expand(images.shape[0]))

        per_class = vmap(grad(class_loss), in_dims=(None, 0, 0))(params, x, classes)
        return list(per_class.values())

    @staticmethod
    def class_gradients_loop(net: nn.Module, x: Tensor, classes: Tensor) -> list[Tensor]:
        """The same gradients one class at a time (the reference's loop; BatchNorm networks)."""
        params = list(net.parameters())
        differentiable = torch.is_grad_enabled() and x.requires_grad
        per_class = []
        for c in range(x.shape[0]):
            with torch.enable_grad():
                loss = F.cross_entropy(net(x[c]), classes[c].expand(x.shape[1]))
                per_class.append(torch.autograd.grad(loss, params, create_graph=differentiable))
        return [torch.stack(layer) for layer in zip(*per_class, strict=True)]

    # --- the network between rounds ------------------------------------------------------------
    def set_batchnorm_statistics(self, net: nn.Module, real: Tensor) -> None:
        """Running statistics from 16 real images a class (train mode), then frozen (eval)."""
        images = real[:, :BATCHNORM_IMAGES_PER_CLASS].flatten(0, 1)
        net.train()
        with torch.no_grad():
            net(self.normalise(images))
        for module in net.modules():
            if isinstance(module, BATCH_NORMS):
                module.eval()

    def train_network(self, net: nn.Module, step: int, round: int) -> None:
        """`inner_loop` epochs of SGD (lr_net, no momentum) on the synthetic set, detached,
        shuffled and augmented (one family a batch unless inner_family=image) with draws keyed
        by (step, round, epoch)."""
        images, labels = self.decoded()
        one_family = self.inner_family == "batch"
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=self.lr_net)
        for epoch in range(self.inner_loop):
            g = generator(self.seed, "inner", step, round, epoch)
            order = to_device(torch.randperm(images.shape[0], generator=g), self.device)
            augment_g = generator(
                self.seed, "inner-augment", step, round, epoch, device=self.device
            )
            for start in range(0, images.shape[0], self.batch_train):
                index = order[start : start + self.batch_train]
                draw = self.augment.sample(index.numel(), augment_g, one_family)
                x = self.augment.apply(images[index], draw)
                loss = F.cross_entropy(net(x), labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()


class DatasetCondensation(GradientMatching):
    name = "dc"


class SiameseAugmentation(GradientMatching):
    name = "dsa"
