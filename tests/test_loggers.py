"""Experiment tracking: what a run leaves in TensorBoard's event files and in an offline W&B run,
read back with each tool's own reader; and when W&B goes offline on its own."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers.inprocess import train
from helpers.shared_runs import (
    TINY_RUN,
    TINY_RUN_IMAGES_EVERY,
    TINY_RUN_IPC,
    TINY_RUN_ITERATIONS,
)
from omegaconf import OmegaConf
from PIL import Image

from dmcondense.glue.tracking import wandb_credentials_found
from dmcondense.jobs.build import wandb_logger_kwargs

# The session's shared tiny run (conftest.py: tiny_run) logs to TensorBoard with these; the W&B
# run below uses the same overrides.
IPC, ITERATIONS, IMAGES_EVERY = TINY_RUN_IPC, TINY_RUN_ITERATIONS, TINY_RUN_IMAGES_EVERY
TINY = [a for a in TINY_RUN if not a.startswith("export=")]


def grid_size(width: int, height: int) -> bool:
    """IPC columns x 10 rows of 28 px tiles, the same padding p around every tile."""
    return any(width == IPC * (28 + p) + p and height == 10 * (28 + p) + p for p in range(5))


def test_tensorboard_holds_config_loss_image_grids_and_accuracies(tiny_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tiny_run.run_dir  # logger=tensorboard is the default

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(ITERATIONS))
    assert all(math.isfinite(e.value) for e in losses)

    grids = events.Images("synthetic")  # the initial set, then every IMAGES_EVERY steps
    assert [e.step for e in grids] == list(range(0, ITERATIONS + 1, IMAGES_EVERY))
    assert all(grid_size(e.width, e.height) for e in grids)
    # The last grid is the final synthetic set: the picture written beside synthetic.pt.
    with Image.open(run_dir / "synthetic.png") as picture:
        final = np.asarray(picture.convert("L"), dtype=int)
    last = Image.open(io.BytesIO(grids[-1].encoded_image_string))
    assert np.abs(np.asarray(last.convert("L"), dtype=int) - final).max() <= 1

    results = json.loads((run_dir / "results.json").read_text())["results"]
    for set_name in ("dm", "random"):
        (logged,) = events.Scalars(f"eval/{set_name}/convnet")
        assert logged.value == pytest.approx(results[set_name]["convnet"]["mean"], abs=1e-4)
    assert "eval/accuracy/text_summary" in events.Tags()["tensors"]
    # The HPARAMS tab's metric is the condensed set's accuracy (not Lightning's placeholder -1).
    (metric,) = events.Scalars("hp_metric")
    assert metric.value == pytest.approx(results["dm"]["convnet"]["mean"], abs=1e-4)
    hparams = OmegaConf.load(run_dir / "hparams.yaml")
    assert hparams.ipc == IPC and hparams.iterations == ITERATIONS


# --- W&B: an offline run is a folder with files/ and a run-<id>.wandb record log -------------

BLOCK, RECORD_HEADER, FILE_HEADER = 32768, 7, 7


def wandb_records(path: Path) -> list:
    """The protobuf Records of a .wandb file: a LevelDB-style log (32 KiB blocks, 7-byte
    record headers: crc32, length, type FULL/FIRST/MIDDLE/LAST) after a 7-byte ':W&B' header."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos = [], b"", FILE_HEADER
    while pos + RECORD_HEADER <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER:  # block trailer: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEADER])
        pending += data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def items(record, kind: str) -> dict:
    entries = record.history.item if kind == "history" else record.config.update
    return {e.key or "/".join(e.nested_key): json.loads(e.value_json) for e in entries}


