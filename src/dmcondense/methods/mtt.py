"""MTT: matching training trajectories (Cazenavette et al., CVPR 2022).

    experts <- networks trained on the real data, parameters kept after every epoch
               (python -m dmcondense.experts; models/experts.py)
    alpha   <- lr_teacher                                  the learned step size
    for each iteration t (one training_step, one global step):
        e, s     = an expert, a start epoch in [0, max_start_epoch)    generator(seed, "expert", t)
        theta_0  = e[s];  target = e[s + expert_epochs]
        for i in 0 .. syn_steps - 1:                                   minibatches of batch_syn
            x_i, y_i = A(S[b_i], omega_i), labels[b_i]     b_i, omega_i: generator(seed, ..., t)
            theta_i+1 = theta_i - alpha grad_theta CE(f(x_i; theta_i), y_i)   (functional_call)
        loss = ||theta_N - target||^2 / ||theta_0 - target||^2
        S     <- SGD(lr_img, momentum 0.5) on d loss / d S
        alpha <- SGD(lr_lr, momentum 0.5) on d loss / d alpha

The gradient reaches S and alpha through the whole unroll (second order). `memory=unroll` keeps
the unroll's graph (the authors' way: memory grows with syn_steps x batch); `memory=checkpoint`
keeps only the syn_steps parameter vectors and the augmentation draws, and in the backward sweep
rebuilds one step's graph at a time (reverse-mode by hand: the adjoint of theta_i+1 pulled back
through step i), so its memory is one step's graph whatever syn_steps is, for about one more
first-order pass a step. Both give the same loss and gradients to rounding.

The experts' trajectories are data handed in with every run (an auxiliary part that saves
nothing); the step size and its optimiser are an auxiliary part the checkpoints keep, so a
resumed run ends where an unbroken one does. The unroll trains on the whole synthetic set (every
class), so DDP is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from dmcondense.errors import ConfigError
from dmcondense.methods.base import AuxiliaryPart, CondensationMethod, full_precision
from dmcondense.rng import generator

MEMORY_MODES = ("unroll", "checkpoint")

# forward(params [P], images [n, C, H, W]) -> logits [n, K]
Forward = Callable[[Tensor, Tensor], Tensor]
# batch(i) -> (augmented images, labels) of inner step i, differentiable w.r.t. the images
Batch = Callable[[int], tuple[Tensor, Tensor]]


def flat_forward(net: nn.Module) -> Forward:
    """forward(params [P], images) -> logits: `net` run with one flat parameter vector (in
    `named_parameters()` order, as the experts' trajectories store them)."""
    names = [(name, p.shape) for name, p in net.named_parameters()]
    numels = [p.numel() for p in net.parameters()]

    def forward(params: Tensor, images: Tensor) -> Tensor:
        # One split, not a slice a tensor: its backward is one concatenation, where slices'
        # each scatter into a zero vector of every parameter, summed (the same values).
        pieces = params.split(numels)
        views = {
            name: piece.view(shape) for (name, shape), piece in zip(names, pieces, strict=True)
        }
        return functional_call(net, views, (images,))

    return forward


@full_precision
def trajectory_loss(end: Tensor, start: Tensor, target: Tensor) -> Tensor:
    """MTT's normalised parameter matching: ||end - target||^2 / ||start - target||^2 (the
    authors also divide both by the parameter count, which cancels)."""
    return (end - target).square().sum() / (start - target).square().sum()


def student_step(forward: Forward, params: Tensor, lr: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """One SGD step of the student on (x, y) at step size `lr`, kept differentiable w.r.t. the
    parameters, the images and the step size (create_graph)."""
    loss = F.cross_entropy(forward(params, x), y)
    (grad,) = torch.autograd.grad(loss, params, create_graph=True)
    return params - lr * grad


def unrolled_loss(
    forward: Forward, start: Tensor, target: Tensor, lr: Tensor, batch: Batch, steps: int
) -> Tensor:
    """The trajectory loss after `steps` student steps from `start`, the whole unroll in the
    graph (the authors' way)."""
    params = start.detach().requires_grad_(True)
    for i in range(steps):
        x, y = batch(i)
        params = student_step(forward, params, lr, x, y)
    return trajectory_loss(params, start, target)


def checkpointed_loss_and_grads(
    forward: Forward,
    start: Tensor,
    target: Tensor,
    lr: Tensor,
    batch: Batch,
    steps: int,
    inputs: Sequence[Tensor],
) -> tuple[Tensor, list[Tensor]]:
    """The same loss as `unrolled_loss`, and its gradients w.r.t. `inputs` (leaves the batches
    and `lr` depend on), with at most one inner step's graph alive at a time.

    Forward: the parameter vectors theta_0..theta_N, first-order only. Backward: from the
    adjoint a_N = dL/dtheta_N, for i = N-1 .. 0 rebuild step i (its batch again: `batch(i)` must
    give the same images each call) and pull a_i+1 back to theta_i, `inputs` and lr."""
    thetas = [start.detach()]
    for i in range(steps):
        params = thetas[-1].requires_grad_(True)
        with torch.no_grad():  # the images' graph is rebuilt in the backward sweep
            x, y = batch(i)
        loss = F.cross_entropy(forward(params, x), y)
        (grad,) = torch.autograd.grad(loss, params)
        thetas[-1] = params.detach()
        thetas.append((params - lr.detach() * grad).detach())
    end = thetas[-1].requires_grad_(True)
    loss = trajectory_loss(end, start, target)
    (adjoint,) = torch.autograd.grad(loss, end)
    grads = [torch.zeros_like(t) for t in inputs]
    for i in reversed(range(steps)):
        params = thetas[i].requires_grad_(True)
        x, y = batch(i)
        stepped = student_step(forward, params, lr, x, y)
        pulled = torch.autograd.grad(stepped, [params, *inputs], adjoint, allow_unused=True)
        adjoint = pulled[0]
        for g, p in zip(grads, pulled[1:], strict=True):
            if p is not None:
                g += p
    return loss.detach(), grads


class ExpertTrajectories(AuxiliaryPart):
    """The experts' parameter trajectories, each float32 [epochs + 1, P], placed on the device at
    fit start; data handed in with every run, never saved."""

    saves_state = False

    def __init__(self, trajectories: list[Tensor]) -> None:
        self.trajectories = trajectories

    def start(self, device: torch.device) -> None:
        self.trajectories = [t.to(device) for t in self.trajectories]


class StepSize(AuxiliaryPart):
    """The learned step size of the student's SGD, with its own SGD (momentum 0.5)."""

    def __init__(self, initial: float, lr: float, momentum: float = 0.5) -> None:
        self.value = torch.tensor(float(initial), requires_grad=True)
        self.lr, self.momentum = lr, momentum
        self.optimizer: torch.optim.Optimizer | None = None

    def start(self, device: torch.device) -> None:
        self.value = self.value.detach().to(device).requires_grad_(True)
        self.optimizer = torch.optim.SGD([self.value], lr=self.lr, momentum=self.momentum)

    def state_dict(self) -> dict:
        return {"value": self.value.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.value.copy_(state["value"])
        self.optimizer.load_state_dict(state["optimizer"])


class TrajectoryMatching(CondensationMethod):
    name = "mtt"
    uses_experts = True
    compile_refusal = (
        "its student runs through torch.func.functional_call with new parameters every inner "
        "step, not through `embed`"
    )

    def __init__(
        self,
        *args,
        experts: list[dict],
        syn_steps: int = 20,
        expert_epochs: int = 3,
        max_start_epoch: int = 25,
        lr_teacher: float = 0.01,
        lr_lr: float = 1e-5,
        lr_momentum: float = 0.5,
        batch_syn: int | None = None,
        memory: str = "unroll",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if memory not in MEMORY_MODES:
            raise ConfigError(
                f"unknown method.memory '{memory}'; choose one of {', '.join(MEMORY_MODES)}"
            )
        if not experts:
            raise ConfigError("method=mtt needs at least one expert; set experts.size=N")
        epochs = experts[0]["trajectory"].shape[0] - 1
        if min(syn_steps, expert_epochs, max_start_epoch) < 1:
            raise ConfigError(
                "method.syn_steps, method.expert_epochs and method.max_start_epoch must be 1 or "
                f"more, got {syn_steps}, {expert_epochs}, {max_start_epoch}"
            )
        reach = max_start_epoch - 1 + expert_epochs
        if reach > epochs:
            raise ConfigError(
                f"method.max_start_epoch={max_start_epoch} and method.expert_epochs="
                f"{expert_epochs} reach epoch {reach}, but the experts have {epochs} epochs; "
                f"set experts.epochs={reach} or more"
            )
        size = self.synthetic_images.decoded_per_class * self.num_classes
        self.syn_steps, self.expert_epochs = syn_steps, expert_epochs
        self.max_start_epoch, self.memory = max_start_epoch, memory
        self.batch_syn = size if batch_syn is None else min(int(batch_syn), size)
        names = [n for n, _ in self.embed_net.named_parameters()]
        if experts[0]["names"] != names:
            raise ConfigError(
                "the experts were trained on another network (their parameters differ from "
                "the model's); train them with this run's model= settings"
            )
        self._experts = self.register_part(
            "experts",
            ExpertTrajectories([e["trajectory"] for e in experts]),
            "refuse",
            "the unroll trains on every class's synthetic images",
        )
        self._step_size = self.register_part(
            "step_size",
            StepSize(lr_teacher, lr_lr, lr_momentum),
            "refuse",
            "the learned step size steps once an iteration on the whole set's unroll",
        )

    # --- what the evaluation and the set record read -------------------------------------------
    def learned_lr(self) -> float:
        """The learned step size (a host read: for saving and scoring, not the step)."""
        return float(self._step_size.value.detach())

    def record_extra(self) -> dict:
        return {"lr": self.learned_lr()}

    def scoring_lr(self) -> float | None:
        return self.learned_lr()

    def fp16_refusal(self) -> str | None:
        return "the learned step size steps on the gradient of the scaled loss, unscaled"

    # --- the step ------------------------------------------------------------------------------
    def student_forward(self) -> Forward:
        return flat_forward(self.embed_net)

    def draw(self, step: int) -> tuple[Tensor, Tensor]:
        """theta_start and theta_target of `step`: an expert and a start epoch drawn from
        generator(seed, "expert", step)."""
        g = generator(self.seed, "expert", step)
        expert = int(torch.randint(len(self._experts.trajectories), (1,), generator=g))
        start = int(torch.randint(self.max_start_epoch, (1,), generator=g))
        trajectory = self._experts.trajectories[expert]
        return trajectory[start], trajectory[start + self.expert_epochs]

    def batches(self, step: int, images: Tensor, labels: Tensor) -> Batch:
        """Inner step i's augmented minibatch: the synthetic images in random chunks of
        batch_syn (a fresh permutation each time the chunks run out, as the authors), each
        augmented with its own draw; the draws are made once, so every call gives the same."""
        n, device = images.shape[0], images.device
        chunks: list[Tensor] = []
        order_g = generator(self.seed, "syn-batch", step, device=device)
        augment_g = generator(self.seed, "augment", step, device=device)
        chosen, draws = [], []
        for _ in range(self.syn_steps):
            if not chunks:
                order = torch.randperm(n, generator=order_g, device=device)
                chunks = list(order.split(self.batch_syn))
            index = chunks.pop()
            chosen.append(index)
            draws.append(self.augment.sample(index.numel(), augment_g, one_family=True))

        def batch(i: int) -> tuple[Tensor, Tensor]:
            return self.augment.apply(images[chosen[i]], draws[i]), labels[chosen[i]]

        return batch

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        step = batch["step"]
        start, target = self.draw(step)
        lr = self._step_size.value
        images = self.training_images()
        labels = self.synthetic_images.decode_labels(self.labels)
        forward = self.student_forward()
        lr.grad = None
        if self.memory == "unroll":
            draws = self.batches(step, images, labels)
            loss = unrolled_loss(forward, start, target, lr, draws, self.syn_steps)
            self.update_images(loss, inputs=[lr])
        else:
            leaf = images.detach().requires_grad_(True)
            draws = self.batches(step, leaf, labels)
            loss, (g_images, g_lr) = checkpointed_loss_and_grads(
                forward, start, target, lr, draws, self.syn_steps, [leaf, lr]
            )
            # The hand-made gradients enter the optimisers through a linear surrogate, whose
            # backward hands them on exactly (and through the decoding of stored pixels).
            surrogate = (images * g_images).sum() + lr * g_lr
            self.update_images(surrogate, inputs=[lr])
        self.step_part("step_size", self._step_size.optimizer)
        self.log_loss(loss)
        return loss.detach()
