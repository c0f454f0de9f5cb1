"""DATM: difficulty-aligned trajectory matching (Guo et al., ICLR 2024), MTT with learned soft
labels, a widening window of start epochs and a loss threshold.

    experts <- networks trained on the real data (python -m dmcondense.experts; their recipe
               is GSAM, experts=gsam), parameters kept after every epoch
    S       <- the first ipc real images of each shuffled class that an expert classifies
               correctly (init=correct; jobs/common.py, datm_parts.correct_only_indices)
    Y       <- for each image, the mean logits of the experts' last snapshots that classify it
               correctly (label_init=correct), or expert 0's logits (label_init=first)
    alpha   <- lr_teacher
    for each iteration t (one training_step, one global step):
        bound    = min(initial_max + (max_start - initial_max) t / expansion_end, max_start)
        e, s     = an expert, a start epoch in [min_start, bound)     generator(seed, "expert", t)
        theta_0  = e[s];  target = e[s + expert_epochs]
        for i in 0 .. syn_steps - 1:
            theta_i+1 = theta_i - alpha grad CE(f(A(S[b_i]); theta_i), softmax(Y[b_i]))
        loss = ||theta_N - target||^2 / ||theta_0 - target||^2
        if loss <= threshold:                       (else no step of S, alpha or Y this time)
            S <- SGD(lr_img, momentum 0.5);  alpha <- SGD(lr_lr, 0.5);  Y <- SGD(lr_y, momentum_y)

The unroll is MTT's (methods/mtt.py), with softmax(Y) as the targets of the student's
cross-entropy (their SoftCrossEntropy), so the gradient reaches Y through every inner step too.
The threshold skips without a host sync: all three optimisers step, and where the loss is over
the threshold their parameters and momenta are put back (datm_parts.restore_unless).

The soft labels are an auxiliary part with their own SGD, saved in every checkpoint and given
back on resume; they are made at fit start on the device (the experts' logits), before a resumed
run's saved labels replace them. They travel with the set: synthetic.pt keeps them as
`soft_labels` (logits), and every evaluation trains on softmax(soft_labels) (sets.py,
evaluation/score.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.errors import ConfigError
from dmcondense.methods.datm_parts import (
    check_window,
    expert_logits,
    keep_update,
    restore_unless,
    snapshot,
    soft_label_init,
    start_epoch_bound,
)
from dmcondense.methods.mtt import (
    StepSize,
    TrajectoryMatching,
    checkpointed_loss_and_grads,
    flat_forward,
    unrolled_loss,
)
from dmcondense.rng import generator

LABEL_INITS = ("correct", "first")


@torch.no_grad()
def initial_soft_labels(
    net: nn.Module, trajectories: Sequence[Tensor], images: Tensor, labels: Tensor, how: str
) -> Tensor:
    """The soft labels DATM starts from: the logits of the experts' last snapshots on `images`
    (normalised, on the trajectories' device), averaged over the experts that classify each image
    correctly (how=correct) or expert 0's alone (how=first)."""
    was_training = net.training
    net.eval()  # their labelling network is in eval mode (it matters with BatchNorm only)
    forward = flat_forward(net.to(images.device))
    finals = [t[-1] for t in trajectories][: 1 if how == "first" else None]
    logits = torch.stack([expert_logits(forward, p, images) for p in finals])
    net.train(was_training)
    return logits[0] if how == "first" else soft_label_init(logits, labels)


class SoftLabels(StepSize):
    """The learned soft labels (logits [N, K]) with their own SGD: a learned tensor as MTT's step
    size is, saved and restored the same way; its value is set at fit start (`set`, the experts'
    logits), before a resumed run's saved state is loaded over it."""

    def __init__(self, lr: float, momentum: float) -> None:
        super().__init__(0.0, lr, momentum)
        self.ready = False

    def start(self, device: torch.device) -> None:
        if self.ready:
            super().start(device)

    def set(self, value: Tensor) -> None:
        self.value = value.detach().float().clone()
        self.ready = True
        super().start(value.device)


class DifficultyAlignedTrajectoryMatching(TrajectoryMatching):
    name = "datm"

    def __init__(
        self,
        *args,
        min_start_epoch: int = 0,
        initial_max_start_epoch: int | None = 20,
        expansion_end: int = 3000,
        lr_y: float = 2.0,
        momentum_y: float = 0.9,
        threshold: float = 1.0,
        label_init: str = "correct",
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if label_init not in LABEL_INITS:
            raise ConfigError(
                f"unknown method.label_init '{label_init}'; choose one of {', '.join(LABEL_INITS)}"
            )
        if self.synthetic_images.factor != 1:
            raise ConfigError(
                "method=datm learns one soft label a stored image: set synthetic.factor=1"
            )
        epochs = self._experts.trajectories[0].shape[0] - 1
        check_window(
            min_start_epoch,
            self.max_start_epoch,
            initial_max_start_epoch,
            self.expert_epochs,
            epochs,
        )
        self.min_start_epoch, self.initial_max_start_epoch = (
            min_start_epoch,
            initial_max_start_epoch,
        )
        self.expansion_end, self.threshold, self.label_init = expansion_end, threshold, label_init
        self._soft = self.register_part(
            "soft_labels",
            SoftLabels(lr_y, momentum_y),
            "refuse",
            "the soft labels step once an iteration on the whole set's unroll",
        )

    # --- the soft labels -----------------------------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self._soft.ready:
            images = self.stored_normalised().detach()
            self._soft.set(
                initial_soft_labels(
                    self.embed_net, self._experts.trajectories, images, self.labels, self.label_init
                )
            )

    def soft_labels(self) -> Tensor:
        if not self._soft.ready:
            raise RuntimeError("the soft labels are made at fit start")
        return self._soft.value

    def decoded(self) -> tuple[Tensor, Tensor]:
        """(training images, softmax of the learned soft labels), detached: every evaluation
        trains on these probabilities, as a saved set's soft labels are read (sets.py)."""
        images, _ = super().decoded()
        return images, F.softmax(self.soft_labels().detach().float(), dim=1)

    def record_extra(self) -> dict:
        return {**super().record_extra(), "soft_labels": self.soft_labels().detach().cpu().clone()}

    # --- the step ------------------------------------------------------------------------------
    def draw(self, step: int) -> tuple[Tensor, Tensor]:
        """theta_start and theta_target of `step`: an expert and a start epoch in
        [min_start_epoch, bound(step)), from generator(seed, "expert", step)."""
        g = generator(self.seed, "expert", step)
        expert = int(torch.randint(len(self._experts.trajectories), (1,), generator=g))
        bound = start_epoch_bound(
            step, self.max_start_epoch, self.initial_max_start_epoch, self.expansion_end
        )
        start = int(torch.randint(self.min_start_epoch, bound, (1,), generator=g))
        trajectory = self._experts.trajectories[expert]
        return trajectory[start], trajectory[start + self.expert_epochs]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        step = batch["step"]
        start, target = self.draw(step)
        lr, y = self._step_size.value, self.soft_labels()
        images = self.training_images()
        targets = F.softmax(y, dim=1)  # factor 1: one label a training image
        forward = self.student_forward()
        lr.grad, y.grad = None, None
        optimizers = [self.optimizers().optimizer, self._step_size.optimizer, self._soft.optimizer]
        saved = [snapshot(o) for o in optimizers]
        if self.memory == "unroll":
            draws = self.batches(step, images, targets)
            loss = unrolled_loss(forward, start, target, lr, draws, self.syn_steps)
            self.update_images(loss, inputs=[lr, y])
        else:
            leaf, leaf_targets = images.detach().requires_grad_(True), targets.detach()
            leaf_targets.requires_grad_(True)
            draws = self.batches(step, leaf, leaf_targets)
            loss, (g_images, g_lr, g_targets) = checkpointed_loss_and_grads(
                forward, start, target, lr, draws, self.syn_steps, [leaf, lr, leaf_targets]
            )
            # As MTT's: the hand-made gradients enter through a linear surrogate, here also
            # through the softmax of the labels.
            surrogate = (images * g_images).sum() + lr * g_lr + (targets * g_targets).sum()
            self.update_images(surrogate, inputs=[lr, y])
        self.step_part("step_size", self._step_size.optimizer)
        self.step_part("soft_labels", self._soft.optimizer)
        keep = keep_update(loss, self.threshold)
        for optimizer, state in zip(optimizers, saved, strict=True):
            restore_unless(optimizer, state, keep)
        self.log_loss(loss)
        self.log("train/stepped", keep.float())
        return loss.detach()
