"""Evaluation during condensation: every `every` steps, score the current synthetic set with
the protocol and log the accuracy curves (percent, `eval/<method>/<model>`) to the logger."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L

from dmcondense.evaluation.protocol import Protocol
from dmcondense.evaluation.score import score


class PeriodicEvaluation(L.Callback):
    def __init__(
        self,
        every: int,
        architectures: Mapping[str, Mapping],
        num_models: int,
        protocol: Protocol | Mapping[str, Protocol],
        seed: int,
        backend: str = "auto",
    ) -> None:
        self.every, self.architectures, self.num_models = every, dict(architectures), num_models
        self.protocol, self.seed, self.backend = protocol, seed, backend
        self.test = None
        self.history: list[dict] = []

    def evaluate(self, trainer: L.Trainer, module) -> dict[str, float]:
        if self.test is None:
            self.test = trainer.datamodule.load("test")
        scores = score(
            {module.name: [module.decoded()]}, self.architectures, self.protocol, self.test,
            self.seed, num_models=self.num_models, normaliser=module.normaliser,
            backend=self.backend, device=module.device,
        )[module.name]  # fmt: skip
        metrics = {}
        for name, acc in scores.items():
            # percent, under the same names as the final evaluation, so the curves line up
            metrics[f"eval/{module.name}/{name}"] = 100 * float(acc.mean())
            metrics[f"eval/{module.name}/{name}_std"] = 100 * float(acc.std(unbiased=False))
        self.history.append({"step": trainer.global_step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        return metrics

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and trainer.is_global_zero:
            self.evaluate(trainer, module)
