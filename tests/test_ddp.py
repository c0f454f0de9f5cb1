"""DDP on the CPU (gloo, 2 processes) condenses exactly what one process does.

Each rank matches its own slice of classes with the same network, DSA and real draws; the
loss is scaled by the world size so DDP's gradient average is the single-process sum. NCFM,
which steps the images class by class, makes every class's step on every rank (a zero gradient
for the other rank's classes) and then gathers each rank's rows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers.inprocess import other_ranks_as_processes, tiny, train

from dmcondense.data.sources import load_split
from dmcondense.io import load_synthetic
from dmcondense.synthetic import SyntheticImages

STEPS = 3
TINY = tiny(
    "batch_real=8", "ipc=2", f"iterations={STEPS}", "logger=csv", "trainer.log_every_n_steps=1"
)


def logged_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row["train/loss"]]


def initial_images(meta: dict) -> torch.Tensor:
    """The real images the run started from, normalised as synthetic.pt stores them."""
    train = load_split("mnist_sample", None, "train")
    shape = (1, -1, 1, 1)
    mean, std = torch.tensor(meta["mean"]).view(shape), torch.tensor(meta["std"]).view(shape)
    return (train.images[meta["init_indices"]].float() / 255 - mean) / std


def starting_set(meta: dict) -> torch.Tensor:
    """The decoded set the run started from (its real images packed into tiles by factor)."""
    real = initial_images(meta)
    if meta["factor"] == 1:
        return real
    seam = SyntheticImages(len(meta["class_names"]), meta["ipc"], meta["factor"])
    return seam.decode(seam.encode(real, meta["config"]["synthetic"]["init_resize"]))


# DC: two rounds an iteration, so a step makes two DDP backward passes and trains the network
# between them on every rank; init=real so that the start is the same set as DM's.
# NCFM, DANCE: factor 2, a pool of 2 networks built by the single-process run (POOL: its folder).
POOL = "{pool}"
METHODS = {
    "dm": [],
    "dc": ["method=dc", "method.outer_loop=2", "method.inner_loop=2", "init=real"],
    "ncfm": ["method=ncfm", "method.num_freqs=32", "pool.size=2", "pool.epochs=1",
             f"pool.root={POOL}", "pool.build=auto"],
    "dance": ["method=dance", "pool.size=2", "pool.epochs=1", f"pool.root={POOL}",
              "pool.build=auto"],  # NCFM's loop with SGD: the momentum rows move too
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_two_process_ddp_matches_one_process(tmp_path: Path, method: str, capfd) -> None:
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    args = [*TINY, *(a.replace(POOL, str(tmp_path / "pools")) for a in METHODS[method])]
    single = train(*args, f"hydra.run.dir={single_dir}")
    assert single.returncode == 0, single.stderr[-3000:]
    with other_ranks_as_processes() as ranks:  # rank 0 in this process, rank 1 its own
        ddp = train(*args, "trainer=ddp_cpu", "trainer.devices=2", f"hydra.run.dir={ddp_dir}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]

    # Two ranks really ran, and only rank 0 evaluated and reported.
    assert [rank.returncode for rank in ranks] == [0]
    rank_1 = capfd.readouterr()  # it writes to this process's file descriptors
    output = ddp.stdout + ddp.stderr + rank_1.out + rank_1.err
    assert "MEMBER: 2/2" in output, output[-3000:]
    assert output.count(f"{method} convnet") == 1, output[-3000:]
    assert (ddp_dir / "results.json").is_file()

    (one, meta_one), (two, meta_two) = load_synthetic(single_dir), load_synthetic(ddp_dir)
    assert meta_one["step"] == meta_two["step"] == STEPS
    images_one, images_two = one.tensors[0], two.tensors[0]
    # The steps moved the images, so equality below is not two untouched starting sets.
    start = starting_set(meta_one)
    assert torch.equal(meta_one["init_indices"], meta_two["init_indices"])
    assert (images_one - start).abs().max() > 1e-3
    torch.testing.assert_close(images_two, images_one, atol=1e-5, rtol=0)
    assert torch.equal(two.tensors[1], one.tensors[1])

    # The logged loss is the sum over all classes, whatever the number of ranks.
    losses_one, losses_two = logged_losses(single_dir), logged_losses(ddp_dir)
    assert len(losses_one) == len(losses_two) == STEPS
    torch.testing.assert_close(
        torch.tensor(losses_two), torch.tensor(losses_one), rtol=1e-5, atol=1e-5
    )
