"""Evaluation during condensation: every `every` steps, score the current synthetic set with
the run's evaluation plan and log the accuracy curves (percent, `eval/<method>/<model>`)."""

from __future__ import annotations

import lightning as L

from dmcondense.evaluation.plan import EvaluationPlan


class PeriodicEvaluation(L.Callback):
    def __init__(self, every: int, plan: EvaluationPlan) -> None:
        self.every, self.plan = every, plan
        self.test = None
        self.history: list[dict] = []

    def evaluate(self, trainer: L.Trainer, module) -> dict[str, float]:
        if self.test is None:
            self.test = trainer.datamodule.load("test")
        plan = self.plan
        if plan.protocol_name == "mtt" and module.scoring_lr() is not None:
            plan = plan.variant(lr=module.scoring_lr())  # the step size learned so far
        scores = plan.scores(
            {module.name: [module.decoded()]}, self.test, module.normaliser, module.device
        )[module.name]
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
