"""Architecture search on a condensed set (python -m dmcondense.nas): the correlations, the space,
resume, the ground-truth cache and bad input. The trainer is replaced by a counting fake that
returns a fixed accuracy per candidate and set, so these tests count trainings, not time."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from helpers.inprocess import nas
from hydra import compose, initialize_config_dir

from dmcondense.cli import CONF_DIR
from dmcondense.errors import ConfigError
from dmcondense.evaluation.nas import (
    enumerate_space,
    rank_correlations,
    sample_space,
    selection,
    too_deep,
)
from dmcondense.io import save_synthetic
from dmcondense.jobs import nas as nas_job
from dmcondense.rng import generator

# 2 x 2 = 4 candidates of a tiny space.
TINY = ["space.depth=[1,2]", "space.width=[4]", "space.activation=[relu]",
        "space.norm=[none,instancenorm]", "space.pooling=[avgpool]", "space.sample=all",
        "proxy.epochs=1", "ground_truth.epochs=1", "proxies=[condensed,random]",
        "bootstrap=100"]  # fmt: skip


# --- the library: correlations, space, selection ----------------------------------------------


def test_spearman_and_kendall_equal_a_hand_computation() -> None:
    proxy = [1.0, 2.0, 3.0, 4.0, 5.0]
    truth = [2.0, 1.0, 4.0, 3.0, 5.0]
    # Ranks differ by d = (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * (25 - 1)) = 0.8.
    # Of the 10 pairs, (1, 2) and (3, 4) are discordant: tau = (8 - 2) / 10 = 0.6.
    found = rank_correlations(proxy, truth, seed=0, resamples=200)
    assert found["spearman"]["value"] == pytest.approx(0.8)
    assert found["kendall"]["value"] == pytest.approx(0.6)
    for stat in found.values():
        assert stat["low"] <= stat["value"] <= stat["high"]
    assert rank_correlations(proxy, truth, seed=0, resamples=200) == found  # seeded
    reversed_truth = list(reversed(proxy))
    assert rank_correlations(proxy, reversed_truth, seed=0)["kendall"]["value"] == -1.0


def test_a_constant_proxy_has_no_correlation() -> None:
    found = rank_correlations([50.0] * 4, [1.0, 2.0, 3.0, 4.0], seed=0, resamples=50)
    assert found["spearman"] == {"value": None, "low": None, "high": None}


def test_the_space_enumerates_exactly_the_configured_product() -> None:
    knobs = ([1, 2], [8, 16, 32], ["relu", "sigmoid"], ["none", "groupnorm"], ["avgpool"])
    space = enumerate_space(*knobs)
    assert len(space) == 2 * 3 * 2 * 2 * 1
    assert [(c.depth, c.width, c.activation, c.norm, c.pooling) for c in space] == list(
        itertools.product(*knobs)
    )
    assert len({c.name for c in space}) == len(space)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        s = compose("nas").space
    paper = enumerate_space(s.depth, s.width, s.activation, s.norm, s.pooling)
    assert len(paper) == 720


def test_sampling_is_seeded() -> None:
    space = enumerate_space([1, 2, 3], [8, 16], ["relu", "sigmoid"], ["none"], ["avgpool", "none"])
    first = sample_space(space, 5, generator(0, "nas-sample"))
    assert len(set(first)) == 5 and set(first) <= set(space)
    assert sample_space(space, 5, generator(0, "nas-sample")) == first
    assert sample_space(space, 5, generator(1, "nas-sample")) != first
    assert sample_space(space, None, generator(0, "nas-sample")) == space


def test_too_deep_names_the_candidates_whose_map_vanishes() -> None:
    space = enumerate_space([5, 6], [8], ["relu"], ["none"], ["avgpool", "none"])
    # 28x28 is padded to 32: five 2x2 poolings leave 1x1, a sixth nothing; without pooling the
    # map keeps its size at any depth.
    assert [c.name for c in too_deep(space, 28)] == ["d6_w8_relu_none_avgpool"]


def test_selection_picks_the_proxys_best_and_compares_it_with_the_truly_best() -> None:
    chosen = selection(["a", "b", "c"], [60.0, 70.0, 65.0], [90.0, 85.0, 95.0])
    assert chosen["chosen"] == "b" and chosen["best"] == "c"
    assert chosen["gap"] == 10.0 and chosen["chosen_rank_by_whole"] == 3


# --- the job, with a counting fake trainer ----------------------------------------------------


class CountingTrainer:
    """Stands in for train_networks: records (candidate, training-set size) of every call and
    returns an accuracy fixed by the candidate and the set; raises after `fail_after` calls."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_after = fail_after

    def __call__(self, model_name, images, labels, test_images, test_labels, *, num_models,
                 model_kwargs, **_) -> torch.Tensor:  # fmt: skip
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt("killed")
        k = model_kwargs
        self.calls.append((f"d{k['depth']}_{k['norm']}", images.shape[0]))
        accuracy = 0.5 + 0.1 * k["depth"] + (0.05 if k["norm"] == "none" else 0.0)
        accuracy += 0.001 * (images.shape[0] % 7)  # differs between the sets
        return torch.full((num_models,), accuracy, dtype=torch.float64)

    def whole(self, train_size: int = 4000) -> int:
        return sum(1 for _, n in self.calls if n == train_size)


