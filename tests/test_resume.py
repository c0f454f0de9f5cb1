"""A run killed between checkpoints and resumed from last.ckpt ends where an unbroken run ends,
and output files are replaced atomically.

DM is killed for real: SIGKILL to a run's process, resumed in a new one, compared with an
unbroken run made in this process. The other methods are stopped in this process right after
their step-8 checkpoint (helpers.inprocess.train_killed_after), resumed to step 12 and compared
with an unbroken run to step 12: the same checkpoint and resume code, without three interpreters
a method."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO_ROOT, run_train
from helpers.inprocess import steps_seen, tiny, train, train_killed_after

from dmcondense.io import atomic_write, load_synthetic

RUN = tiny("batch_real=8", "ipc=2", "iterations=12", "save_every=4", "logger=csv")
KILL_AFTER = 8  # the checkpoint step the killed run must have reached
# DC: manual optimisation, two image updates and a network trained between them a step.
# DSA: DC with one Siamese augmentation draw a class shared by real and synthetic batches.
# M3D: a network held for 3 steps (the kill lands inside a block), pixels clamped in [0, 1].
# IDM: its queue is pushed every 3 steps and full at 4, so networks leave it before and after
# the kill, and its accuracy counts restart at step 5 and 10.
# DM x2: multi-formation (the stored tensor is not what the networks see).
METHODS = {
    "dc": ["method=dc", "method.outer_loop=2", "method.inner_loop=2", "init=real"],
    "dsa": ["method=dsa", "method.outer_loop=2", "method.inner_loop=2"],
    "m3d": ["method=m3d", "method.redraw_every=3", "batch_real=8"],
    "idm": [
        "method=idm",
        "method.net_num=4",
        "method.net_generate_interval=3",
        "method.accuracy_window=5",
        "method.batch_train=16",
        "method.model_train_steps=2",
        "batch_real=8",
    ],  # fmt: skip
    "dm-factor2": ["synthetic.factor=2"],
}

# The entry point as `python -m dmcondense.train`, made to stand still once `pause_at` steps are
# done (after the step-8 checkpoint, before the step-12 one), so the kill always lands between.
PAUSING_ENTRY = """
import runpy, sys, time
import lightning as L

pause_at = int(sys.argv.pop(1))
save = L.pytorch.callbacks.ModelCheckpoint.on_train_batch_end

def on_train_batch_end(self, trainer, *args, **kwargs):
    save(self, trainer, *args, **kwargs)
    if trainer.global_step >= pause_at:
        time.sleep(600)

L.pytorch.callbacks.ModelCheckpoint.on_train_batch_end = on_train_batch_end
runpy.run_module("dmcondense.train", run_name="__main__", alter_sys=True)
"""


def checkpoint_step(path: Path) -> int:
    """The checkpoint's global_step, or -1 while it is missing or half written."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # absent, or caught mid-write: ask again
        return -1


