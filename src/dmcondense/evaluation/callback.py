"""Evaluation during condensation: every `every` steps, score the current synthetic set with
the protocol and log the accuracy curves (percent, `eval/dm/<model>`) to the active logger."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L

from dmcondense.evaluation.protocol import Protocol, train_networks


class PeriodicEvaluation(L.Callback):
    def __init__(
        self,
        every: int,
        models: Sequence[str],
        num_models: int,
        protocol: Protocol,
        seed: int,
        model_kwargs_for: Callable[[str], dict],
    ) -> None:
        self.every, self.models, self.num_models = every, list(models), num_models
        self.protocol, self.seed, self.model_kwargs_for = protocol, seed, model_kwargs_for
        self.test = None
        self.history: list[dict] = []

    def evaluate(self, trainer: L.Trainer, module) -> dict[str, float]:
        if self.test is None:
            self.test = trainer.datamodule.load("test")
        images, labels = module.synthetic.detach(), module.labels
        metrics = {}
        for name in self.models:
            acc = train_networks(
                name, images, labels, self.test.images, self.test.labels,
                num_models=self.num_models, protocol=self.protocol, seed=self.seed,
                mean=module.mean.flatten().tolist(), std=module.std.flatten().tolist(),
                model_kwargs=self.model_kwargs_for(name), num_classes=module.num_classes,
                device=module.device,
            )  # fmt: skip
            # percent, under the same names as the final evaluation, so the curves line up
            metrics[f"eval/dm/{name}"] = 100 * float(acc.mean())
            metrics[f"eval/dm/{name}_std"] = 100 * float(acc.std(unbiased=False))
        self.history.append({"step": trainer.global_step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        return metrics

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step % self.every == 0 and trainer.is_global_zero:
            self.evaluate(trainer, module)
