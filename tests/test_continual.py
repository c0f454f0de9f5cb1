"""Continual learning with condensed memories (python -m dmcondense.continual): the class order,
what each step's condensation sees, how the memory grows, resume, bad input, and DM's memory
against random real images on the MNIST sample."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.fixtures import write_imagefolder
from helpers.inprocess import continual as continual_entry
from hydra import compose, initialize_config_dir

from dmcondense.cli import CONF_DIR
from dmcondense.continual import memory_as_list, method_configs
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.imageset import ImageSet, keep_classes
from dmcondense.data.sources import load_split
from dmcondense.data.streaming import StreamingClassDataModule
from dmcondense.errors import ConfigError
from dmcondense.io import load_synthetic
from dmcondense.jobs.checks import (
    SELECTIONS,
    check_continual_config,
    condensation_methods,
    memory_methods,
)
from dmcondense.jobs.continual import loop as continual

# A few seconds a step: 3 DM iterations (a checkpoint after the second), 1 network x 4 epochs.
TINY = ["ipc=2", "iterations=3", "save_every=2", "batch_real=8", "model.width=8",
        "eval.epochs=4", "eval.num_models=1", "memory=[dm,random,herding]"]  # fmt: skip
STEPS, PER_STEP, IPC = 5, 2, 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests train a few hundred tiny networks. On 2 cores shared with other test runs,
    two threads spinning against another process's threads made them many times slower than one
    (docs/howto/continual.md); one thread keeps them near their idle time either way."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def composed(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("continual", overrides=list(overrides))


def configs(*overrides: str):
    """The continual config and each condensing memory method's config, as the entry composes
    them."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("continual", overrides=list(overrides))
        condensing = [m for m in memory_methods(cfg) if m not in SELECTIONS]
        return cfg, method_configs(list(overrides), condensing)


def run(run_dir: Path, *overrides: str) -> dict:
    cfg, method_cfgs = configs(*overrides)
    return continual.run_continual(cfg, method_cfgs, run_dir)


