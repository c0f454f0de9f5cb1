"""Config composition in process (Hydra's compose), and the command-line checks before Hydra."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from dmcondense.cli import CONF_DIR, check_command_line, expand_short_forms, groups
from dmcondense.errors import ConfigError
from dmcondense.jobs import build
from dmcondense.jobs.checks import check_config
from dmcondense.methods.base import CondensationMethod
from dmcondense.methods.dm import DistributionMatching


def composed(*overrides: str, config_name: str = "config"):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def test_the_default_method_is_dm_and_method_dm_composes_the_same_config() -> None:
    default, explicit = composed(), composed("method=dm")
    assert OmegaConf.to_container(default) == OmegaConf.to_container(explicit)
    method_class = get_class(default.method._target_)
    assert method_class is DistributionMatching and issubclass(method_class, CondensationMethod)
    assert "method" in groups() and "dm" in groups()["method"]


def test_every_method_option_names_a_condensation_method() -> None:
    for option in groups()["method"]:
        target = get_class(composed(f"method={option}").method._target_)
        assert issubclass(target, CondensationMethod) and target.name != CondensationMethod.name


@pytest.mark.parametrize(("typed", "hint"), [("nope", ""), ("dmm", " (did you mean 'dm'?)")])
def test_unknown_method_gets_one_line_listing_the_methods(capsys, typed: str, hint: str) -> None:
    with pytest.raises(SystemExit) as stop:
        check_command_line([f"method={typed}"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    methods = ", ".join(groups()["method"])
    assert line == f"error: unknown method '{typed}'{hint}; choose one of: {methods}"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_and_passes_the_checks(name: str) -> None:
    cfg = composed(f"experiment={name}")
    check_config(cfg)  # raises ConfigError on a bad value
    assert cfg.dataset.name in name and cfg.eval.num_models == 20
    scoring = build.architectures(cfg)[cfg.eval.models[0]]  # convnet, or RDED's convnet_bn
    assert scoring["width"] == cfg.model.width == 128


def test_evaluation_architectures_have_explicit_knobs_that_follow_the_model_group() -> None:
    cfg = composed("eval.models=[convnet,convnet_bn,mlp]", "model.width=16",
                   "model.norm=layernorm")  # fmt: skip
    knobs = build.architectures(cfg)
    assert knobs["convnet"] == {"width": 16, "depth": None, "norm": "layernorm",
                                "activation": "relu", "pooling": "avgpool"}  # fmt: skip
    assert knobs["convnet_bn"] == {"width": 16, "depth": None, "activation": "relu",
                                   "pooling": "avgpool"}  # fmt: skip
    assert knobs["mlp"] == {}
    # model=convnet_bn has no norm knob: the evaluated ConvNet keeps its instance norm.
    assert build.architectures(composed("model=convnet_bn"))["convnet"]["norm"] == "instancenorm"
    with pytest.raises(ConfigError, match="unknown evaluation model 'resnet'"):
        build.architectures(composed("eval.models=[resnet]"))


def test_short_forms_path_and_strict_reach_the_dataset_group() -> None:
    argv = expand_short_forms(["dataset=imagefolder", "path=/data/pets", "strict=true", "ipc=1"])
    assert argv == ["dataset=imagefolder", "dataset.path=/data/pets", "dataset.strict=true",
                    "ipc=1"]  # fmt: skip
    cfg = composed(*argv)
    assert cfg.dataset.path == "/data/pets" and cfg.dataset.strict is True
    assert "path" not in cfg and "strict" not in cfg
    assert expand_short_forms(["hydra.run.dir=x/path=y"]) == ["hydra.run.dir=x/path=y"]


def test_checks_read_the_config_without_editing_it(tmp_path) -> None:
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
    cfg = composed("dataset=imagefolder", f"dataset.path={tmp_path}")
    before = OmegaConf.to_yaml(cfg)
    check_config(cfg)
    assert OmegaConf.to_yaml(cfg) == before and OmegaConf.is_missing(cfg.dataset, "num_classes")


def test_the_evaluate_config_extends_the_train_config() -> None:
    cfg = composed("baseline=random", config_name="evaluate")
    assert cfg.baseline == "random" and cfg.method._target_.endswith("DistributionMatching")
    assert cfg.eval.backend == "auto"


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere(
    tmp_path, monkeypatch, terminal: bool
) -> None:
    from lightning.pytorch.callbacks import TQDMProgressBar

    from dmcondense.progress import StepLines

    monkeypatch.setattr(build, "progress_on_terminal", lambda: terminal)
    trainer = build.trainer(composed("~logger"), tmp_path, [])
    bars = [c for c in trainer.callbacks if isinstance(c, TQDMProgressBar)]
    lines = [c for c in trainer.callbacks if isinstance(c, StepLines)]
    assert (len(bars), len(lines)) == ((1, 0) if terminal else (0, 1))
    assert (trainer.progress_bar_callback is not None) == terminal


def test_evaluation_dsa_draws_one_family_a_batch_by_default_as_the_reference() -> None:
    default = build.protocols(composed(), spec=None)["convnet"]
    assert default.augment == "dsa"
    per_image = build.protocols(composed("eval.dsa_family=image"), spec=None)["convnet"]
    assert per_image.augment == "dsa_per_image"
    assert build.protocols(composed("eval.augment=false"), spec=None)["convnet"].augment == "none"
    with pytest.raises(ConfigError, match="unknown eval.dsa_family 'each'"):
        build.check_evaluation(composed("eval.dsa_family=each"))
    assert default.dsa_strategy == "color_crop_cutout_flip_scale_rotate"
    no_flip = build.protocols(composed("eval.dsa_strategy=crop_rotate"), spec=None)["convnet"]
    assert no_flip.dsa_strategy == "crop_rotate"
    with pytest.raises(ConfigError, match="eval.dsa_strategy: unknown DSA strategy 'crop_blur'"):
        build.check_evaluation(composed("eval.dsa_strategy=crop_blur"))
