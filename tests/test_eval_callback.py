"""Evaluation during condensation logs accuracy curves to the logger at the asked steps."""

from __future__ import annotations

import csv

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from dmcondense.augment import DSA
from dmcondense.condense.module import DistributionMatching
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.evaluation.callback import PeriodicEvaluation
from dmcondense.evaluation.protocol import Protocol
from dmcondense.models.registry import build_model


def test_periodic_evaluation_logs_accuracy_every_n_steps(tmp_path) -> None:
    dm = ClassBatchDataModule("mnist_sample", "", 10, batch_real=4, iterations=4, seed=0)
    dm.setup()
    init = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    module = DistributionMatching(
        build_model("convnet", 1, 10, 28, width=8), DSA(), init, 10, [0.1307], [0.3081]
    )
    callback = PeriodicEvaluation(
        every=2, models=["convnet", "mlp"], num_models=2, protocol=Protocol(epochs=1), seed=0,
        model_kwargs_for=lambda name: {"width": 8} if name == "convnet" else {},
    )  # fmt: skip
    logger = CSVLogger(tmp_path, name="", version="")
    trainer = L.Trainer(
        accelerator="cpu", max_steps=4, logger=logger, callbacks=[callback],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)

    assert [h["step"] for h in callback.history] == [2, 4]
    for h in callback.history:
        for name in ("convnet", "mlp"):
            assert 0.0 <= h[f"eval/dm/{name}"] <= 100.0
    logger.save()
    with open(tmp_path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("eval/dm/convnet")]
    assert [int(r["step"]) for r in rows] == [2, 4]