class Recorder:
    """Records, for every DataModule of the run: the classes it was built for, how many training
    images it holds (and the bytes behind them), and the whole-split indices of each batch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held: list[tuple[tuple[int, ...], int, int]] = []
        self.draws: list[tuple[tuple[int, ...], int, torch.Tensor]] = []
        setup, transfer = ClassBatchDataModule.setup, ClassBatchDataModule.on_after_batch_transfer

        def recording_setup(dm, stage=None):
            loads = dm.train_set is None  # the trainer calls setup again: nothing is loaded
            setup(dm, stage)
            if loads and dm.classes is not None:
                images = dm.train_set.images
                self.held.append(
                    (tuple(dm.classes), len(dm.train_set), images.untyped_storage().nbytes())
                )

        def recording_transfer(dm, batch, index):
            drawn = continual.source_of(dm, batch["indices"][0])  # one round
            self.draws.append((tuple(dm.classes or ()), int(batch["step"]), drawn.clone()))
            return transfer(dm, batch, index)

        monkeypatch.setattr(ClassBatchDataModule, "setup", recording_setup)
        monkeypatch.setattr(ClassBatchDataModule, "on_after_batch_transfer", recording_transfer)


@pytest.fixture(scope="module")
def whole_split_labels() -> torch.Tensor:
    return load_split("mnist_sample", None, "train").labels


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict, Recorder]:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorder = Recorder(monkeypatch)
        results = run(run_dir, *TINY)
    return run_dir, results, recorder


# --- the class order ------------------------------------------------------------------------


def test_the_class_order_is_a_fixed_seed_permutation_written_into_the_results(
    uninterrupted,
) -> None:
    order = continual.class_order(10, seed=0)
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert continual.class_order(10, seed=0) == order  # the same on every call
    assert continual.class_order(10, seed=1) != order
    assert continual.class_order(100, seed=0) == continual.class_order(100, seed=0)
    run_dir, results, _ = uninterrupted
    assert results["class_order"] == order
    assert results["class_order_names"] == [str(c) for c in order]  # the digits' names
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["class_order"] == order
    schedule = continual.Schedule(tuple(order), STEPS)
    assert [e["new_classes"] for e in on_disk["per_step"]] == [
        schedule.new_classes(k) for k in range(1, STEPS + 1)
    ]


# --- what each step's condensation sees ------------------------------------------------------


def test_each_condensation_draws_real_images_of_its_own_classes_only(
    uninterrupted, whole_split_labels: torch.Tensor
) -> None:
    _, results, recorder = uninterrupted
    schedule = continual.Schedule(tuple(results["class_order"]), STEPS)
    steps = [tuple(schedule.new_classes(k)) for k in range(1, STEPS + 1)]
    # Every DM step condensed once, three iterations, one row of indices per class.
    by_step = {classes: [] for classes in steps}
    for classes, iteration, drawn in recorder.draws:
        by_step[classes].append((iteration, drawn))
    for classes in steps:
        assert [iteration for iteration, _ in by_step[classes]] == [0, 1, 2]
        for _, drawn in by_step[classes]:
            assert drawn.shape == (PER_STEP, 8)
            # Row j holds images of the step's j-th class, and of no other class.
            expected = torch.tensor(classes)[:, None].expand_as(drawn)
            assert torch.equal(whole_split_labels[drawn], expected)


def test_a_step_holds_the_training_images_of_its_own_classes_alone(uninterrupted) -> None:
    _, results, recorder = uninterrupted
    schedule = continual.Schedule(tuple(results["class_order"]), STEPS)
    # DM, random and herding each load the step's classes: 3 DataModules a step.
    assert [held[0] for held in recorder.held] == [
        tuple(schedule.new_classes(k)) for k in range(1, STEPS + 1) for _ in range(3)
    ]
    for _, count, nbytes in recorder.held:
        assert count == PER_STEP * 400  # the sample holds 400 training images a class
        assert nbytes == count * 28 * 28  # no copy of the whole split behind the kept images


# --- the memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dm", "random", "herding"])
def test_the_memory_grows_by_ipc_times_the_new_classes_each_step(
    uninterrupted, whole_split_labels: torch.Tensor, method: str
) -> None:
    run_dir, results, _ = uninterrupted
    order = results["class_order"]
    previous = None
    for step in range(1, STEPS + 1):
        dataset, meta = load_synthetic(run_dir / "memory" / method / f"step_{step:02d}")
        images, labels = dataset.tensors
        seen = step * PER_STEP
        assert images.shape == (seen * IPC, 1, 28, 28)
        assert torch.equal(labels, torch.arange(seen).repeat_interleave(IPC))
        assert meta["class_names"] == [str(c) for c in order[:seen]]
        assert meta["continual"]["classes"] == order[:seen] and meta["ipc"] == IPC
        # Each image was drawn from (random, herding) or started at (DM) a real image of its class.
        sources = meta["init_indices"]
        assert torch.equal(whole_split_labels[sources], torch.tensor(order)[labels])
        if previous is not None:  # the old memory is kept as it was, the new classes appended
            assert torch.equal(images[: previous.shape[0]], previous)
        previous = images
        entry = results["per_step"][step - 1]
        assert entry["classes_seen"] == seen
        assert len(entry["results"][method]["convnet"]["accuracies"]) == 1


def test_results_files_hold_every_step_of_every_memory(uninterrupted) -> None:
    run_dir, results, _ = uninterrupted
    rows = (run_dir / "results.csv").read_text().splitlines()
    assert rows[0] == "step,classes_seen,memory,architecture,mean,std,networks"
    assert len(rows) == 1 + STEPS * 3
    step5_dm = next(r for r in rows[1:] if r.startswith("5,10,dm,convnet,"))
    figures = results["per_step"][-1]["results"]["dm"]["convnet"]
    assert step5_dm == f"5,10,dm,convnet,{figures['mean']},{figures['std']},1"
    png = (run_dir / "continual.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert results["average_over_steps"]["dm"]["convnet"] == pytest.approx(
        sum(e["results"]["dm"]["convnet"]["mean"] for e in results["per_step"]) / STEPS, abs=0.01
    )


def test_score_steps_last_scores_the_last_step_alone_and_keeps_every_memory(
    uninterrupted, tmp_path: Path
) -> None:
    whole_dir, whole, _ = uninterrupted
    results = run(tmp_path, *TINY, "memory=[dm,random]", "score_steps=last")
    assert results["score_steps"] == "last"
    assert [sorted(e["results"]) for e in results["per_step"]] == [["dm", "random"]] * STEPS
    scored = [any(e["results"][m] for m in ("dm", "random")) for e in results["per_step"]]
    assert scored == [False] * (STEPS - 1) + [True]
    for method in ("dm", "random"):
        # The last step's figures are those of a run that scored every step.
        last, whole_last = results["per_step"][-1], whole["per_step"][-1]
        assert last["results"][method] == whole_last["results"][method]
        for step in range(1, STEPS + 1):
            unit = Path("memory") / method / f"step_{step:02d}"
            a = torch.load(whole_dir / unit / "synthetic.pt", weights_only=False)
            b = torch.load(tmp_path / unit / "synthetic.pt", weights_only=False)
            assert torch.equal(a["images"], b["images"]), unit
    rows = (tmp_path / "results.csv").read_text().splitlines()[1:]
    final = [str(STEPS), str(STEPS * PER_STEP)]
    assert sorted(row.split(",")[:3] for row in rows) == [[*final, "dm"], [*final, "random"]]
    averages = results["average_over_steps"]
    assert averages["dm"]["convnet"] == results["per_step"][-1]["results"]["dm"]["convnet"]["mean"]
    with pytest.raises(ConfigError, match=r"^score_steps must be one of all, last, not 'first'$"):
        check_continual_config(composed("score_steps=first"))


# --- resume ----------------------------------------------------------------------------------


class Killed(Exception):
    """Stands for the kill: raised inside step 3's condensation, after its first checkpoint."""


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_a_run_killed_in_step_3_resumes_to_the_uninterrupted_result(
    uninterrupted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole_dir, whole_results, _ = uninterrupted
    run_dir = tmp_path / "killed"
    order = whole_results["class_order"]
    step3 = tuple(continual.Schedule(tuple(order), STEPS).new_classes(3))
    save = L.pytorch.callbacks.ModelCheckpoint.on_train_batch_end

    def kill_in_step_3(self, trainer, module, outputs, batch, batch_idx):
        save(self, trainer, module, outputs, batch, batch_idx)
        if tuple(trainer.datamodule.classes) == step3 and trainer.global_step == 2:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(L.pytorch.callbacks.ModelCheckpoint, "on_train_batch_end", kill_in_step_3)
        with pytest.raises(Killed):
            run(run_dir, *TINY)
    assert (run_dir / "memory" / "dm" / "step_03" / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "memory" / "dm" / "step_03" / "result.json").exists()
    assert json.loads((run_dir / "results.json").read_text())["finished_steps"] == 2

    recorder = Recorder(monkeypatch)
    resumed = run(run_dir, *TINY, "resume=last")
    # Steps 1 and 2 were read back; step 3 went on from its checkpoint (iteration 2 only).
    drawn = [(classes, iteration) for classes, iteration, _ in recorder.draws]
    assert drawn[0] == (step3, 2) and (step3, 0) not in drawn
    assert len(drawn) == 1 + 3 * 2
    assert not (run_dir / "memory" / "dm" / "step_03" / "checkpoints").exists()

    assert without_timings(resumed) == without_timings(whole_results)
    for method in ("dm", "random", "herding"):
        for step in range(1, STEPS + 1):
            unit = Path("memory") / method / f"step_{step:02d}"
            a = torch.load(whole_dir / unit / "synthetic.pt", weights_only=False)
            b = torch.load(run_dir / unit / "synthetic.pt", weights_only=False)
            assert a.keys() == b.keys()
            # Steps 1 and 2 are the killed run's files; the resumed run wrote the others.
            assert a["config"].pop("resume") is None
            assert b["config"].pop("resume") == (None if step <= 2 else "last")
            for key in a:
                same = torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key]
                assert same, (unit, key)
            result_a = json.loads((whole_dir / unit / "result.json").read_text())
            result_b = json.loads((run_dir / unit / "result.json").read_text())
            assert without_timings(result_a) == without_timings(result_b)


