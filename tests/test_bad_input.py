"""Bad input answers with one line on stderr that starts with "error:" and says what to fix, a
non-zero exit, and no synthetic.pt / results.json half written. (test_train_cli covers a
misspelt data set or key, missing torchvision data, ipc=0 and a wrong class count.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from helpers import run_train
from helpers.fixtures import write_imagefolder

from dmcondense.io import load_synthetic

TINY = ["model.width=8", "batch_real=4", "iterations=2", "eval.epochs=1", "eval.num_models=1"]
OUTPUTS = ("synthetic.pt", "synthetic.png", "results.json", "config.yaml", "checkpoints", "export")


def make_inputs(root: Path) -> dict[str, Path]:
    """Folders the cases point at: image folders good and bad, an empty one, a plain file."""
    write_imagefolder(root / "two_a_class", classes=3, per_class=2)
    corrupt = root / "corrupt"
    write_imagefolder(corrupt, classes=3, per_class=4)
    (corrupt / "train" / "apple" / "img_999.png").write_bytes(b"not a png at all")
    (root / "empty").mkdir()
    (root / "a_file").write_text("a file, not a folder\n")
    return {
        "two": root / "two_a_class",
        "corrupt": corrupt,
        "bad_png": corrupt / "train" / "apple" / "img_999.png",
        "empty": root / "empty",
        "missing": root / "missing",
        "file": root / "a_file",
    }


def one_error_line(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


CASES = {
    # case id: (overrides, texts the message must hold: the culprit and the fix)
    "misspelt-model": (["model=convnett"], ["convnett", "'convnet'", "convnet_bn"]),
    "misspelt-augment": (["augment=dsaa"], ["dsaa", "'dsa'", "none"]),
    "bad-dsa-strategy": (["augment.strategy=colr"], ["colr", "color", "crop"]),
    "bad-norm": (["model.norm=bogus"], ["bogus", "instancenorm", "batchnorm"]),
    "iterations-zero": (["iterations=0"], ["iterations", "iterations=N with N >= 1"]),
    "batch-real-negative": (["batch_real=-1"], ["batch_real", "-1", ">= 1"]),
    "folder-missing": (["dataset=imagefolder", "path={missing}"], ["{missing}", "not exist"]),
    "folder-empty": (["dataset=imagefolder", "path={empty}"], ["{empty}", "empty", "train/"]),
    "folder-not-given": (["dataset=imagefolder"], ["path=", "train/"]),
    "too-few-images-for-ipc": (
        ["dataset=imagefolder", "path={two}", "ipc=3", "init=real"],
        ["only 2", "ipc=3", "ipc=2"],
    ),
    "strict-corrupt-file": (
        ["dataset=imagefolder", "path={corrupt}", "strict=true"],
        ["{bad_png}", "strict=false"],
    ),
    "dc-ipc-not-in-the-loop-table": (
        ["method=dc", "ipc=7"],
        ["ipc=7", "1, 10, 20, 30, 40, 50", "method.outer_loop=N method.inner_loop=M"],
    ),
    "dc-unknown-distance": (["method=dc", "ipc=1", "method.distance=foo"], ["foo", "ours, mse"]),
    "unknown-eval-protocol": (["eval.protocol=dm"], ["eval.protocol", "'dm'", "dsa, dc"]),
    "factor-that-cuts-no-whole-tiles": (
        ["synthetic.factor=3"],
        ["synthetic.factor=3", "28x28", "1, 2, 4, 7"],
    ),
    "idm-queue-smaller-than-its-start": (["method=idm", "method.net_num=2"], ["net_num=2", "3"]),
    "output-folder-under-a-file": (
        ["hydra.run.dir={file}/run"],
        ["{file}", "output folder", "hydra.run.dir"],
    ),
}


@pytest.mark.parametrize(("overrides", "must_mention"), CASES.values(), ids=CASES.keys())
def test_bad_input_gets_one_error_line_and_writes_nothing(
    tmp_path: Path, overrides: list[str], must_mention: list[str]
) -> None:
    paths = make_inputs(tmp_path / "inputs")
    run_dir = tmp_path / "run"
    args = [o.format(**paths) for o in overrides]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    line = one_error_line(run_train(*TINY, *args, timeout=120))
    for text in must_mention:
        assert text.format(**paths) in line, line
    assert not any((run_dir / name).exists() for name in OUTPUTS), sorted(run_dir.iterdir())
    assert paths["file"].read_text() == "a file, not a folder\n"


def test_unreadable_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path / "inputs")
    notes = paths["corrupt"] / "train" / "zebra" / "notes.txt"
    notes.write_text("not an image\n")
    run_dir = tmp_path / "run"
    result = run_train(
        *TINY,
        "dataset=imagefolder",
        f"path={paths['corrupt']}",
        "ipc=2",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [ln for ln in result.stderr.splitlines() if "skipping" in ln]
    # One plain line a file, as a user reads it: no source path, line number or category.
    assert f"warning: skipping {notes}: not an image file" in warnings, result.stderr
    assert any(ln.startswith(f"warning: skipping {paths['bad_png']}: cannot decode")
               for ln in warnings), result.stderr  # fmt: skip
    assert len(warnings) == 2 and "UserWarning" not in result.stderr
    dataset, meta = load_synthetic(run_dir)
    assert meta["class_names"] == ["apple", "mango", "zebra"] and len(dataset) == 3 * 2
    assert (run_dir / "results.json").is_file()


# IDM: manual optimisation and a network queue, with the same guard.
OVERFLOWING = {
    "dm": [],
    "idm": ["method=idm", "method.batch_train=8", "method.model_train_steps=1"],
}


@pytest.mark.parametrize("method", list(OVERFLOWING))
def test_a_loss_that_overflows_stops_the_run_and_keeps_the_last_good_set(
    tmp_path: Path, method: str
) -> None:
    run_dir = tmp_path / "run"
    iterations = 6
    result = run_train(
        *TINY,
        *OVERFLOWING[method],
        "lr_img=1e30",  # the first update throws the images far out: the loss overflows
        f"iterations={iterations}",
        "save_every=1",
        f"hydra.run.dir={run_dir}",
    )
    line = one_error_line(result)
    assert "lr_img" in line and str(run_dir / "synthetic.pt") in line
    step = int(re.search(r"(?:inf|nan) at step (\d+)", line).group(1))
    assert 0 <= step < iterations
    dataset, meta = load_synthetic(run_dir)
    assert torch.isfinite(dataset.tensors[0]).all()  # the last good set, not the broken one
    assert meta["step"] <= step and f"(step {meta['step']})" in line
    assert not (run_dir / "results.json").exists()


def test_many_skipped_files_show_ten_lines_and_a_count(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path / "inputs")
    for i in range(14):  # 15 unreadable files with the corrupt png
        (paths["corrupt"] / "train" / "mango" / f"notes_{i:02d}.txt").write_text("no image\n")
    result = run_train(*TINY, "dataset=imagefolder", f"path={paths['corrupt']}", "ipc=2",
                       f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]
    skipped = [ln for ln in lines if ln.startswith("warning: skipping ")]
    assert len(skipped) == 10 and len(set(skipped)) == 10
    assert lines[-1] == "warning: 5 more warnings like these were not shown"
