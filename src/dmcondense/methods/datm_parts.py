"""What DATM adds to trajectory matching, as pure functions (Guo et al., ICLR 2024).

Written from the authors' `distill/DATM.py` and `buffer/` (NUS-HPC-AI-Lab/DATM), in our words:

- **Correct-only initialisation** (`pix_init: samples_predicted_correctly`): each class's
  synthetic images start as the first `ipc` real images of a shuffled class that an expert's last
  snapshot classifies correctly; where the first expert gets fewer than `ipc` right, the next
  expert's correct ones (not yet chosen) follow, and so on (`first_correct`).
- **Soft labels**: the synthetic labels are logits, learned at their own rate `lr_y`. They start
  as the mean, over every expert that classifies the image correctly, of that expert's logits at
  its last snapshot, unscaled (`soft_label_init`); the networks train on them with
  softmax(label) as the target (`soft_cross_entropy`).
- **Difficulty alignment**: the start epoch is drawn from [min_start, bound), and the bound
  widens linearly from `initial_max` to `max_start` over `expansion_end` iterations
  (`start_epoch_bound`).
- **Loss threshold**: an iteration whose normalised trajectory loss exceeds `threshold` takes no
  step of the images, the step size or the labels (`keep_update`, `masked_step`).
- **GSAM experts** (`buffer_FTD.py`): the experts train with surrogate-gap guided sharpness-aware
  minimisation (models/gsam.py, `experts=gsam`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dmcondense.errors import ConfigError


# --- the start-epoch window ------------------------------------------------------------------
def start_epoch_bound(
    iteration: int,
    max_start: int,
    initial_max: int | None = None,
    expansion_end: int | None = None,
) -> int:
    """The exclusive upper bound of the start epoch at `iteration`.

    Without `initial_max` (their `Sequential_Generation: False`) it is `max_start`. With it, the
    bound starts at `initial_max` and grows by (max_start - initial_max) * iteration /
    expansion_end, truncated, until it reaches `max_start`."""
    if initial_max is None:
        return int(max_start)
    if expansion_end is None or expansion_end < 1:
        raise ConfigError(
            f"a widening start-epoch window needs expansion_end >= 1, got {expansion_end}"
        )
    grown = int(initial_max) + (int(max_start) - int(initial_max)) * int(iteration) // int(
        expansion_end
    )
    return min(grown, int(max_start))


def check_window(
    min_start: int, max_start: int, initial_max: int | None, expert_epochs: int, epochs: int
) -> None:
    """One line where the start-epoch window is empty or runs past the experts' snapshots
    (`epochs` trained epochs give epochs + 1 snapshots, 0..epochs)."""
    low_bound = max_start if initial_max is None else min(initial_max, max_start)
    if not 0 <= min_start < low_bound:
        raise ConfigError(
            f"method.min_start_epoch ({min_start}) must be >= 0 and below the window's first "
            f"bound ({low_bound}); lower it or raise method.max_start_epoch"
        )
    if max_start - 1 + expert_epochs > epochs:
        raise ConfigError(
            f"a start epoch up to {max_start - 1} plus expert_epochs {expert_epochs} passes the "
            f"experts' {epochs} epochs; lower method.max_start_epoch or train longer experts"
        )


# --- the initialisation ----------------------------------------------------------------------
def first_correct(correct: Tensor, labels: Tensor, positions: Tensor, ipc: int) -> Tensor:
    """The indices [classes, ipc] of the real images each class starts from.

    `correct` [E, N]: whether expert e classifies real image n as its label (experts in the order
    they are asked); `labels` [N] the images' classes (0..classes-1); `positions` [N] each image's
    place in its class's shuffled order (any distinct numbers; lower comes first). A class takes
    the images expert 0 gets right in shuffled order, then those expert 1 gets right that are not
    yet taken, and so on; images no expert gets right come last (the authors' loop would look
    for more experts forever). The chosen images of a class are returned in shuffled order.
    """
    experts, n = correct.shape
    labels = labels.long()
    counts = torch.bincount(labels)
    if bool((counts < ipc).any()):
        short = int(torch.argmin(counts))
        raise ConfigError(
            f"class {short} has {int(counts[short])} real images, fewer than ipc={ipc}"
        )
    hit = correct.to(torch.int64)
    # The first expert that gets each image right (`experts` where none does).
    first = torch.where(hit.any(dim=0), torch.argmax(hit, dim=0), torch.full_like(labels, experts))
    rank = torch.argsort(torch.argsort(positions))  # 0..N-1, the shuffled order
    key = (labels * (experts + 1) + first) * n + rank
    order = torch.argsort(key)
    starts = torch.cumsum(counts, 0) - counts
    chosen = order[starts[:, None] + torch.arange(ipc, device=order.device)]  # [classes, ipc]
    # Their index list is kept in shuffled order (a set of small positions, then index_select).
    within = torch.argsort(rank[chosen], dim=1)
    return torch.gather(chosen, 1, within)


@torch.no_grad()
def expert_logits(
    forward: Callable[[Tensor, Tensor], Tensor],
    params: Tensor,
    images: Tensor,
    normalise: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 1024,
) -> Tensor:
    """The logits [N, K] of the network at `params` on `images` (normalised, or uint8 with
    `normalise`), in batches of `batch_size`."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        out.append(forward(params, normalise(x) if normalise is not None else x).float())
    return torch.cat(out)