@pytest.fixture
def wandb_env(monkeypatch, tmp_path: Path) -> None:
    """No API key anywhere, and every wandb folder inside tmp_path."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_DISABLE_CODE", "true")


def test_wandb_without_a_key_runs_offline_with_config_loss_images_table_and_artifact(
    wandb_env, tmp_path: Path
) -> None:
    pytest.importorskip("wandb")
    run_dir = tmp_path / "run"
    result = train(*TINY, "logger=wandb", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]

    (offline_dir,) = (run_dir / "wandb").glob("offline-run-*")
    assert f"wandb sync {offline_dir}" in result.stdout  # how to upload it later
    (log,) = offline_dir.glob("run-*.wandb")
    records = wandb_records(log)
    by_type: dict[str, list] = {}
    for record in records:
        by_type.setdefault(record.WhichOneof("record_type"), []).append(record)

    config = {}
    for record in by_type["config"]:
        config |= items(record, "config")
    assert config["ipc"] == IPC and config["dataset"]["name"] == "mnist_sample"

    history = [items(r, "history") for r in by_type["history"]]
    losses = [h["train/loss"] for h in history if "train/loss" in h]
    assert len(losses) == ITERATIONS and all(math.isfinite(v) for v in losses)
    grids = [h for h in history if "synthetic/filenames" in h]
    assert [h["trainer/global_step"] for h in grids] == [0, 2, 4]
    for h in grids:
        (name,) = h["synthetic/filenames"]
        with Image.open(offline_dir / "files" / name) as image:
            assert grid_size(*image.size)

    (table_file,) = (offline_dir / "files" / "media" / "table").rglob("*.table.json")
    table = json.loads(table_file.read_text())
    rows = {(row[0], row[1]): row for row in table["data"]}
    results = json.loads((run_dir / "results.json").read_text())["results"]
    mean = table["columns"].index("mean")
    for set_name in ("dm", "random"):
        assert rows[(set_name, "convnet")][mean] == results[set_name]["convnet"]["mean"]

    (artifact,) = [r.artifact for r in by_type["artifact"] if r.artifact.type == "dataset"]
    digests = {e.path: e.digest for e in artifact.manifest.contents}
    assert set(digests) == {"synthetic.pt", "synthetic.png"}
    for name, digest in digests.items():  # the final files, byte for byte (base64 md5)
        md5 = hashlib.md5((run_dir / name).read_bytes()).digest()
        assert digest == base64.b64encode(md5).decode()


def test_wandb_goes_offline_only_without_credentials(wandb_env, monkeypatch, tmp_path) -> None:
    cfg = OmegaConf.create(
        {"logger": {"_target_": "lightning.pytorch.loggers.WandbLogger", "offline": False}}
    )
    composed = OmegaConf.to_yaml(cfg)
    assert not wandb_credentials_found()
    assert wandb_logger_kwargs(cfg) == {"offline": True}

    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_credentials_found() and wandb_logger_kwargs(cfg) == {"offline": False}

    monkeypatch.setenv("WANDB_MODE", "offline")  # asked for explicitly: offline even with a key
    assert wandb_logger_kwargs(cfg) == {"offline": True}
    assert OmegaConf.to_yaml(cfg) == composed  # the config is read, never edited

    csv_cfg = OmegaConf.create({"logger": {"_target_": "lightning.pytorch.loggers.CSVLogger"}})
    assert wandb_logger_kwargs(csv_cfg) == {}


def test_default_grid_cadence_is_the_start_and_ten_more(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    args = [a for a in TINY if not a.startswith(("log_images_every", "iterations"))]
    result = train(*args, "iterations=20", "logger=tensorboard", f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("synthetic")] == list(range(0, 21, 2))


def test_no_grid_is_rendered_for_a_logger_that_cannot_show_it(tmp_path, monkeypatch) -> None:
    import dmcondense.glue.callbacks as callbacks

    rendered = []
    monkeypatch.setattr(callbacks, "image_grid", lambda *a, **k: rendered.append(1))
    args = [a for a in TINY if not a.startswith(("log_images_every", "iterations"))]
    result = train(*args, "iterations=4", "log_images_every=1", "logger=csv",
                   f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert rendered == []


def test_csv_runs_quietly(tiny_csv_run) -> None:
    # The run folder holds Hydra's record before the CSV logger starts: no "not empty" notice.
    csv_dir, result = tiny_csv_run.run_dir, tiny_csv_run.result
    assert (csv_dir / ".hydra").is_dir() and (csv_dir / "metrics.csv").is_file()
    assert "exists and is not empty" not in result.stderr + result.stdout
