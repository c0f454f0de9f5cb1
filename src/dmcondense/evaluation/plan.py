"""How sets are scored, decided once per run: the architectures with their constructor knobs,
each one's protocol, the number of networks, the trainer backend and the seed.

A job builds one plan from its config (jobs/build.py) and hands it to everything that scores:
the final evaluation, the periodic callback and the continual steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dmcondense.data.imageset import ImageSet
from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.protocol import Protocol, accuracy_summary
from dmcondense.evaluation.score import LabelledImages, score


@dataclass(frozen=True)
class EvaluationPlan:
    protocol_name: str  # dsa | dc | idc | ncfm: the family the per-architecture protocols follow
    architectures: Mapping[str, Mapping]  # name -> constructor knobs
    protocols: Mapping[str, Protocol]  # name -> what its networks train with
    num_models: int
    backend: str
    seed: int
    teacher: torch.nn.Module | None = None  # labels the sets when the protocols' labels are soft

    def variant(self, **changes: object) -> EvaluationPlan:
        """The same plan with `changes` (Protocol fields: labels, augment, cutmix_p, lr, ...)
        made to every architecture's protocol."""
        protocols = {name: dataclasses.replace(p, **changes) for name, p in self.protocols.items()}
        return dataclasses.replace(self, protocols=protocols)

    @property
    def labels(self) -> str:
        """hard | soft: what the sets' networks train on (the same for every architecture)."""
        return next(iter(self.protocols.values())).labels

    def scores(
        self,
        sets: Mapping[str, Sequence[LabelledImages]],
        test: ImageSet,
        normaliser: Normaliser,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> dict[str, dict[str, Tensor]]:
        """Raw accuracies results[set][architecture] (see evaluation.score)."""
        return score(
            sets, self.architectures, self.protocols, test, self.seed,
            num_models=self.num_models, normaliser=normaliser, backend=self.backend,
            device=device, progress=progress, teacher=self.teacher,
        )  # fmt: skip

    def summaries(
        self,
        sets: Mapping[str, Sequence[LabelledImages]],
        test: ImageSet,
        normaliser: Normaliser,
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> dict[str, dict[str, dict]]:
        """{set: {architecture: {mean, std, accuracies}}} in percent."""
        raw = self.scores(sets, test, normaliser, device, progress)
        return {
            name: {arch: accuracy_summary(acc) for arch, acc in by_arch.items()}
            for name, by_arch in raw.items()
        }

    def record(self) -> dict:
        """What each architecture's networks actually trained with, for results.json."""
        return {
            "protocol": self.protocol_name,
            "num_models": self.num_models,
            "architectures": {
                name: dataclasses.asdict(protocol) for name, protocol in self.protocols.items()
            },
        }
