"""One scoring service: train fresh networks on each set and test them on real data.

`score` serves the condensation job, the evaluation job and the periodic callback alike;
`train_networks` picks the trainer for one architecture:
  loop      one network after another (evaluation/sequential.py)
  vmap      all together through one vmapped call (evaluation/batched.py)
  ensemble  all together as one grouped-convolution ConvNet (evaluation/ensemble.py)
  auto      vmap on a GPU for architectures without BatchNorm (loop if vmap cannot batch the
            architecture), loop on the CPU, where one network's batch already fills the cores
            and batching only multiplies the memory (docs/results/performance.md)
Every trainer draws the same numbers, so they agree up to floating-point rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from dmcondense.data.imageset import ImageSet
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import DmcondenseWarning
from dmcondense.evaluation.batched import BatchingUnsupported, train_batched
from dmcondense.evaluation.ensemble import supports_ensemble
from dmcondense.evaluation.protocol import Protocol, Task, fresh_network, with_batch_size
from dmcondense.evaluation.sequential import train_sequential
from dmcondense.evaluation.soft import teacher_targets
from dmcondense.models.registry import build_model, uses_batchnorm

BACKENDS = ("auto", "loop", "vmap", "ensemble")
LabelledImages = tuple[Tensor, Tensor]


def choose_backend(backend: str, template: torch.nn.Module, device: torch.device) -> str:
    """The trainer `backend` names for this architecture and device; ValueError if it cannot."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "vmap" if device.type == "cuda" and not uses_batchnorm(template) else "loop"
    if backend == "vmap" and uses_batchnorm(template):
        raise ValueError(f"{type(template).__name__} uses BatchNorm, which vmap cannot train")
    if backend == "ensemble" and not supports_ensemble(template):
        raise ValueError("the ensemble trains ConvNets with instance, layer or no norm only")
    return backend


def train_networks(
    model_name: str,
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    *,
    num_models: int,
    protocol: Protocol,
    seed: int,
    normaliser: Normaliser,
    backend: str = "auto",
    model_kwargs: Mapping | None = None,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: bool | str = False,
    teacher: torch.nn.Module | None = None,
) -> Tensor:
    """Accuracies [num_models] (float64, CPU, in [0, 1]) of fresh `model_name` networks trained
    on (images, labels) and tested on uint8 test images. `labels`: class indices [N], or the
    set's own soft labels as probabilities [N, K] (they train every epoch; a teacher is not
    asked).

    `images`: normalised float [N, C, H, W] or uint8 (normalised batch by batch). `chunk_size`
    caps the networks of one batched pass (memory); results do not depend on it.
    `num_classes` defaults to 1 + the largest label in the training or test labels.
    `progress`: show the epochs, labelled with the model name (True) or the given text.
    `teacher`: labels the set when protocol.labels is soft (evaluation/soft.py).
    """
    if num_models < 1:
        raise ValueError(f"num_models must be positive, got {num_models}")
    device = torch.device(device) if device is not None else images.device
    own_soft = None
    if labels.dim() == 2:  # the set's own soft labels (probabilities [N, K]), every epoch
        own_soft = labels.to(device=device, dtype=torch.float32)
        labels = own_soft.argmax(dim=1)
        if protocol.labels == "soft":
            # Soft labels' hard tail (protocol.HARD_TAIL) is for a teacher's labels; the set's
            # own are its labels, which hard labels keep every epoch.
            protocol = replace(protocol, labels="hard")
    images, labels = images.detach().to(device), labels.to(device=device, dtype=torch.long)
    test_labels = test_labels.long()
    if num_classes is None:
        num_classes = int(max(labels.max(), test_labels.max())) + 1
    shape = (images.shape[1], num_classes, images.shape[-1])
    template = build_model(model_name, *shape, **dict(model_kwargs or {}))
    chosen = choose_backend(backend, template, device)
    if protocol.labels == "relabel" or protocol.weight_decay_on == "matrices":
        # RDED's protocol: a teacher inside the loop and AdamW groups by parameter shape, which
        # the batched trainers' stacked parameters would blur: one network at a time.
        if backend not in ("auto", "loop"):
            raise ValueError(f"the {protocol.augment} protocol trains with backend loop only")
        chosen = "loop"
        if protocol.labels == "relabel" and teacher is None:
            raise ValueError("protocol.labels is relabel but no teacher was given")
    protocol = with_batch_size(protocol, images.shape[0], num_classes)
    networks = [fresh_network(template, seed, model_name, i) for i in range(num_models)]
    soft = own_soft
    if soft is None and protocol.labels == "soft":
        if teacher is None:
            raise ValueError("protocol.labels is soft but no teacher was given")
        soft = teacher_targets(teacher.to(device), images, labels, normaliser, protocol.temperature)
    task = Task(images, labels, test_images, test_labels, protocol, seed, normaliser,
                progress=(progress if isinstance(progress, str) else model_name)
                if progress else None, num_classes=num_classes, soft_targets=soft,
                teacher=teacher.to(device) if protocol.labels == "relabel" else None)  # fmt: skip
    if chosen != "loop":
        try:
            return train_batched(networks, chosen, task, chunk_size)
        except BatchingUnsupported as error:
            if backend != "auto":
                raise
            warnings.warn(f"vmap failed for {model_name} ({error}); training its networks one "
                          "after another", DmcondenseWarning, stacklevel=2)  # fmt: skip
    return train_sequential(networks, task)


def score(
    sets: Mapping[str, Sequence[LabelledImages]],
    architectures: Mapping[str, Mapping],
    protocol: Protocol | Mapping[str, Protocol],
    test: ImageSet,
    seed: int,
    *,
    num_models: int,
    normaliser: Normaliser,
    backend: str = "auto",
    device: torch.device | str | None = None,
    progress: bool = False,
    teacher: torch.nn.Module | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Test accuracies of `num_models` fresh networks per architecture trained on each set.

    `sets`: name -> experiments, each (images, labels); experiment e draws with seed + e, and
    its accuracies are pooled into one tensor [experiments * num_models] per architecture.
    `architectures`: name -> constructor knobs; `protocol`: one for all, or one per
    architecture; `teacher` labels the sets under soft labels. Returns
    results[set][architecture].
    """
    return {
        name: {
            arch: torch.cat([
                train_networks(
                    arch, images, labels, test.images, test.labels, num_models=num_models,
                    protocol=protocol[arch] if isinstance(protocol, Mapping) else protocol,
                    seed=seed + e, normaliser=normaliser, backend=backend,
                    model_kwargs=knobs, num_classes=test.num_classes, device=device,
                    progress=f"{name}/{arch}" if progress else False, teacher=teacher,
                )
                for e, (images, labels) in enumerate(experiments)
            ])
            for arch, knobs in architectures.items()
        }
        for name, experiments in sets.items()
    }  # fmt: skip
