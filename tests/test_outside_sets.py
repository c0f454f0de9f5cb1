"""Sets made elsewhere (issue 36): safe loading of synthetic.pt, the readers of other tools'
files (`condensed_format=`), `export=tensors`, and exported sets read back.

Each fixture is made here in the exact layout the other tool writes; the tool's save call is
quoted above the helper that makes it, with its source (repository, commit, file, line).
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from helpers.inprocess import Run, evaluate, tiny, train
from helpers.shared_runs import TINY_RUN_EVAL_EPOCHS, TINY_RUN_IPC

from dmcondense.data.spec import DatasetSpec
from dmcondense.errors import ConfigError
from dmcondense.evaluation.protocol import Protocol, epoch_targets
from dmcondense.io import load_synthetic
from dmcondense.sets import ReadSet, fit_set, read_set

TINY_EVAL = ["model.width=8", "eval.epochs=1", "eval.num_models=1"]
OLD = Path(__file__).resolve().parent / "fixtures" / "old_synthetic"
SPEC = DatasetSpec(
    "mnist_sample", 1, 28, 10, tuple(str(c) for c in range(10)), (0.1307,), (0.3081,)
)


class WritesAFile:
    """Unpickling this object opens `path` for writing (creating the file): what a hostile
    synthetic.pt could do, in the smallest form."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_synthetic_pt_whose_pickle_would_run_code_is_refused_and_nothing_runs(tmp_path) -> None:
    marker = tmp_path / "written_by_the_pickle"
    hostile = tmp_path / "synthetic.pt"
    record = {"format": 1, "images": torch.zeros(10, 1, 28, 28), "labels": torch.arange(10),
              "class_names": [str(c) for c in range(10)], "mean": [0.1307], "std": [0.3081],
              "ipc": 1, "config": {"dataset": {"name": "mnist_sample"}},
              "x": WritesAFile(marker)}  # fmt: skip
    torch.save(record, hostile)
    assert not marker.exists()
    result = evaluate(f"condensed={hostile}", *TINY_EVAL, f"hydra.run.dir={tmp_path / 'eval'}")
    assert not marker.exists(), "loading the file ran its pickle"
    assert result.returncode == 2
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith(f"error: {hostile} is refused") and "needs io.open to load" in line
    assert not (tmp_path / "eval" / "results.json").exists()


# --- the formats, each in the layout its tool writes, made from the session's tiny run ---

# The shared tiny run's network and protocol (ConvNet width 8, 2 epochs): scoring its own images
# again under them repeats its accuracies exactly (tests/test_evaluate_cli.py); one network of
# its two (network i draws the same numbers whatever the count) keeps these tests short.
RUN = ["model.width=8", f"eval.epochs={TINY_RUN_EVAL_EPOCHS}", "eval.num_models=1"]


def run_accuracies(run_dir) -> list[float]:
    """The accuracy of the run's first network, as a list (evaluate's form under RUN)."""
    return json.loads((run_dir / "results.json").read_text())["results"]["dm"]["convnet"][
        "accuracies"
    ][:1]


def scored(tmp_path, name: str, *overrides: str) -> tuple[Run, dict | None]:
    """evaluate with `overrides`; returns the run and its results.json (None if it failed)."""
    out = tmp_path / name
    result = evaluate(*overrides, f"hydra.run.dir={out}")
    if result.returncode:
        return result, None
    return result, json.loads((out / "results.json").read_text())


def tiny_images(tiny_run) -> tuple[torch.Tensor, torch.Tensor]:
    """The tiny run's training images (normalised float32, class-major) and labels."""
    dataset, _ = load_synthetic(tiny_run.run_dir)
    return dataset.tensors


