"""DD-Ranking's LRS and ARS (evaluation/robust.py) against hand computations."""

from __future__ import annotations

import pytest

from dmcondense.evaluation.robust import (
    augmentation_robust_score,
    label_robust_score,
    normalise_score,
)


def test_normalise_maps_minus_one_zero_one():
    assert normalise_score(-1.0) == pytest.approx(0.0, abs=1e-12)
    assert normalise_score(1.0) == pytest.approx(1.0)
    # (1 - e^-1) / (e - e^-1), worked out by hand.
    assert normalise_score(0.0) == pytest.approx(0.26894142137, abs=1e-10)


def test_label_robust_score_by_hand():
    # whole data 84 %, synthetic hard 50 %, synthetic 55 %, random subset 30 %:
    # HLR = 0.34, IOR = 0.25, alpha = 0.125 - 0.17 = -0.045,
    # LRS = (e^-0.045 - e^-1) / (e - e^-1) = 0.58812 / 2.35040 = 0.25022
    score = label_robust_score(whole_hard=0.84, synthetic_hard=0.50, synthetic=0.55,
                               random_subset=0.30)  # fmt: skip
    assert score.hard_label_recovery == pytest.approx(0.34)
    assert score.improvement_over_random == pytest.approx(0.25)
    assert score.alpha == pytest.approx(-0.045)
    assert score.lrs == pytest.approx(0.25022015117, abs=1e-9)


def test_augmentation_robust_score_by_hand():
    # with augmentation 60 % vs 45 %, without 40 % vs 35 %: beta = 0.075 + 0.025 = 0.1,
    # ARS = (e^0.1 - e^-1) / (e - e^-1) = 0.73729 / 2.35040 = 0.31369
    score = augmentation_robust_score(
        synthetic_with_aug=0.60,
        random_with_aug=0.45,
        synthetic_without_aug=0.40,
        random_without_aug=0.35,
    )
    assert score.with_augmentation == pytest.approx(0.15)
    assert score.without_augmentation == pytest.approx(0.05)
    assert score.beta == pytest.approx(0.1)
    assert score.ars == pytest.approx(0.31368734175, abs=1e-9)


def test_percent_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        label_robust_score(84.0, 50.0, 55.0, 30.0)


def test_matches_ddranking_arithmetic(tmp_path, monkeypatch):
    """ddranking's LabelRobustScoreHard.compute_metrics, with its training stubbed out to return
    fixed accuracies (in percent, its unit), gives our HLR and IOR x 100. Its LRS is the same
    formula applied to percent, so we compare against normalise_score of the percent alpha."""
    hard_label = pytest.importorskip(
        "ddranking.metrics.hard_label",
        reason="ddranking is not importable here (its install needs timm and kornia and "
        "downgrades numpy in the shared venv)",
    )
    accuracies = {"syn": 50.0, "real": 84.0, "random": 30.0}
    scorer = object.__new__(hard_label.LabelRobustScoreHard)
    scorer.ipc, scorer.num_classes, scorer.num_eval = 1, 2, 1
    scorer.eval_full_data, scorer.use_dist, scorer.rank = True, False, 0
    scorer.save_path = str(tmp_path / "results.csv")

    def fake_accuracy(image_tensor, image_path, hard_labels, lr, mode, hyper_param_search=False):
        if mode == "real":
            return accuracies["real"], 0.01
        return (accuracies["random"] if image_tensor == "random" else accuracies["syn"]), 0.01

    scorer._compute_hard_label_metrics_helper = fake_accuracy
    scorer._get_random_data_helper = lambda eval_iter: (None, "random", None)
    # ddranking 0.2.0 appends each LRS twice, so its results table has ragged columns.
    monkeypatch.setattr(hard_label, "save_results", lambda results, path: None)
    result = scorer.compute_metrics(image_tensor="syn", hard_labels=None, syn_lr=0.01)

    ours = label_robust_score(0.84, 0.50, 0.50, 0.30)
    assert result["hard_label_recovery_mean"] == pytest.approx(100 * ours.hard_label_recovery)
    assert result["improvement_over_random_mean"] == pytest.approx(
        100 * ours.improvement_over_random
    )
    assert result["label_robust_score_mean"] == pytest.approx(normalise_score(100 * ours.alpha))
