"""Evaluation during condensation: every `every` steps, score the current synthetic set with
the run's evaluation plan and log the accuracy curves (percent, `eval/<method>/<model>`).

Under DDP rank zero scores while the other ranks wait for it. They wait in a barrier of a
process group of their own with a long timeout (`WAIT`), not in their next step's collective,
whose timeout (Lightning's 30 minutes; NCCL's watchdog) a long evaluation would pass.
"""

from __future__ import annotations

from datetime import timedelta

import lightning as L
import torch.distributed as dist

from dmcondense.evaluation.plan import EvaluationPlan

WAIT = timedelta(days=7)  # how long the other ranks wait for rank zero's scoring


class PeriodicEvaluation(L.Callback):
    def __init__(self, every: int, plan: EvaluationPlan) -> None:
        self.every, self.plan = every, plan
        self.test = None
        self.history: list[dict] = []
        self.waiting_room = None  # the process group the ranks wait in (several ranks only)

    def setup(self, trainer: L.Trainer, module, stage: str) -> None:
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # Every rank runs setup, so every rank makes the group (a collective call). Gloo:
            # a wait on the host, whatever the training backend.
            self.waiting_room = dist.new_group(backend="gloo", timeout=WAIT)

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
        if not (self.every and step % self.every == 0):
            return
        if trainer.is_global_zero:
            self.evaluate(trainer, module)
        if self.waiting_room is not None:
            dist.barrier(group=self.waiting_room)
