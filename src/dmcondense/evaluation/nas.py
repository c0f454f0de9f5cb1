"""Architecture search on a proxy set: the search space, its sampling, and how well a proxy's
ranking of the candidates matches the ranking by whole-data accuracy.

Plain arguments only (lists, tensors, numbers); the nas job reads the config and trains.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats

from dmcondense.models.convnet import feature_side


@dataclass(frozen=True)
class Candidate:
    """One ConvNet of the space; its fields are the ConvNet's constructor knobs."""

    depth: int
    width: int
    activation: str
    norm: str
    pooling: str

    @property
    def name(self) -> str:
        """A stable, readable key: file names of the cache and rows of nas.csv."""
        return f"d{self.depth}_w{self.width}_{self.activation}_{self.norm}_{self.pooling}"

    def knobs(self) -> dict:
        return asdict(self)


def enumerate_space(
    depths: Sequence[int],
    widths: Sequence[int],
    activations: Sequence[str],
    norms: Sequence[str],
    poolings: Sequence[str],
) -> list[Candidate]:
    """Every combination of the knobs, in a fixed order (depth varies slowest)."""
    return [
        Candidate(int(d), int(w), str(a), str(n), str(p))
        for d, w, a, n, p in itertools.product(depths, widths, activations, norms, poolings)
    ]


def sample_space(
    candidates: Sequence[Candidate], count: int | None, generator: torch.Generator
) -> list[Candidate]:
    """`count` distinct candidates drawn with `generator`, kept in the space's order; all of them
    when `count` is None."""
    if count is None:
        return list(candidates)
    if not 1 <= count <= len(candidates):
        raise ValueError(f"cannot sample {count} of {len(candidates)} candidates")
    chosen = torch.randperm(len(candidates), generator=generator)[:count]
    return [candidates[i] for i in sorted(chosen.tolist())]


def too_deep(candidates: Sequence[Candidate], image_size: int) -> list[Candidate]:
    """The candidates whose feature map vanishes on `image_size` images."""
    return [c for c in candidates if feature_side(image_size, c.depth, c.pooling) < 1]


def _spearman(proxy: np.ndarray, truth: np.ndarray) -> float:
    return float(stats.spearmanr(proxy, truth).statistic)


def _kendall(proxy: np.ndarray, truth: np.ndarray) -> float:
    return float(stats.kendalltau(proxy, truth).statistic)


CORRELATIONS = {"spearman": _spearman, "kendall": _kendall}


def _finite_or_none(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def rank_correlations(
    proxy: Sequence[float],
    truth: Sequence[float],
    *,
    seed: int,
    resamples: int = 2000,
    confidence: float = 0.95,
) -> dict[str, dict]:
    """Spearman's rho and Kendall's tau-b of proxy against whole-data accuracy, each with a
    percentile bootstrap interval over candidates (pairs resampled together, numpy generator
    seeded by `seed`). {name: {value, low, high}}; None where undefined (a constant column)."""
    x, y = np.asarray(proxy, dtype=float), np.asarray(truth, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"proxy and truth must be two equal-length lists, got {x.shape}, {y.shape}"
        )
    found = {}
    with warnings.catch_warnings():
        # A constant column (or a resample of one) has no rank correlation: nan, said as None.
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        for name, statistic in CORRELATIONS.items():
            found[name] = _with_interval(statistic, x, y, seed, resamples, confidence)
    return found


def _with_interval(
    statistic, x: np.ndarray, y: np.ndarray, seed: int, resamples: int, confidence: float
) -> dict:
    """{value, low, high} of one correlation; the interval needs three candidates or more."""
    value = statistic(x, y) if len(x) >= 2 else math.nan
    low = high = math.nan
    if len(x) >= 3 and not math.isnan(value):
        with np.errstate(invalid="ignore", divide="ignore"):
            result = stats.bootstrap(
                (x, y), statistic, paired=True, vectorized=False, n_resamples=resamples,
                confidence_level=confidence, method="percentile",
                random_state=np.random.default_rng(seed),
            )  # fmt: skip
        # Percentiles of the finite resamples: a resample that repeats one candidate has no
        # correlation (nan), which would otherwise void the whole interval.
        distribution = result.bootstrap_distribution
        if np.isfinite(distribution).any():
            tail = 100 * (1 - confidence) / 2
            low, high = np.nanpercentile(distribution, [tail, 100 - tail])
    return {"value": _finite_or_none(value), "low": _finite_or_none(low),
            "high": _finite_or_none(high)}  # fmt: skip


def selection(names: Sequence[str], proxy: Sequence[float], truth: Sequence[float]) -> dict:
    """The candidate the proxy picks (highest proxy accuracy, first in order on a tie), its
    whole-data accuracy, the best whole-data candidate's, and the chosen one's rank by it."""
    chosen = max(range(len(names)), key=lambda i: (proxy[i], -i))
    best = max(range(len(names)), key=lambda i: (truth[i], -i))
    rank = 1 + sum(1 for t in truth if t > truth[chosen])
    return {
        "chosen": names[chosen],
        "chosen_whole_accuracy": truth[chosen],
        "best": names[best],
        "best_whole_accuracy": truth[best],
        "gap": round(truth[best] - truth[chosen], 2),
        "chosen_rank_by_whole": rank,
    }
