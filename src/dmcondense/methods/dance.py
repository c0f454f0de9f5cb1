"""DANCE: dual-view distribution alignment (Zhang et al., IJCAI 2024).

    pool <- networks pretrained on the real data, each at its initial and trained weights
    for each iteration t (one training_step, one global step):
        i, l    = a pool network and l ~ U(0, 1)                   generator(seed, "pool-pick", t)
        psi     <- l * initial_i + (1 - l) * trained_i             the "middle encoder"
        for each class c in turn (inner-class view):
            omega_c = one draw of color, crop and cutout, shared by real and synthetic
            loss_c  = || mean psi(A(real_c, omega_c)) - mean psi(A(decode(S)_c, omega_c)) ||^2
            S <- SGD step on loss_c
        for each class c in turn (inter-class view, the calibration):
            S <- SGD step on CE(trained_i(A(decode(S)_c)), c)
        S <- clamp(S, 0, 1)

It is NCFM's loop with DM's loss in place of the characteristic-function distance: the pool, the
interpolation, the per-class steps, the calibration step and the DDP hand-over of class rows are
NCFM's (methods/ncfm.py), and the loss of a class is DM's (methods/dm.py). The images learn by
SGD with momentum (no weight decay, no learning-rate schedule), as in the authors' DANCE.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dmcondense.methods.base import CondensationMethod
from dmcondense.methods.dm import matching_loss
from dmcondense.methods.ncfm import CharacteristicFunctionMatching


def dance_loss(real: Tensor, synthetic: Tensor) -> Tensor:
    """The inner-class loss of one class: ||mean real - mean synthetic||^2 of features real
    [n, D] and synthetic [m, D] (their DANCE.py innerloss; DM's loss for one class)."""
    return matching_loss(real.mean(dim=0, keepdim=True), synthetic.mean(dim=0, keepdim=True))


class DualViewAlignment(CharacteristicFunctionMatching):
    name = "dance"

    def __init__(
        self,
        *args,
        pool: Sequence[tuple[dict, dict]] = (),
        calibration_weight: float = 1.0,
        pixels: str = "unit",
        **kwargs,
    ) -> None:
        super().__init__(
            *args, pool=pool, calibration_weight=calibration_weight, optimizer="sgd",
            sampling_net=False, pixels=pixels, **kwargs,
        )  # fmt: skip

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Their optim_img: SGD(lr_img, momentum=mom_img), no weight decay, no schedule.
        return CondensationMethod.configure_optimizers(self)

    def match_draws(self, step: int) -> None:
        return None  # DM's loss draws nothing per class

    def skip_class_draws(self, draws: None) -> None:
        pass

    def class_match(self, real: Tensor, synthetic: Tensor, draws: None) -> Tensor:
        return dance_loss(real, synthetic)
