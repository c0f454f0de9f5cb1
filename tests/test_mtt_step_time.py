"""benchmarks/mtt_step_time.py: ours and a stub of the authors' distill.py (and, --method datm,
of their distill/DATM.py) timed side by side, iteration by iteration, in wall and CPU seconds,
the first iteration of each run left out."""

from __future__ import annotations

import json

import pytest
from test_parity import REPO, WIDTH, load_script, ours_in_process, write_mtt_stub
from test_parity_datm import write_datm_stub

from dmcondense.io import read_synthetic

SCRIPT = REPO / "benchmarks" / "mtt_step_time.py"
STEPS = 3


@pytest.fixture(scope="module")
def timed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mtt_step_time")
    official = write_mtt_stub(root / "mtt-distillation")
    script = load_script(SCRIPT)
    script.parity.run = ours_in_process(script.parity.run)  # the experts job in this process
    return script.main([
        "--official", str(official), "--dataset", "mnist_sample", "--ipc", "1",
        "--steps", str(STEPS), "--width", str(WIDTH), "--experts-size", "1",
        "--experts-epochs", "2", "--syn-steps", "2", "--expert-epochs", "1",
        "--max-start-epoch", "1", "--rounds", "1",
        "--scratch", str(root / "scratch"), "--data-cache", str(root / "cache"),
    ])  # fmt: skip


def test_each_side_is_timed_by_iteration_first_left_out(timed):
    (ours,), (theirs,) = timed["rounds"]["ours"], timed["rounds"]["theirs"]
    # ours: STEPS iterations, timed from the end of the one before; theirs: STEPS + 1 updates
    assert len(ours["wall"]) == len(ours["cpu"]) == STEPS - 1
    assert len(theirs["wall"]) == len(theirs["cpu"]) == STEPS
    assert min(ours["wall"] + theirs["wall"]) > 0
    assert ours["rss_growth_mib"] >= 0 and theirs["rss_growth_mib"] >= 0


def test_ratios_are_of_the_medians_and_the_least_cpu_time(timed):
    sides, (ours,) = timed["sides"], timed["rounds"]["ours"]
    assert sides["ours"]["cpu_min"] == min(ours["cpu"]) <= sides["ours"]["cpu"]
    for key in ("wall", "cpu", "cpu_min"):
        assert timed["ratio"][key] == pytest.approx(sides["ours"][key] / sides["theirs"][key])


def test_too_few_steps_is_one_line(tmp_path):
    script = load_script(SCRIPT)
    with pytest.raises(script.parity.UsageError, match="--steps 3 or more"):
        script.main(["--official", str(tmp_path), "--steps", "2"])


@pytest.fixture(scope="module")
def datm_timed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("datm_step_time")
    official = write_datm_stub(root / "DATM")
    script = load_script(SCRIPT)
    script.parity.run = ours_in_process(script.parity.run)
    result = script.main([
        "--method", "datm", "--official", str(official), "--dataset", "mnist_sample",
        "--ipc", "1", "--steps", str(STEPS), "--width", str(WIDTH), "--experts-size", "1",
        "--experts-epochs", "2", "--syn-steps", "2", "--expert-epochs", "1",
        "--max-start-epoch", "1", "--lr-y", "3.0", "--threshold", "10", "--rounds", "1",
        "--scratch", str(root / "scratch"), "--data-cache", str(root / "cache"),
    ])  # fmt: skip
    record = json.loads((root / "scratch" / "official_datm" / "stub_record.json").read_text())
    ours = read_synthetic(root / "scratch" / "ours_0")["config"]
    return {"result": result, "theirs": record["args"], "ours": ours}


def test_datm_runs_both_sides_with_its_own_flags_on_gsam_experts(datm_timed):
    theirs, ours = datm_timed["theirs"], datm_timed["ours"]
    assert ours["method"]["_target_"].endswith("DifficultyAlignedTrajectoryMatching")
    assert ours["experts"]["optimizer"] == "gsam"  # --expert-recipe's default, both sides'
    assert (ours["method"]["lr_y"], ours["method"]["threshold"]) == (3.0, 10.0)
    assert (theirs["lr_y"], theirs["threshold"], theirs["syn_steps"]) == (3.0, 10.0, 2)
    assert theirs["pix_init"] == "samples_predicted_correctly"  # DATM's default init, both sides
    assert ours["init"] == "correct"


def test_datm_each_side_is_timed_by_iteration_first_left_out(datm_timed):
    (ours,), (theirs,) = (datm_timed["result"]["rounds"][side] for side in ("ours", "theirs"))
    # both sides make STEPS updates (their Iteration is STEPS - 1); the first is left out
    assert len(ours["wall"]) == len(theirs["wall"]) == len(theirs["cpu"]) == STEPS - 1
    assert min(ours["wall"] + theirs["wall"]) > 0 and theirs["rss_growth_mib"] >= 0