def condensed_file(folder: Path, channels: int = 1, size: int = 28, classes: int = 10) -> Path:
    """A condensed set of the MNIST sample's shape (2 images a class), without condensing."""
    g = generator(0, "test-condensed")
    path = folder / "synthetic.pt"
    save_synthetic(path, {
        "images": torch.randn(classes * 2, channels, size, size, generator=g),
        "labels": torch.arange(classes).repeat_interleave(2), "ipc": 2, "factor": 1,
        "class_names": [str(c) for c in range(classes)], "mean": [0.1307] * channels,
        "std": [0.3081] * channels, "method": "dm", "step": 0, "init_indices": None,
        "config": {"dataset": {"name": "mnist_sample"}},
    })  # fmt: skip
    return path


def search(run_dir: Path, condensed: Path, cache: Path, *overrides: str) -> dict:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "nas",
            overrides=[f"condensed={condensed}", f"ground_truth.cache={cache}", *TINY, *overrides],
        )
    return nas_job.run_search(cfg, run_dir)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> CountingTrainer:
    trainer = CountingTrainer()
    monkeypatch.setattr(nas_job, "train_networks", trainer)
    return trainer


def test_the_search_writes_its_report_and_trains_every_candidate_on_every_set(
    tmp_path: Path, fake: CountingTrainer
) -> None:
    report = search(tmp_path / "run", condensed_file(tmp_path), tmp_path / "cache")
    assert len(fake.calls) == 4 * 3  # 4 candidates x (condensed, random, whole)
    assert sorted(n for _, n in fake.calls) == [20] * 4 + [20] * 4 + [4000] * 4
    for name in ("nas.json", "nas.csv", "nas.png"):
        assert (tmp_path / "run" / name).exists()
    written = json.loads((tmp_path / "run" / "nas.json").read_text())
    assert written["candidates"] == report["candidates"] and len(written["rows"]) == 4
    # The fake ranks the candidates the same on every set: perfect correlations.
    assert written["correlations"]["condensed"]["spearman"]["value"] == 1.0
    assert written["selection"]["condensed"]["gap"] == 0.0


def test_a_killed_search_resumes_without_retraining_finished_candidates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    condensed, cache = condensed_file(tmp_path), tmp_path / "cache"
    killed = CountingTrainer(fail_after=5)
    monkeypatch.setattr(nas_job, "train_networks", killed)
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "run", condensed, cache)
    assert len(killed.calls) == 5
    assert not (tmp_path / "run" / "nas.json").exists()
    resumed = CountingTrainer()
    monkeypatch.setattr(nas_job, "train_networks", resumed)
    report = search(tmp_path / "run", condensed, cache)
    assert len(resumed.calls) == 12 - 5  # only what the killed run had not finished
    assert set(resumed.calls).isdisjoint(killed.calls[:2])  # its first candidate: not again
    uninterrupted = CountingTrainer()
    monkeypatch.setattr(nas_job, "train_networks", uninterrupted)
    fresh = search(tmp_path / "fresh", condensed, tmp_path / "cache2")

    def accuracies(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if not k.endswith("_seconds")} for row in rows]

    assert accuracies(report["rows"]) == accuracies(fresh["rows"])
    assert len(uninterrupted.calls) == 12


