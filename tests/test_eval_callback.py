"""Evaluation during condensation logs accuracy curves to the logger at the asked steps."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from dmcondense.augment import DSA
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.normalise import Normaliser
from dmcondense.evaluation.plan import EvaluationPlan
from dmcondense.evaluation.protocol import Protocol
from dmcondense.evaluation.score import score
from dmcondense.glue.periodic_evaluation import PeriodicEvaluation
from dmcondense.methods.dm import DistributionMatching
from dmcondense.models.registry import build_model


def test_periodic_evaluation_logs_the_scores_of_the_set_at_every_nth_step(tmp_path) -> None:
    dm = ClassBatchDataModule("mnist_sample", "", 10, batch_real=4, iterations=4, seed=0)
    dm.setup()
    init = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    normaliser = Normaliser([0.1307], [0.3081])
    module = DistributionMatching(build_model("convnet", 1, 10, 28, width=8), DSA(), init, 10,
                                  normaliser)  # fmt: skip
    architectures = {"convnet": {"width": 8}, "mlp": {}}
    protocol = Protocol(epochs=2)
    plan = EvaluationPlan("dsa", architectures, dict.fromkeys(architectures, protocol),
                          num_models=2, backend="auto", seed=0)  # fmt: skip
    callback = PeriodicEvaluation(every=2, plan=plan)
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = L.Trainer(
        accelerator="cpu", max_steps=4, logger=logger, callbacks=[callback],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)

    assert [h["step"] for h in callback.history] == [2, 4]
    # The last curve point is the final set scored by the one scoring service, same seed.
    final = score({"dm": [module.decoded()]}, architectures, protocol, dm.load("test"), 0,
                  num_models=2, normaliser=normaliser)["dm"]  # fmt: skip
    for name, accuracies in final.items():
        assert callback.history[-1][f"eval/dm/{name}"] == pytest.approx(100 * accuracies.mean())
        std = 100 * accuracies.std(unbiased=False)
        assert callback.history[-1][f"eval/dm/{name}_std"] == pytest.approx(std)
    # The set moved between the two evaluations, and so did at least one score.
    first, last = callback.history
    assert any(first[k] != last[k] for k in first if k != "step")
    logger.save()
    with open(tmp_path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/dm/convnet")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert float(rows[-1]["eval/dm/convnet"]) == pytest.approx(last["eval/dm/convnet"])
