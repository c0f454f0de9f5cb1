"""Bad input answers with one line on stderr that starts with "error:" and says what to fix,
exit status 2, and no synthetic.pt / results.json half written.

The cases run in this process, through the entry point as a user calls it
(helpers.inprocess.train: the command-line check, Hydra, the config checks, the job). Two of
them run again as real processes, to see what a shell sees: one that fails before torch is
imported (the command-line check), one that fails after (the data check of the job)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT
from helpers.fixtures import write_imagefolder
from helpers.inprocess import Run, tiny, train

from dmcondense.io import load_synthetic

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


def one_error_line(result: Run | subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


CASES = {
    # case id: (overrides, texts the message must hold: the culprit and the fix)
    "misspelt-dataset": (["dataset=cifar1"], ["cifar1", "cifar10"]),
    "misspelt-key": (["ipcc=3"], ["ipcc", "'ipc'"]),
    "missing-torchvision-data": (
        ["dataset=cifar10", "dataset.download=false", "data_dir={empty}"],
        ["{empty}", "download"],
    ),
    "ipc-zero": (["ipc=0"], ["ipc", ">= 1"]),
    "wrong-class-count": (["dataset.num_classes=9"], ["9", "dataset.num_classes"]),
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


def case_args(overrides: list[str], paths: dict[str, Path], run_dir: Path) -> list[str]:
    args = [o.format(**paths) for o in overrides]
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    return tiny(*args)


def check_refused(result, overrides, must_mention, paths: dict[str, Path], run_dir: Path) -> None:
    line = one_error_line(result)
    for text in must_mention:
        assert text.format(**paths) in line, line
    assert not any((run_dir / name).exists() for name in OUTPUTS), sorted(run_dir.iterdir())
    # nor the run folder Hydra made for it (its .hydra/ and the job's log)
    assert not run_dir.exists(), sorted(run_dir.iterdir())
    assert paths["file"].read_text() == "a file, not a folder\n"


@pytest.mark.parametrize(("overrides", "must_mention"), CASES.values(), ids=CASES.keys())
def test_bad_input_gets_one_error_line_and_writes_nothing(
    tmp_path: Path, overrides: list[str], must_mention: list[str]
) -> None:
    paths = make_inputs(tmp_path / "inputs")
    run_dir = tmp_path / "run"
    result = train(*case_args(overrides, paths, run_dir))
    check_refused(result, overrides, must_mention, paths, run_dir)


def test_a_refused_run_keeps_a_run_folder_that_holds_more_than_hydras_records(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run's checkpoint")
    result = train(*tiny("eval.protocol=dsb", "resume=last", f"hydra.run.dir={run_dir}"))
    assert "unknown eval.protocol 'dsb'" in one_error_line(result)
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier run's checkpoint"
    assert (run_dir / ".hydra").is_dir()  # Hydra's records of the refused command, beside it


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_folder_where_no_folder_can_be_made_gets_one_line_even_for_root() -> None:
    # /proc passes os.access for root, yet no folder can be made in it.
    result = train(*tiny("hydra.run.dir=/proc/dmcondense-test/run"))
    line = one_error_line(result)
    assert "cannot create the output folder /proc/dmcondense-test/run" in line, line
    assert "no folder can be made in /proc" in line and "hydra.run.dir=" in line, line
    assert not Path("/proc/dmcondense-test").exists()


# `python -m dmcondense.train`, telling at exit (on stdout) whether torch was imported.
ENTRY_REPORTING_TORCH = """
import atexit, runpy, sys
atexit.register(lambda: print("torch imported:", "torch" in sys.modules))
runpy.run_module("dmcondense.train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("case", "torch_imported"),
    [("misspelt-dataset", False), ("too-few-images-for-ipc", True)],
    ids=["before-torch", "after-torch"],
)
def test_a_real_process_shows_one_line_and_exits_2(
    tmp_path: Path, case: str, torch_imported: bool
) -> None:
    overrides, must_mention = CASES[case]
    paths = make_inputs(tmp_path / "inputs")
    run_dir = tmp_path / "run"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH"), str(REPO_ROOT / "src")) if p
    )
    result = subprocess.run(
        [sys.executable, "-c", ENTRY_REPORTING_TORCH, *case_args(overrides, paths, run_dir)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    check_refused(result, overrides, must_mention, paths, run_dir)
    assert result.stdout.strip().splitlines()[-1] == f"torch imported: {torch_imported}"


def test_unreadable_files_are_skipped_with_a_warning(tmp_path: Path) -> None:
    paths = make_inputs(tmp_path / "inputs")
    notes = paths["corrupt"] / "train" / "zebra" / "notes.txt"
    notes.write_text("not an image\n")
    run_dir = tmp_path / "run"
    result = train(*tiny("dataset=imagefolder", f"path={paths['corrupt']}", "ipc=2",
                         f"hydra.run.dir={run_dir}"))  # fmt: skip
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
    result = train(
        *tiny(*OVERFLOWING[method]),
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
    result = train(*tiny("dataset=imagefolder", f"path={paths['corrupt']}", "ipc=2",
                         f"hydra.run.dir={tmp_path / 'run'}"))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: ")]
    skipped = [ln for ln in lines if ln.startswith("warning: skipping ")]
    assert len(skipped) == 10 and len(set(skipped)) == 10
    assert lines[-1] == "warning: 5 more warnings like these were not shown"