def test_the_ground_truth_comes_from_the_cache_on_a_second_run(
    tmp_path: Path, fake: CountingTrainer
) -> None:
    cache = tmp_path / "cache"
    search(tmp_path / "first", condensed_file(tmp_path / "a"), cache)
    assert fake.whole() == 4
    fake.calls.clear()
    second = condensed_file(tmp_path / "b")  # a second condensed set of the same data set
    report = search(tmp_path / "second", second, cache)
    assert fake.whole() == 0 and len(fake.calls) == 4 * 2  # proxies only
    assert len(report["rows"]) == 4
    fake.calls.clear()
    search(tmp_path / "third", second, cache, "ground_truth.epochs=2")  # another budget:
    assert fake.whole() == 4  # another folder, trained afresh


def test_a_cache_made_with_another_budget_is_refused_or_retrained(
    tmp_path: Path, fake: CountingTrainer
) -> None:
    condensed, cache = condensed_file(tmp_path), tmp_path / "cache"
    search(tmp_path / "first", condensed, cache)
    fake.calls.clear()
    with pytest.raises(ConfigError, match=r"another budget \(protocol .*ground_truth.refresh"):
        search(tmp_path / "second", condensed, cache, "eval.lr=0.02")
    assert fake.calls == [] and not (tmp_path / "second").exists()
    search(tmp_path / "second", condensed, cache, "eval.lr=0.02", "ground_truth.refresh=true")
    assert fake.whole() == 4


def test_a_candidate_too_deep_for_the_images_is_refused_up_front(
    tmp_path: Path, fake: CountingTrainer
) -> None:
    with pytest.raises(
        ConfigError, match="candidate d6_w4_relu_none_avgpool is too deep for 28x28"
    ):
        search(tmp_path / "run", condensed_file(tmp_path), tmp_path / "cache",
               "space.depth=[1,6]")  # fmt: skip
    assert fake.calls == [] and not (tmp_path / "run").exists()
    assert not (tmp_path / "cache").exists()


def test_a_groupnorm_candidate_whose_width_the_groups_do_not_divide_is_refused_up_front(
    tmp_path: Path, fake: CountingTrainer
) -> None:
    with pytest.raises(ConfigError, match="candidate d1_w6_relu_groupnorm_avgpool: groupnorm"):
        search(tmp_path / "run", condensed_file(tmp_path), tmp_path / "cache", "space.depth=[1]",
               "space.width=[6]", "space.norm=[groupnorm]")  # fmt: skip
    assert fake.calls == [] and not (tmp_path / "run").exists()


def test_a_run_folder_made_with_other_proxy_settings_is_refused(
    tmp_path: Path, fake: CountingTrainer
) -> None:
    condensed, cache = condensed_file(tmp_path), tmp_path / "cache"
    search(tmp_path / "run", condensed, cache)
    fake.calls.clear()
    with pytest.raises(ConfigError, match=r"holds a search with other settings \(protocol"):
        search(tmp_path / "run", condensed, cache, "proxy.epochs=2")
    assert fake.calls == []


@pytest.mark.parametrize(
    ("shape", "fact"), [({"channels": 3}, "channels 3 there, 1 here"),
                        ({"size": 32}, "image size 32 there, 28 here"),
                        ({"classes": 5}, "classes 5 there, 10 here")],
)  # fmt: skip
def test_a_condensed_set_of_another_data_set_is_refused(
    tmp_path: Path, fake: CountingTrainer, shape: dict, fact: str
) -> None:
    with pytest.raises(ConfigError, match=f"does not match mnist_sample: {fact}"):
        search(tmp_path / "run", condensed_file(tmp_path, **shape), tmp_path / "cache")
    assert fake.calls == [] and not (tmp_path / "run").exists()


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = nas(f"hydra.run.dir={tmp_path / 'run'}", "space.sample=0",
                 f"condensed={tmp_path}")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: space.sample must be 'all' or a count from 1 to the space's 720 candidates, got 0"
    ]
