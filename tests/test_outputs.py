"""What a run leaves for the user: the export as image files, a loadable synthetic set, the CSV
log, the end-of-run summary, and the command line's --help. The runs read are the session's
shared tiny runs (conftest.py)."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from helpers import REPO_ROOT
from helpers.shared_runs import TINY_CSV_RUN_IPC, TINY_CSV_RUN_ITERATIONS, TINY_RUN_IPC
from PIL import Image

from dmcondense.cli import groups
from dmcondense.export import export_imagefolder

# The session's shared runs (conftest.py): tiny_run exports, tiny_csv_run logs to CSV.
IPC = TINY_RUN_IPC


def expected_pixels(images: torch.Tensor, mean: list, std: list) -> np.ndarray:
    """round(denormalised * 255) as uint8 [N, H, W, C], computed here from the definition."""
    shape = (1, -1, 1, 1)
    denormalised = images * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    pixels = (denormalised.clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        array = np.array(image)
    return array[..., None] if array.ndim == 2 else array


def test_export_writes_one_lossless_png_per_synthetic_image(tiny_run) -> None:
    run_dir = tiny_run.run_dir
    record = torch.load(run_dir / "synthetic.pt", weights_only=False)
    expected = expected_pixels(record["images"], record["mean"], record["std"])
    export = run_dir / "export"
    assert sorted(p.name for p in export.iterdir()) == sorted(record["class_names"])
    files = sorted(export.rglob("*.png"))
    assert len(files) == len(record["labels"]) == 10 * IPC
    for k, label in enumerate(record["labels"].tolist()):
        path = export / record["class_names"][label] / f"{k % IPC}.png"
        assert np.array_equal(read_png(path), expected[k]), path
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".export")]  # no staging left


def test_export_makes_class_names_safe_folder_names(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    names = ["T-shirt/top", "a:b", "CON", "x/y", "x_y", "..", "ok name"]
    ipc = 3
    record = {
        "images": torch.randn(len(names) * ipc, 3, 5, 4, generator=g) * 2,  # some clamp
        "labels": torch.arange(len(names)).repeat_interleave(ipc),
        "class_names": names,
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.25, 0.3],
        "ipc": ipc,
    }
    out = export_imagefolder(record, tmp_path / "export")
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == len(names)  # distinct, even where two names sanitise alike
    assert len({f.lower() for f in folders}) == len(folders)
    for folder in folders:
        assert not set(folder) & set('<>:"/\\|?*') and folder not in (".", "..", "")
        assert folder.split(".")[0].upper() != "CON"
        assert sorted(p.name for p in (out / folder).iterdir()) == ["0.png", "1.png", "2.png"]
    expected = expected_pixels(record["images"], record["mean"], record["std"])
    got = np.stack([read_png(p) for p in sorted(out.rglob("*.png"))])
    assert sorted(a.tobytes() for a in got) == sorted(a.tobytes() for a in expected)
    assert expected.min() == 0 and expected.max() == 255  # the clamping was exercised

    export_imagefolder(record, out)  # a second export replaces the first
    assert sorted(p.name for p in out.iterdir()) == folders


def test_a_loaded_synthetic_set_trains_a_network_in_three_lines(tiny_run) -> None:
    import dmcondense
    from dmcondense.data.normalise import Normaliser
    from dmcondense.evaluation import Protocol, train_network
    from dmcondense.models.registry import build_model

    run_dir = tiny_run.run_dir
    torch.manual_seed(0)  # build_model draws its initial weights from the global generator
    # The README's three lines (a narrower network and fewer epochs, for the test's sake):
    dataset, meta = dmcondense.load_synthetic(run_dir)
    net = build_model("convnet", channels=1, num_classes=10, image_size=28, width=16)
    train_network(net, *dataset.tensors, protocol=Protocol(epochs=40), seed=0, index=0,
                  normaliser=Normaliser(meta["mean"], meta["std"]))  # fmt: skip

    images, labels = dataset.tensors
    assert isinstance(dataset, torch.utils.data.Dataset) and len(dataset) == 10 * IPC
    with torch.no_grad():
        fitted = (net.eval()(images).argmax(1) == labels).float().mean()
    assert fitted == 1.0  # 20 images, 10 classes: it has learned them


def test_import_dmcondense_is_light_and_exports_load_synthetic() -> None:
    code = (
        "import sys, dmcondense\n"
        "light = 'torch' not in sys.modules\n"
        "from dmcondense import load_synthetic\n"
        "import dmcondense.io\n"
        "print(light, load_synthetic is dmcondense.io.load_synthetic)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_csv_logger_holds_the_loss_curve_and_the_accuracies(tiny_csv_run) -> None:
    run_dir = tiny_csv_run.run_dir
    with open(run_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == TINY_CSV_RUN_ITERATIONS and all(math.isfinite(v) for v in losses)
    results = json.loads((run_dir / "results.json").read_text())["results"]
    logged = [float(r["eval/dm/convnet"]) for r in rows if r.get("eval/dm/convnet")]
    assert logged == [results["dm"]["convnet"]["mean"]]
    assert f"ipc: {TINY_CSV_RUN_IPC}" in (run_dir / "hparams.yaml").read_text().splitlines()


def test_run_ends_with_a_summary_whose_last_line_names_the_folder(tiny_run) -> None:
    run_dir, result = tiny_run.run_dir, tiny_run.result
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"run folder: {run_dir}"
    results = json.loads((run_dir / "results.json").read_text())["results"]
    summary = "\n".join(lines[-6:])
    for set_name in ("dm", "random"):
        assert f"{results[set_name]['convnet']['mean']:6.2f}" in summary
    assert "wall time" in summary and str(run_dir / "export") in summary
    # Progress, as plain lines since stdout is a pipe here: the last step and its loss.
    assert re.search(r"^step \d+/\d+ \(100%\) train/loss \S+$", result.stdout, re.MULTILINE)


def test_help_lists_every_config_group_with_a_description_and_its_options() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    out = subprocess.run(
        [sys.executable, "-m", "dmcondense.train", "--help"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for group, options in groups().items():
        described = [ln for ln in lines if ln.split()[:1] == [group] and len(ln.split()) > 3]
        assert described, f"no description line for group {group}"
        if options:
            assert f"{group}: {', '.join(options)}" in lines
    assert "ipc: 10" in lines  # the config itself, to override