def start_paused_run(run_dir: Path, pause_at: int, args: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH"), str(REPO_ROOT / "src")) if p
    )
    return subprocess.Popen(
        [sys.executable, "-c", PAUSING_ENTRY, str(pause_at), *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_resumed_set_equals_whole(killed_dir: Path, whole_dir: Path) -> None:
    """The resumed run finished at step 12 with the unbroken run's synthetic set, bit for bit."""
    (resumed_set, resumed_meta), (whole_set, whole_meta) = (
        load_synthetic(killed_dir),
        load_synthetic(whole_dir),
    )
    assert resumed_meta["step"] == whole_meta["step"] == 12
    assert torch.equal(resumed_set.tensors[0], whole_set.tensors[0])
    assert (killed_dir / "results.json").is_file()


@pytest.mark.slow
def test_dm_killed_with_sigkill_resumes_to_the_same_synthetic_set(tmp_path: Path) -> None:
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    last = killed_dir / "checkpoints" / "last.ckpt"
    args = list(RUN)
    process = start_paused_run(killed_dir, pause_at=KILL_AFTER + 2, args=args)
    try:
        deadline = time.monotonic() + 150
        while checkpoint_step(last) < KILL_AFTER:
            if process.poll() is not None:
                pytest.fail(f"the run ended before it was killed:\n{process.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no step-8 checkpoint within 150 s")
            time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stderr.close()

    # Killed between checkpoints: the step-8 state is on disk, the run did not finish.
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["global_step"] == KILL_AFTER
    momentum = state["optimizer_states"][0]["state"][0]["momentum_buffer"]
    assert momentum.abs().sum() > 0  # the resumed run must carry this on
    assert load_synthetic(killed_dir)[1]["step"] == KILL_AFTER
    assert not (killed_dir / "results.json").exists()

    resumed = run_train(*args, "resume=last", f"hydra.run.dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states" in resumed.stdout + resumed.stderr
    whole = train(*args, f"hydra.run.dir={whole_dir}")  # the reference needs no process
    assert whole.returncode == 0, whole.stderr[-3000:]

    assert_resumed_set_equals_whole(killed_dir, whole_dir)


def checkpoint_state(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def assert_same_tree(a, b, where: str = "") -> None:
    """Nested dicts / lists of tensors and plain values, equal bit for bit."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tree(x, y, f"{where}/{k}")
    elif torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("method", list(METHODS))
def test_a_run_stopped_after_a_checkpoint_resumes_to_the_same_synthetic_set(
    tmp_path: Path, method: str
) -> None:
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    args = [*RUN, *METHODS[method]]
    seen = train_killed_after(KILL_AFTER, *args, f"hydra.run.dir={killed_dir}")
    assert seen == list(range(1, KILL_AFTER + 1))

    # Stopped between checkpoints: the step-8 state is on disk, the run did not finish.
    state = checkpoint_state(killed_dir)
    assert state["global_step"] == KILL_AFTER
    momentum = state["optimizer_states"][0]["state"][0]["momentum_buffer"]
    assert momentum.abs().sum() > 0  # the resumed run must carry this on
    assert load_synthetic(killed_dir)[1]["step"] == KILL_AFTER
    assert not (killed_dir / "results.json").exists()

    with steps_seen() as resumed_steps:
        resumed = train(*args, "resume=last", f"hydra.run.dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed_steps == list(range(KILL_AFTER + 1, 13))  # went on from step 8, not 0
    whole = train(*args, f"hydra.run.dir={whole_dir}")
    assert whole.returncode == 0, whole.stderr[-3000:]

    assert_resumed_set_equals_whole(killed_dir, whole_dir)
    # The step-12 checkpoints agree too: the pixels' optimiser state and, for IDM, its queue
    # (each network's weights, optimiser state and accuracy counts).
    resumed_state, whole_state = checkpoint_state(killed_dir), checkpoint_state(whole_dir)
    assert resumed_state["global_step"] == whole_state["global_step"] == 12
    assert_same_tree(resumed_state["optimizer_states"], whole_state["optimizer_states"])
    assert_same_tree(resumed_state["state_dict"], whole_state["state_dict"])
    if method == "idm":
        queue = whole_state["auxiliary"]["queue"]["state"]
        assert len(queue["networks"]) == 4
        assert_same_tree(resumed_state["auxiliary"], whole_state["auxiliary"], "queue")


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "synthetic.pt"
    target.write_bytes(b"old, complete")

    def half_then_crash(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"new, but only ha")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic.pt"]  # no temporary left over

    atomic_write(target, lambda tmp: Path(tmp).write_bytes(b"new, complete"))
    assert target.read_bytes() == b"new, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic.pt"]


def test_atomic_write_leaves_nothing_when_the_first_write_fails(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "results.json"

    def crash(tmp: str) -> None:
        Path(tmp).write_text('{"partial": ')
        raise KeyboardInterrupt  # even an interrupt, not only an Exception

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert list(target.parent.iterdir()) == []


def test_resume_auto_starts_fresh_without_a_checkpoint_and_resumes_with_one(tmp_path) -> None:
    from dmcondense.glue.checkpoints import resume_checkpoint

    assert resume_checkpoint("auto", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="resume=auto"):
        resume_checkpoint("last", tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"global_step": 3}, last)
    assert resume_checkpoint("auto", tmp_path) == str(last)
    assert resume_checkpoint("last", tmp_path) == str(last)
    assert resume_checkpoint(None, tmp_path) is None


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys) -> None:
    from dmcondense.errors import ConfigError
    from dmcondense.glue.checkpoints import KeepPreviousCheckpointIO, resume_checkpoint

    last = tmp_path / "checkpoints" / "last.ckpt"
    writer = KeepPreviousCheckpointIO()
    writer.save_checkpoint({"global_step": 4}, last)
    writer.save_checkpoint({"global_step": 6}, last)  # the step-4 one becomes the previous
    previous = last.with_name("last.previous.ckpt")
    assert torch.load(previous, weights_only=False)["global_step"] == 4
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt", "last.previous.ckpt"]

    last.write_bytes(last.read_bytes()[:1000])  # cut short, as a kill mid-copy would
    assert resume_checkpoint("last", tmp_path) == str(previous)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("warning: ") and str(last) in line and str(previous) in line

    previous.write_bytes(previous.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="no usable earlier checkpoint; start afresh"):
        resume_checkpoint("last", tmp_path)
    assert resume_checkpoint("auto", tmp_path) is None  # a requeued job starts afresh
    assert "starting afresh" in capsys.readouterr().err


def test_a_truncated_last_checkpoint_resumes_from_the_previous_to_the_same_set(tmp_path) -> None:
    args = [a for a in RUN if not a.startswith(("iterations", "save_every"))]
    args += ["iterations=6", "save_every=2"]
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    assert train(*args, f"hydra.run.dir={cut}").returncode == 0
    last = cut / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with steps_seen() as resumed_steps:
        resumed = train(*args, "resume=last", f"hydra.run.dir={cut}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Traceback" not in resumed.stderr
    assert resumed_steps == [5, 6]  # from the step-4 checkpoint, the one before the cut one
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "last.previous.ckpt" in warnings[0], resumed.stderr[-2000:]
    assert train(*args, f"hydra.run.dir={whole}").returncode == 0
    assert torch.equal(load_synthetic(cut)[0].tensors[0], load_synthetic(whole)[0].tensors[0])

    for name in ("last.ckpt", "last.previous.ckpt"):  # nothing usable: one line, what to do
        path = cut / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:1000])
    failed = train(*args, "resume=last", f"hydra.run.dir={cut}")
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "resume=null" in lines[0]