def test_a_finished_folder_is_not_overwritten_nor_resumed_with_other_settings(
    uninterrupted,
) -> None:
    run_dir, _, _ = uninterrupted
    with pytest.raises(ConfigError, match=r"already holds a continual run; continue it with "):
        run(run_dir, *TINY)
    with pytest.raises(ConfigError, match=r"it was run with another config\.eval\.epochs;"):
        run(run_dir, *TINY, "resume=last", "eval.epochs=5")
    with pytest.raises(ConfigError, match=r"it was run with another class_order;"):
        run(run_dir, *TINY, "resume=last", "seed=1")


# --- bad input -------------------------------------------------------------------------------


def test_steps_that_do_not_divide_the_classes_get_one_line_naming_the_divisors(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as error:
        check_continual_config(composed("steps=3"))
    assert str(error.value) == (
        "steps=3 does not divide the 10 classes of mnist_sample; choose steps from: 1, 2, 5, 10"
    )
    result = continual_entry("steps=4", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: steps=4 does not divide the 10 classes of mnist_sample; "
        "choose steps from: 1, 2, 5, 10"
    ]
    assert not (tmp_path / "run").exists()  # nor the run folder Hydra made for the job


def test_an_unknown_memory_method_gets_one_line_listing_the_methods(tmp_path: Path) -> None:
    known = ", ".join([*condensation_methods(), "random", "herding", "kcenter"])
    assert "dm" in known and "dsa" in known
    with pytest.raises(ConfigError) as error:
        memory_methods(composed("memory=[dm,herdin]"))
    assert str(error.value) == (
        f"unknown memory method 'herdin' (did you mean 'herding'?); choose from: {known}"
    )
    # The comma form of the command line reaches the config as a list.
    result = continual_entry("memory=dm,nope", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and not (tmp_path / "run").exists()
    assert result.stderr.strip().splitlines() == [
        f"error: unknown memory method 'nope'; choose from: {known}"
    ]


def test_a_comma_list_of_memories_is_one_run_over_them_not_a_sweep() -> None:
    assert memory_as_list(["memory=dm,random,herding", "ipc=2"]) == [
        "memory=[dm,random,herding]",
        "ipc=2",
    ]
    assert memory_as_list(["memory=dm", "memory=[dm,dsa]"]) == ["memory=dm", "memory=[dm,dsa]"]
    cfg, method_cfgs = configs(*memory_as_list(["memory=dm,dsa,random"]))
    assert memory_methods(cfg) == ["dm", "dsa", "random"]
    # Each condensing method gets its own preset, under the same command line.
    assert method_cfgs["dsa"].method._target_.endswith("SiameseAugmentation")
    assert method_cfgs["dsa"].lr_img == 0.1 and method_cfgs["dm"].lr_img == 1.0
    assert method_cfgs["dsa"].ipc == method_cfgs["dm"].ipc == cfg.ipc


@pytest.mark.parametrize("preset", ["mnist_sample", "cifar100_steps5", "cifar100_steps10"])
def test_the_presets_compose_and_pass_the_checks(preset: str) -> None:
    cfg, _ = configs(f"continual_experiment={preset}")
    check_continual_config(cfg)
    steps = {"mnist_sample": 5, "cifar100_steps5": 5, "cifar100_steps10": 10}[preset]
    assert cfg.steps == steps and cfg.dataset.name == preset.split("_steps")[0]
    assert cfg.ipc == (10 if preset == "mnist_sample" else 20)


# --- the class filter of the data -----------------------------------------------------------


def test_keep_classes_keeps_and_relabels_in_the_given_order() -> None:
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 2, 2).clone()
    split = ImageSet(images, torch.tensor([0, 1, 2, 0, 2]), ["a", "b", "c"])
    kept, source = keep_classes(split, [2, 0])
    assert source.tolist() == [0, 2, 3, 4]
    assert kept.labels.tolist() == [1, 0, 1, 0] and kept.class_names == ["c", "a"]
    assert torch.equal(kept.images, images[[0, 2, 3, 4]])
    with pytest.raises(ValueError, match="distinct"):
        keep_classes(split, [1, 1])


def test_streaming_and_in_memory_data_keep_the_same_classes(tmp_path: Path) -> None:
    write_imagefolder(tmp_path, classes=3, per_class=5, size=16)
    common = dict(source="imagefolder", data_dir=str(tmp_path), num_classes=3, batch_real=3,
                  iterations=2, seed=0, source_kwargs={"image_size": 16},
                  classes=[2, 0])  # fmt: skip
    in_memory = ClassBatchDataModule(**common)
    streamed = StreamingClassDataModule(**common, channels=3, image_size=16, num_workers=0)
    for dm in (in_memory, streamed):
        dm.setup()
        # The folder's classes sort as apple, mango, zebra: class 2 is zebra.
        assert dm.num_classes == 2 and dm.train_set.class_names == ["zebra", "apple"]
    a = [in_memory.on_after_batch_transfer(b, 0) for b in in_memory.train_dataloader()]
    b = [streamed.on_after_batch_transfer(x, 0) for x in streamed.train_dataloader()]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["indices"], y["indices"]) and torch.equal(x["images"], y["images"])
    assert torch.equal(in_memory.source_indices, streamed.source_indices)


# --- what the memory is worth ----------------------------------------------------------------


@pytest.mark.slow
def test_dm_memory_beats_random_memory_at_the_last_step_on_the_mnist_sample(
    tmp_path: Path,
) -> None:
    # A quarter of the sample's CPU budget (50 DM iterations a step, batch_real 64, width 32);
    # 2 networks x 50 epochs per memory, at the last step only (the same networks for both
    # memories; what is checked is scored as in a run that scores every step: the test above).
    # The margins at each budget are in docs/contributing.md, Tests.
    results = run(tmp_path, "memory=[dm,random]", "steps=5", "ipc=10", "iterations=50",
                  "eval.num_models=2", "eval.epochs=50", "score_steps=last")  # fmt: skip
    last = results["per_step"][-1]
    assert last["classes_seen"] == 10
    dm, random = (last["results"][m]["convnet"]["accuracies"] for m in ("dm", "random"))
    assert len(dm) == len(random) == 2
    assert min(dm) > max(random), (dm, random)  # every DM network beats every random one