def save_like_mtt(folder, images: torch.Tensor, labels: torch.Tensor, it: str = "best"):
    """GeorgeCazenavette/mtt-distillation @ 50dccea, distill.py lines 242-243 (and 238-239 with
    `it` a step), DATM's distill/DATM.py lines 402-403 alike:
        torch.save(image_save.cpu(), os.path.join(save_dir, "images_best.pt".format(it)))
        torch.save(label_syn.cpu(), os.path.join(save_dir, "labels_best.pt".format(it)))
    image_save is image_syn: normalised with the data set's mean and std (their get_dataset's
    transforms.Normalize) unless --zca."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(images.cpu(), folder / f"images_{it}.pt")
    torch.save(labels.cpu(), folder / f"labels_{it}.pt")
    return folder


def test_mtt_tensor_files_score_as_the_run_that_made_the_images(tiny_run, tmp_path) -> None:
    images, labels = tiny_images(tiny_run)
    folder = save_like_mtt(tmp_path / "logged_files", images, labels)
    # The files say nothing of their pixels: refused until condensed_pixels= says.
    result, _ = scored(tmp_path, "unsaid", f"condensed={folder}", *RUN)
    assert result.returncode == 2 and len(result.error_lines) == 1
    assert "does not say how its pixels are scaled" in result.error_lines[0]
    result, summary = scored(tmp_path, "eval", f"condensed={folder}", "condensed_pixels=normalised",
                             *RUN)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["results"]["tensors"]["convnet"]["accuracies"] == run_accuracies(
        tiny_run.run_dir
    )
    assert summary["ipc"] == TINY_RUN_IPC


def test_mtt_dewhitened_images_zca_file_is_read_as_unit_pixels(tiny_run, tmp_path) -> None:
    """distill.py lines 266-271 (@ 50dccea): with --zca their data is [0, 1] pixels
    (transforms.ToTensor() alone), whitened; the file holds the whitening undone:
        image_save = args.zca_trans.inverse_transform(image_save)
        torch.save(image_save.cpu(), os.path.join(save_dir, "images_zca_{}.pt".format(it)))
    and its labels are labels_<it>.pt (line 239)."""
    images, labels = tiny_images(tiny_run)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (SPEC.mean, SPEC.std))
    folder = tmp_path / "logged_files"
    folder.mkdir()
    torch.save((images * std + mean).cpu(), folder / "images_zca_1000.pt")
    torch.save(labels.cpu(), folder / "labels_1000.pt")
    read = read_set(folder / "images_zca_1000.pt")
    assert (read.format, read.pixels) == ("tensors", "unit")
    [(fitted, fitted_labels)] = fit_set(read, SPEC)
    assert torch.allclose(fitted, images, atol=1e-5) and torch.equal(fitted_labels, labels)


def test_datm_soft_labels_stay_soft(tiny_run, tmp_path, monkeypatch) -> None:
    """NUS-HPC-AI-Lab/DATM @ 97ae510, distill/DATM.py lines 402-403 save label_syn, the learned
    soft labels: logits [N, classes] (line 324: copied from a network's logits, then learned);
    their SoftCrossEntropy (lines 255-260) trains on softmax(label_syn)."""
    images, labels = tiny_images(tiny_run)
    logits = torch.nn.functional.one_hot(labels, 10).float() * 0.5  # soft: 0.5 above the rest
    folder = save_like_mtt(tmp_path / "Normal", images, logits)
    read = read_set(folder)
    assert read.experiments[0][1].shape == (images.shape[0], 10)
    assert torch.allclose(read.experiments[0][1], torch.softmax(logits, dim=1))
    # Through the evaluate job to the trainer: the networks' targets are those probabilities.
    seen = []

    def trainer(networks, task):
        seen.append(task)
        return torch.zeros(len(networks), dtype=torch.float64)

    # the module (dmcondense.evaluation re-exports a function named score)
    monkeypatch.setattr(importlib.import_module("dmcondense.evaluation.score"), "train_sequential",
                        trainer)  # fmt: skip
    result, _ = scored(tmp_path, "soft", f"condensed={folder}", "condensed_pixels=normalised",
                       *TINY_EVAL)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    [task] = seen
    assert torch.allclose(task.soft_targets, torch.softmax(logits, dim=1))
    assert torch.equal(task.labels, labels)
    # ... and every epoch trains on them (a teacher's soft labels leave the last epochs hard).
    hard_protocol = Protocol(epochs=10)
    for epoch in (0, 9):
        targets, _ = epoch_targets(task.labels, task.soft_targets, hard_protocol, epoch)
        assert targets is task.soft_targets
    monkeypatch.undo()  # and the networks train on them
    result, summary = scored(tmp_path, "trained", f"condensed={folder}",
                             "condensed_pixels=normalised", *TINY_EVAL)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(summary["results"]["tensors"]["convnet"]["accuracies"]) == 1


def test_whitened_tensor_files_score_under_the_data_sets_zca_as_the_run_did(tmp_path) -> None:
    """images_best.pt of an MTT --zca run holds network inputs, whitened: with
    condensed_pixels=zca and dataset.zca=true (the whitening fitted on the training split, as
    the run's was) they score as the run that made them; without dataset.zca, one line."""
    run_dir = tmp_path / "run"
    made = train(*tiny("ipc=1", "iterations=2", "logger=csv", "dataset.zca=true"),
                 f"hydra.run.dir={run_dir}")  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    stored = torch.load(run_dir / "synthetic.pt", weights_only=True)
    assert stored["pixels"] == "zca"
    folder = save_like_mtt(tmp_path / "logged_files", stored["images"], stored["labels"])
    result, _ = scored(tmp_path, "unwhitened", f"condensed={folder}", "condensed_pixels=zca",
                       *TINY_EVAL)  # fmt: skip
    assert result.returncode == 2 and len(result.error_lines) == 1
    assert "dataset.zca=true" in result.error_lines[0]
    result, summary = scored(tmp_path, "eval", f"condensed={folder}", "condensed_pixels=zca",
                             "dataset.zca=true", *TINY_EVAL)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["results"]["tensors"]["convnet"] == json.loads(
        (run_dir / "results.json").read_text())["results"]["dm"]["convnet"]  # fmt: skip


def test_dc_res_file_scores_each_experiment_and_pools_them(tiny_run, tmp_path) -> None:
    """VICO-UoE/DatasetCondensation @ 53f63a6, main.py lines 224-225 (main_DM.py 203-204 alike),
    wrapped here:
        data_save.append([copy.deepcopy(image_syn.detach().cpu()),
                          copy.deepcopy(label_syn.detach().cpu())])
        torch.save({'data': data_save, 'accs_all_exps': accs_all_exps, },
                   os.path.join(args.save_path, 'res_%s_%s_%s_%dipc.pt'%(args.method,
                                args.dataset, args.model, args.ipc)))
    accs_all_exps: {model: [accuracy, ...]}, NumPy float64s (their utils.py `epoch`:
    acc_avg /= num_exp); image_syn is normalised (their get_dataset's transforms.Normalize)."""
    import numpy as np

    images, labels = tiny_images(tiny_run)
    data_save = [[images.clone(), labels.clone()], [images.flip(0), labels.flip(0)]]
    accs_all_exps = {"ConvNet": [np.float64(0.25), np.float64(0.5)]}
    path = tmp_path / f"res_DM_MNIST_ConvNet_{TINY_RUN_IPC}ipc.pt"
    torch.save({"data": data_save, "accs_all_exps": accs_all_exps}, path)
    result, summary = scored(tmp_path, "eval", f"condensed={path}", *RUN)
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["experiments"] == 2
    pooled = summary["results"]["dm"]["convnet"]["accuracies"]
    assert len(pooled) == 2  # every network of every experiment
    assert pooled[:1] == run_accuracies(tiny_run.run_dir)  # experiment 0


def test_rded_image_folder_with_index_named_classes_scores(tiny_run, tmp_path) -> None:
    """LINs-lab/RDED @ 3f6453d, synthesize/main.py lines 61-69 (`save_images`):
        dir_path = "{}/{:05d}".format(args.syn_data_path, class_id)
        place_to_store = dir_path + "/class{:05d}_id{:05d}.jpg".format(class_id, id)
        image_np = images[id].data.cpu().numpy().transpose((1, 2, 0))
        pil_image = Image.fromarray((image_np * 255).astype(np.uint8))
        pil_image.save(place_to_store)
    (one channel: PIL takes [H, W], so the array's channel axis is dropped here)."""
    import numpy as np
    from PIL import Image

    images, labels = tiny_images(tiny_run)
    unit = SPEC.normaliser.to_unit(images)
    counts: dict[int, int] = {}
    for image, class_id in zip(unit, labels.tolist(), strict=True):
        index = counts[class_id] = counts.get(class_id, -1) + 1
        dir_path = tmp_path / "syn_data" / f"{class_id:05d}"
        dir_path.mkdir(parents=True, exist_ok=True)
        image_np = image.numpy().transpose((1, 2, 0))
        Image.fromarray((image_np[..., 0] * 255).astype(np.uint8)).save(
            dir_path / f"class{class_id:05d}_id{index:05d}.jpg"
        )
    read = read_set(tmp_path / "syn_data", class_names=list(SPEC.class_names))
    assert read.format == "imagefolder" and torch.equal(read.experiments[0][1], labels)
    result, summary = scored(tmp_path, "eval", f"condensed={tmp_path / 'syn_data'}", *TINY_EVAL)
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["ipc"] == TINY_RUN_IPC and summary["experiments"] == 1


def test_export_imagefolder_read_back_is_the_runs_set_in_8_bit_pixels(tiny_run, tmp_path) -> None:
    """The tiny run's export=imagefolder, read back through condensed=: the run's images rounded
    to the 8-bit pixels the PNG files hold (export.py), bit for bit, and their labels; that
    rounding is all the export changes, so the accuracies are those of the rounded set."""
    images, labels = tiny_images(tiny_run)
    export = tiny_run.run_dir / "export"
    read = read_set(export, class_names=list(SPEC.class_names))
    [(fitted, fitted_labels)] = fit_set(read, SPEC)
    assert torch.equal(fitted, SPEC.normaliser.to_input(SPEC.normaliser.to_uint8(images)))
    assert torch.equal(fitted_labels, labels)
    # condensed_format names the reader; one that does not fit the path is one line.
    result, _ = scored(tmp_path, "wrong", f"condensed={export}", "condensed_format=tensors", *RUN)
    assert result.returncode == 2 and len(result.error_lines) == 1


def test_export_tensors_read_back_gives_the_runs_accuracies(tmp_path) -> None:
    run_dir = tmp_path / "run"
    made = train(*tiny("ipc=1", "iterations=2", "logger=csv", "export=tensors"),
                 f"hydra.run.dir={run_dir}")  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    export = run_dir / "export"
    assert sorted(p.name for p in export.iterdir()) == ["images.pt", "labels.pt"]
    images, labels = (torch.load(export / n, weights_only=True) for n in ("images.pt", "labels.pt"))
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.equal(images, load_synthetic(run_dir)[0].tensors[0])
    result, summary = scored(tmp_path, "eval", f"condensed={export}", "condensed_pixels=normalised",
                             *TINY_EVAL)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert summary["results"]["tensors"]["convnet"] == json.loads(
        (run_dir / "results.json").read_text())["results"]["dm"]["convnet"]  # fmt: skip


# --- sets that do not fit the data set: one line each ---


def test_wrong_class_count_channel_count_or_pixel_range_is_one_line(tmp_path) -> None:
    images, labels = torch.zeros(20, 1, 28, 28), torch.arange(10).repeat_interleave(2)
    folder = save_like_mtt(tmp_path / "bad", images, labels % 5)
    result = evaluate(f"condensed={folder}", "condensed_pixels=normalised", *TINY_EVAL,
                      f"hydra.run.dir={tmp_path / 'eval'}")  # fmt: skip
    assert result.returncode == 2 and len(result.error_lines) == 1, result.stderr
    assert result.error_lines[0].endswith("images of 5 classes, but mnist_sample has 10")
    # The same one-line ConfigError from the library, for each misfit.
    wrong = {
        "soft labels over 3 classes, but mnist_sample has 10": (images, torch.zeros(20, 3), None),
        "images have 3 channel(s), but mnist_sample has 1": (images.expand(-1, 3, -1, -1), labels,
                                                              None),
        "images are 32x32, but mnist_sample is 28x28": (torch.zeros(20, 1, 32, 32), labels, None),
        "far outside [0, 1]": (images + 255, labels, "unit"),
        "unknown condensed_pixels 'sRGB'": (images, labels, "sRGB"),
        "does not say how its pixels are scaled": (images, labels, None),
        "zca pixels need the data set's ZCA whitening": (images, labels, "zca"),
    }  # fmt: skip
    for n, (message, (bad_images, bad_labels, pixels)) in enumerate(wrong.items()):
        read = read_set(save_like_mtt(tmp_path / str(n), bad_images, bad_labels))
        with pytest.raises(ConfigError, match=re.escape(message)) as raised:
            fit_set(read, SPEC, pixels or ("normalised" if n < 3 else None))
        assert "\n" not in str(raised.value)


def test_a_whitened_set_read_back_in_pixel_units_may_span_several_units_past_0_1() -> None:
    """MTT with ZCA at lr_img 1000 moves pixels in the whitened space; unwhitened, both its
    authors' set and ours span about [-6, 6] in [0, 1] units after 200 iterations on CIFAR-10.
    That is a learned set, not a 0-255 scale (which reaches 255): it is read, and one pixel on
    a 0-255 scale still is not."""
    images, labels = torch.zeros(20, 1, 28, 28), torch.arange(10).repeat_interleave(2)
    images[0, 0, 0, :2] = torch.tensor([-6.0, 6.0])
    read = ReadSet(Path("learned.pt"), "tensors", [(images, labels)], "unit", "learned")
    ((fitted, _),) = fit_set(read, SPEC)
    assert fitted.shape == images.shape
    images[0, 0, 0, 2] = 255.0
    with pytest.raises(ConfigError, match=re.escape("far outside [0, 1]")):
        fit_set(ReadSet(Path("scaled.pt"), "tensors", [(images, labels)], "unit", "scaled"), SPEC)


# --- old files ---


def test_an_old_synthetic_pt_still_loads_and_scores_as_its_run(tmp_path) -> None:
    """tests/fixtures/old_synthetic: a synthetic.pt and results.json written by the writer before
    this change (commit caf2c47; how: tests/fixtures/old_synthetic/README.md)."""
    dataset, meta = load_synthetic(OLD)
    assert dataset.tensors[0].shape == (10, 1, 28, 28) and meta["method"] == "dm"
    result, summary = scored(tmp_path, "eval", f"condensed={OLD}", *TINY_EVAL)
    assert result.returncode == 0, result.stderr[-2000:]
    made = json.loads((OLD / "results.json").read_text())["results"]["dm"]["convnet"]
    assert summary["results"]["dm"]["convnet"] == made


# --- the board ---


def test_the_board_scores_a_set_made_elsewhere_in_a_row_beside_ours(tmp_path) -> None:
    """benchmarks/leaderboard.py --outside: the same evaluate jobs as our set's, with the path
    and its overrides, in a row of its own. The jobs are recorded, not run (each one's
    results.json is stood in for)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import leaderboard

    asked = []

    def record(module: str, overrides: list[str]) -> dict:
        asked.append((module, overrides))
        leaderboard.run_folder(overrides).mkdir(parents=True, exist_ok=True)
        given = dict(o.split("=", 1) for o in overrides)
        accuracy = {"convnet": {"mean": 40.0 if "condensed_pixels" in given else 50.0}}
        return {"ipc": 3, "results": {"dm": accuracy, "random": accuracy, "whole:hard": accuracy},
                "scores": {"convnet": {"lrs": {"lrs": 0.5}, "ars": {"ars": 0.25}}}}  # fmt: skip

    published = tmp_path / "published" / "images_best.pt"
    argv = ["--tiny", "--datasets", "mnist_sample", "--ipcs", "3", "--methods", "dm",
            "--out", str(tmp_path / "board"),
            "--outside", f"dm={published};condensed_pixels=normalised"]  # fmt: skip
    rows = leaderboard.main(argv, run=record)
    assert [row["method"] for row in rows] == ["dm", "dm (images_best.pt)"]
    assert [row["common hard"] for row in rows] == [50.0, 40.0]
    assert rows[1]["IPC"] == 3 and rows[1]["own protocol"] == "dsa"
    ours = [o for m, o in asked if m == "dmcondense.evaluate" and f"condensed={published}" not in o]
    theirs = [o for m, o in asked if f"condensed={published}" in o]
    assert len(theirs) == len(ours) == 2  # dsa: hard (with the scores) and soft labels
    for overrides in theirs:
        assert "condensed_pixels=normalised" in overrides and "condensed_name=dm" in overrides
    assert "| dm (images_best.pt) |" in (tmp_path / "board" / "board.md").read_text()


def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path) -> None:
    from omegaconf import OmegaConf

    from dmcondense.io import save_synthetic

    with pytest.raises(TypeError, match=r"synthetic.pt\['config'\] is a DictConfig"):
        save_synthetic(tmp_path / "synthetic.pt", {"config": OmegaConf.create({"ipc": 1})})
    assert not (tmp_path / "synthetic.pt").exists()
