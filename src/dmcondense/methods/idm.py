"""IDM: improved distribution matching (Zhao et al., CVPR 2023).

    queue <- `initial_networks` random ConvNets
    for each step t:
        if t % net_generate_interval == 0: push a fresh network (pop the oldest when full)
        psi    = one network drawn from the queue                    generator(seed, "queue", t)
        for each class c in turn (the real images of all classes embedded in one batch):
            omega_c = one DSA draw shared by real and synthetic
            R, S    = psi(A(real_c, omega_c)), psi(A(decode(S)_c, omega_c))     (factor 2)
            loss_c  = ||mean R - mean S||^2
                      + ce_weight * acc(psi) * CE(classifier(S), c)   (acc: psi's running
                                                                       accuracy on real data)
            S <- S - lr_img * grad_S loss_c     (SGD with momentum, one buffer for all classes)
        (image_step=iteration: one step on the sum over classes instead, all classes batched)
        two networks drawn from the queue each take `model_train_steps` SGD steps, each on
        `batch_train` real images drawn from the whole training set (classes mixed, as the
        authors draw them), and count their accuracy on them

The queue (weights, optimiser state, accuracy counts) is an auxiliary part of the base, saved in
its checkpoints, and every draw is keyed by the step, so a resumed run ends where an
uninterrupted one does. `acc` is in percent and restarts every `accuracy_window` steps, as in
the authors' code (there it restarts at each evaluation).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from dmcondense.errors import ConfigError
from dmcondense.methods.base import AuxiliaryPart
from dmcondense.methods.dm import DistributionMatching
from dmcondense.models.init import reset_parameters
from dmcondense.models.registry import uses_batchnorm
from dmcondense.rng import generator

# Where the queued networks' training batches come from: whole_set: `batch_train` images drawn
# from the whole training set for every SGD step (the authors'); step_batches: from a second
# class-balanced real batch of the step (batch_real a class), as an earlier version did.
QUEUE_DATA = ("whole_set", "step_batches")
# How often the images step: class: after each class's loss, in class order (the authors' loop);
# iteration: once, on the loss summed over the classes.
IMAGE_STEPS = ("class", "iteration")


class QueuedNetwork:
    """One network of the queue: weights, its SGD optimiser, and its accuracy counts."""

    def __init__(self, net: nn.Module, birth: int, lr: float, momentum: float, wd: float) -> None:
        self.net, self.birth = net, birth
        self.optimizer = torch.optim.SGD(
            net.parameters(), lr=lr, momentum=momentum, weight_decay=wd
        )
        device = next(net.parameters()).device
        self.correct = torch.zeros((), device=device)
        self.seen = torch.zeros((), device=device)

    def accuracy_percent(self) -> torch.Tensor:
        """Running accuracy on the real batches it trained on, in percent; 0 before any."""
        return torch.where(self.seen > 0, 100.0 * self.correct / self.seen.clamp_min(1), 0.0)

    def reset_accuracy(self) -> None:
        self.correct.zero_()
        self.seen.zero_()

    def state_dict(self) -> dict:
        return {
            "birth": self.birth,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "correct": self.correct,
            "seen": self.seen,
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.correct.copy_(state["correct"])
        self.seen.copy_(state["seen"])


class ModelQueue(AuxiliaryPart):
    """First in, first out: at most `capacity` networks, each made from `template` and
    initialised from generator(seed, "queue-net", birth), birth counting every network made;
    `initial` networks at fit start."""

    def __init__(
        self, template: nn.Module, capacity: int, seed: int, initial: int = 0, **optimiser
    ) -> None:
        self.template, self.capacity, self.seed = template, capacity, seed
        self.initial = initial
        self.optimiser = optimiser  # lr, momentum, wd of every queued network
        self.networks: list[QueuedNetwork] = []
        self.births = 0

    def __len__(self) -> int:
        return len(self.networks)

    def start(self, device: torch.device) -> None:
        """A fresh queue of `initial` networks on `device`, where the template is placed."""
        self.template.to(device)
        self.networks, self.births = [], 0
        for _ in range(self.initial):
            self.push()

    def push(self) -> None:
        """Add a fresh network; drop the oldest first when the queue is full."""
        if len(self.networks) == self.capacity:
            self.networks.pop(0)
        net = copy.deepcopy(self.template).requires_grad_(True).train()
        device = next(net.parameters()).device
        reset_parameters(net, generator(self.seed, "queue-net", self.births, device=device))
        self.networks.append(QueuedNetwork(net, self.births, **self.optimiser))
        self.births += 1

    def state_dict(self) -> dict:
        return {"births": self.births, "networks": [q.state_dict() for q in self.networks]}

    def load_state_dict(self, state: dict) -> None:
        self.networks = []
        for saved in state["networks"]:
            self.births = saved["birth"]
            self.push()
            self.networks[-1].load_state_dict(saved)
        self.births = state["births"]


class ImprovedDistributionMatching(DistributionMatching):
    name = "idm"
    compile_refusal = "it matches with a different queued network each step (no graph to reuse)"

    def __init__(
        self,
        *args,
        net_num: int = 100,
        initial_networks: int = 3,
        net_generate_interval: int = 30,
        model_train_steps: int = 10,
        trained_per_step: int = 2,
        batch_train: int = 256,
        lr_net: float = 0.01,
        net_momentum: float = 0.9,
        net_weight_decay: float = 5e-4,
        ce_weight: float = 0.5,
        accuracy_window: int = 100,
        queue_data: str = "whole_set",
        image_step: str = "class",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if net_num < initial_networks:
            raise ConfigError(
                f"method.net_num={net_num} is smaller than the starting queue of "
                f"{initial_networks} networks; set method.net_num={initial_networks} or more"
            )
        if uses_batchnorm(self.embed_net):
            raise ConfigError(
                "method=idm trains its queued networks on mixed batches and matches in the same "
                "mode: it needs a network without BatchNorm; use model=convnet"
            )
        if queue_data not in QUEUE_DATA:
            raise ConfigError(
                f"unknown method.queue_data '{queue_data}'; choose one of {', '.join(QUEUE_DATA)}"
            )
        if image_step not in IMAGE_STEPS:
            raise ConfigError(
                f"unknown method.image_step '{image_step}'; choose one of {', '.join(IMAGE_STEPS)}"
            )
        self.queue_data, self.image_step = queue_data, image_step
        # What the DataModule serves each step: the class batches of the matching, plus for the
        # queue either whole-set batches [trained networks, SGD steps, batch] or a second round.
        if queue_data == "whole_set":
            self.whole_set_batches = (trained_per_step, model_train_steps, batch_train)
        else:
            self.real_batches_per_step = 2  # round 0: matching; round 1: the queue's batches
        self.net_num, self.initial_networks = net_num, initial_networks
        self.net_generate_interval = net_generate_interval
        self.model_train_steps, self.trained_per_step = model_train_steps, trained_per_step
        self.batch_train, self.ce_weight = batch_train, ce_weight
        self.accuracy_window = accuracy_window
        net_optimiser = {"lr": lr_net, "momentum": net_momentum, "wd": net_weight_decay}
        # Made afresh at each fit start (from the embedding network as it is placed), restored
        # from the checkpoint on resume: the base's auxiliary part.
        self.queue = ModelQueue(
            self.embed_net, net_num, self.seed, initial_networks, **net_optimiser
        )
        self.register_part(
            "queue",
            self.queue,
            ddp="refuse",
            why="its queued networks train on batches of every class, but DDP ranks hold a "
            "slice of the classes",
        )

    def renew_queue(self, step: int) -> None:
        """Before step `step`: restart the accuracy counts every `accuracy_window` steps, and push
        a fresh network every `net_generate_interval` steps (the oldest leaves when full)."""
        if step > 0 and step % self.accuracy_window == 0:
            for queued in self.queue.networks:
                queued.reset_accuracy()
        if step % self.net_generate_interval == 0:
            self.queue.push()

    def fp16_refusal(self) -> str | None:
        return (
            "its queued networks train with backward passes the gradient scaler never sees, "
            "where fp16 gradients underflow"
        )

    # --- one step ------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        step, classes, real = batch["step"], batch["classes"], batch["images"]
        self.renew_queue(step)
        picks = generator(self.seed, "queue", step)  # host draws: no device sync
        matching = self.queue.networks[int(torch.randint(len(self.queue), (), generator=picks))]

        if self.image_step == "class":
            loss = self.step_class_by_class(matching, step, classes, real[0])
        else:
            real_features, synthetic_features = self.class_features(
                matching.net, step, classes, real[0]
            )
            loss = self.match(real_features, synthetic_features) + self.ce_weight * (
                matching.accuracy_percent()
                * self.class_cross_entropy(matching.net, synthetic_features, classes)
            )
            self.update_images(loss)

        trained = torch.randperm(len(self.queue), generator=picks)[: self.trained_per_step]
        for i, slot in enumerate(trained.tolist()):
            queued = self.queue.networks[slot]
            if self.queue_data == "whole_set":  # the i-th trained network's batches
                images, labels = batch["whole_images"][i], batch["whole_labels"][i]
            else:
                images, labels = self.step_batches(queued, step, real[1], classes)
            self.train_queued(queued, images, labels)
        self.log_loss(loss.detach())
        return loss.detach()

    def step_class_by_class(
        self, matching: QueuedNetwork, step: int, classes: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """The authors' image update: an SGD step after each class's loss, in class order, so a
        class is matched after the earlier classes' steps have moved it by momentum. The real
        images' features do not depend on the images, so they are embedded in one batch first.
        Returns the sum of the class losses (detached)."""
        net = matching.net
        omega, real_features = self.real_features(net, step, classes, real)
        k = real.shape[0]
        weight = self.ce_weight * matching.accuracy_percent()
        losses = []
        for i in range(k):  # IDM refuses DDP: the batch holds every class, in order
            synthetic = self.class_images(i)
            group = classes[i : i + 1]
            features = self.embed(
                net, self.augment.apply(synthetic, omega, group.expand(synthetic.shape[0]))
            )[None]
            loss = self.match(real_features[i : i + 1], features) + weight * (
                self.class_cross_entropy(net, features, group)
            )
            self.update_images(loss, last=i == k - 1)
            losses.append(loss.detach())
        return torch.stack(losses).sum()

    def class_cross_entropy(
        self, net: nn.Module, synthetic_features: torch.Tensor, classes: torch.Tensor
    ) -> torch.Tensor:
        """Sum over classes of the mean cross-entropy of the network's classifier on the class's
        augmented synthetic features [k, m, D]."""
        k, m = synthetic_features.shape[:2]
        logits = net.classifier(synthetic_features.flatten(0, 1))
        per_image = F.cross_entropy(logits, classes.repeat_interleave(m), reduction="none")
        return per_image.view(k, m).mean(dim=1).sum()

    def step_batches(
        self, queued: QueuedNetwork, step: int, real: torch.Tensor, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queue_data=step_batches: `model_train_steps` batches of `batch_train` images drawn
        from the step's second class-balanced round real [k, n, C, H, W], with their labels:
        ([steps, batch, C, H, W], [steps, batch])."""
        k, n = real.shape[:2]
        draws = generator(self.seed, "queue-train", step, queued.birth, device=self.device)
        batch = min(self.batch_train, k * n)
        chosen = torch.stack(
            [torch.randperm(k * n, generator=draws, device=self.device)[:batch]
             for _ in range(self.model_train_steps)]
        )  # fmt: skip
        return real.flatten(0, 1)[chosen], classes.repeat_interleave(n)[chosen]

    def train_queued(
        self, queued: QueuedNetwork, images: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """One SGD step on each batch of uint8 `images` [steps, batch, C, H, W] with `labels`
        [steps, batch], counting the accuracy on them."""
        with torch.enable_grad():
            for x, y in zip(images, labels, strict=True):
                logits = queued.net(self.normalise(x))
                loss = F.cross_entropy(logits, y)
                queued.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.step_part("queue", queued.optimizer)
                with torch.no_grad():
                    queued.correct += (logits.argmax(dim=1) == y).sum()
                    queued.seen += y.shape[0]
