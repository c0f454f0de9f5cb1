"""The Python API (`dmcondense.condense`, `evaluate`, `train_on`) is the command line underneath:
the same config, checks, job and run folder; a bad input raises the one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.inprocess import TINY, evaluate, train

import dmcondense
from dmcondense.errors import ConfigError

ARGS = ["dataset=mnist_sample", "method=dm", "ipc=2", *TINY]
EVAL = ["eval.epochs=1", "eval.num_models=1", "model.width=8"]


def test_condense_then_evaluate_gives_what_the_command_line_gives(tmp_path: Path) -> None:
    run = dmcondense.condense("mnist_sample", "dm", 2, overrides=TINY, folder=tmp_path / "api")
    cli = train(*ARGS, f"hydra.run.dir={tmp_path / 'cli'}")
    assert cli.returncode == 0, cli.stderr
    assert run.folder == tmp_path / "api"
    ours, theirs = (
        torch.load(run.folder / "synthetic.pt"),
        torch.load(tmp_path / "cli/synthetic.pt"),
    )
    assert torch.equal(ours["images"], theirs["images"])
    cli_results = (tmp_path / "cli/results.json").read_text()
    assert run.results["results"] == json.loads(cli_results)["results"]
    dataset, meta = run.synthetic
    assert torch.equal(dataset.tensors[1], ours["labels"]) and meta["ipc"] == 2

    scored = dmcondense.evaluate(run, overrides=EVAL, folder=tmp_path / "api_eval")
    cli_eval = evaluate(f"condensed={tmp_path / 'cli'}", *EVAL,
                        f"hydra.run.dir={tmp_path / 'cli_eval'}")  # fmt: skip
    assert cli_eval.returncode == 0, cli_eval.stderr
    cli_scored = json.loads((tmp_path / "cli_eval/results.json").read_text())
    assert scored.results["results"] == cli_scored["results"]

    net = dmcondense.train_on(run, "convnet", epochs=1, width=8)
    assert not net.training
    assert net(dataset.tensors[0][:3]).shape == (3, 10)


def test_a_bad_key_raises_one_config_error_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        dmcondense.condense(overrides=["iteratons=3"], folder=tmp_path / "run")
    message = str(caught.value)
    assert message.startswith("unknown key 'iteratons' (did you mean 'iterations'?)")
    assert "\n" not in message
    assert not (tmp_path / "run").exists()


def test_a_config_check_raises_its_line_and_leaves_no_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        dmcondense.condense(ipc=0, overrides=TINY, folder=tmp_path / "run")
    assert "ipc" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()
