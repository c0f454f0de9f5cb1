"""GSAM: surrogate-gap guided sharpness-aware minimisation (Zhuang et al., ICLR 2022), as DATM's
experts train with it (NUS-HPC-AI-Lab/DATM, buffer/buffer_FTD.py and buffer/gsam/gsam.py: a
constant rho, SGD underneath, adaptive perturbation). models/experts.py steps with it under
`experts.optimizer=gsam`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module | None) -> Iterator[None]:
    """BatchNorm running statistics left as they are (momentum 0) inside the block: GSAM's
    second pass at the perturbed weights must not count as a batch seen."""
    norms = (
        [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if model is not None
        else []
    )
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def gsam_step(
    params: Sequence[Tensor],
    closure: Callable[[], Tensor],
    optimizer: torch.optim.Optimizer,
    rho: float,
    alpha: float,
    adaptive: bool = True,
    eps: float = 1e-12,
    model: nn.Module | None = None,
) -> Tensor:
    """One GSAM step (Zhuang et al., ICLR 2022, as DATM's experts use it); returns the loss at
    the unperturbed weights.

    `closure()` zeroes the gradients, runs the forward and backward passes on one (already
    augmented) batch and returns the loss. With g the gradient at w:
        e     = rho * g / (||g'|| + eps)   (adaptive: g' = |w| * g and e is multiplied by w^2)
        h     = the gradient at w + e
        g_v   = g - cos(g, h) * ||g|| * h / (||h|| + eps)     (g's part orthogonal to h)
        w    <- optimizer step with the gradient h - alpha * g_v, from w
    `model`: its BatchNorm running statistics stay put during the second pass."""
    params = [p for p in params if p.requires_grad]
    loss = closure()
    with torch.no_grad():
        grads = [p.grad.detach().clone() if p.grad is not None else None for p in params]
        live = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
        scaled = [(p.abs() * g) if adaptive else g for p, g in live]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        scale = rho / (norm + eps)
        shifts = []
        for p, g in live:
            e = g * scale
            if adaptive:
                e = e * p.square()
            p.add_(e)
            shifts.append(e)
    with frozen_running_stats(model):
        closure()
    with torch.no_grad():
        new = [p.grad for p, _ in live]
        inner = sum((g * h).sum() for (_, g), h in zip(live, new, strict=True))
        new_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(h) for h in new]))
        old_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for _, g in live])
        )
        cosine = inner / (new_norm * old_norm + eps)
        for (p, g), h, e in zip(live, new, shifts, strict=True):
            vertical = g - cosine * old_norm * h / (new_norm + eps)
            h.add_(vertical, alpha=-alpha)
            p.sub_(e)
    optimizer.step()
    return loss.detach()