def correct_only_indices(
    forward: Callable[[Tensor, Tensor], Tensor],
    finals: Sequence[Tensor],
    images: Tensor,
    labels: Tensor,
    ipc: int,
    generator: torch.Generator,
    normalise: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """The real images DATM starts from, class-major [classes * ipc]: `first_correct` over a
    shuffle of each class (`generator`, on the CPU), asking the experts' last snapshots `finals`
    in turn, only as many as some class still needs."""
    labels = labels.long()
    n = labels.shape[0]
    positions = torch.empty(n, dtype=torch.long)
    positions[torch.randperm(n, generator=generator)] = torch.arange(n)
    device = images.device
    counts = torch.bincount(labels).to(device)
    rows = []
    for params in finals:
        logits = expert_logits(forward, params.to(device), images, normalise)
        rows.append(logits.argmax(dim=1) == labels.to(device))
        found = torch.bincount(labels.to(device), weights=torch.stack(rows).any(0).float())
        if bool((found >= torch.clamp(counts, max=ipc)).all()):  # one sync an expert, at init
            break
    chosen = first_correct(torch.stack(rows).cpu(), labels.cpu(), positions, ipc)
    return chosen.flatten()


def soft_label_init(logits: Tensor, labels: Tensor) -> Tensor:
    """The initial soft labels [N, K]: for each image, the mean of the logits [E, N, K] of the
    experts whose top class is its label, unscaled (the authors' `average_logits_per_image`). A
    row that no expert gets right (only where `first_correct` ran out of correct images, or
    images not chosen by it) takes the mean over all experts instead of their 0 / 0."""
    correct = (logits.argmax(dim=2) == labels.to(logits.device)[None]).to(logits.dtype)
    count = correct.sum(dim=0)  # [N]
    summed = (logits * correct[..., None]).sum(dim=0)
    fallback = logits.mean(dim=0)
    return torch.where((count > 0)[:, None], summed / count.clamp_min(1)[:, None], fallback)


def soft_cross_entropy(logits: Tensor, target_logits: Tensor) -> Tensor:
    """The mean over the batch of -sum softmax(target) * log_softmax(logits): their
    `SoftCrossEntropy`, the loss of the unrolled steps and of evaluation on a soft set."""
    return -(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


# --- the loss threshold ----------------------------------------------------------------------
def keep_update(loss: Tensor, threshold: float) -> Tensor:
    """Whether the iteration steps: loss <= threshold, as a 0-d bool tensor on the loss's device
    (no host sync). A non-finite loss never steps."""
    return loss.detach() <= threshold


@torch.no_grad()
def snapshot(optimizer: torch.optim.SGD) -> list[tuple[Tensor, Tensor, Tensor | None]]:
    """Copies of an SGD optimiser's parameters and momentum buffers, for `restore_unless`."""
    if not isinstance(optimizer, torch.optim.SGD):
        raise TypeError(f"snapshot handles SGD, not {type(optimizer).__name__}")
    saved = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            buf = optimizer.state.get(p, {}).get("momentum_buffer")
            saved.append((p, p.detach().clone(), None if buf is None else buf.clone()))
    return saved


@torch.no_grad()
def restore_unless(
    optimizer: torch.optim.SGD, saved: list[tuple[Tensor, Tensor, Tensor | None]], keep: Tensor
) -> None:
    """Undo the steps taken since `snapshot` where `keep` is false, without a host sync: the
    parameters and momentum buffers go back. For SGD without dampening, a momentum buffer made
    by an undone first step is left at zero, which the next real step treats exactly as a fresh
    buffer (0 * momentum + grad)."""
    for p, old, buf in saved:
        p.copy_(torch.where(keep, p, old))
        state = optimizer.state.get(p, {})
        new = state.get("momentum_buffer")
        if new is not None:
            state["momentum_buffer"] = torch.where(keep, new, buf if buf is not None else 0.0)


def masked_step(optimizer: torch.optim.SGD, keep: Tensor) -> None:
    """`optimizer.step()` where `keep` is true, else no change at all (see `restore_unless`)."""
    saved = snapshot(optimizer)
    optimizer.step()
    restore_unless(optimizer, saved, keep)
