"""The GPU settings pinned on the CPU (docs/howto/gpu.md): the losses stay fp32 under mixed
precision, the precisions and compile settings a method cannot run under are refused in one
line, and what trainer.deterministic and tf32 set."""

from __future__ import annotations

import os
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from helpers.inprocess import tiny, train
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from dmcondense import CONF_DIR
from dmcondense.augment import NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.errors import ConfigError
from dmcondense.jobs import build
from dmcondense.jobs.checks import check_config
from dmcondense.methods.dm import DistributionMatching, class_means, matching_loss
from dmcondense.methods.gradient_matching import (
    DatasetCondensation,
    SiameseAugmentation,
    gradient_distance,
)
from dmcondense.methods.idm import ImprovedDistributionMatching
from dmcondense.methods.m3d import KernelMeanMatching, kernel_mmd2
from dmcondense.methods.mtt import trajectory_loss
from dmcondense.methods.ncfm import CharacteristicFunctionMatching, cf_loss
from dmcondense.methods.rded import RealisticDiverseSelection
from dmcondense.models.init import reset_parameters
from dmcondense.models.registry import build_model
from dmcondense.rng import generator

CLASSES, IPC, SIZE, REAL = 2, 4, 16, 16
NORMALISER = Normaliser([0.5] * 3, [0.25] * 3)


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# --- the matching functions under autocast -----------------------------------------------------


def feature_like(k: int, n: int, d: int, seed: int) -> torch.Tensor:
    """Non-negative features sharing a large common part, as a ConvNet's are: their distances
    are small next to their norms, where a bf16 kernel or matmul cancels."""
    g = torch.Generator().manual_seed(seed)
    common = torch.rand(1, 1, d, generator=g) + 1.0
    return common + 0.02 * torch.randn(k, n, d, generator=g)


def gradients_like(seed: int, kind: str):
    def distance(real: torch.Tensor, synthetic: torch.Tensor) -> torch.Tensor:
        # two "layers": a weight [k, out, rest] and a bias [k, out]
        r = [real.view(2, 4, -1), real[:, 0, :4]]
        s = [synthetic.view(2, 4, -1), synthetic[:, 0, :4]]
        return gradient_distance(r, s, kind).sum()

    return distance


FREQS = torch.randn(64, 32, generator=torch.Generator().manual_seed(9))
MATCHING = {
    # IDM matches with DM's function; DC and DSA with the gradient distance of their `distance`.
    "dm": lambda r, s: matching_loss(
        class_means(r.flatten(0, 1), 2), class_means(s.flatten(0, 1), 2)
    ),
    "m3d": lambda r, s: kernel_mmd2(r, s).sum(),
    "ncfm": lambda r, s: cf_loss(r, s, FREQS).sum(),
    # MTT (and DATM): the distance of the student's end to the expert's target, over its start's
    "mtt": lambda r, s: trajectory_loss(s.flatten(), r.flatten() * 0.5, r.flatten()),
    "dc-ours": gradients_like(0, "ours"),
    "dc-mse": gradients_like(0, "mse"),
    "dc-cos": gradients_like(0, "cos"),
}


@pytest.mark.parametrize("name", list(MATCHING))
def test_each_matching_function_gives_the_same_value_and_gradient_under_bf16_autocast(
    name: str,
) -> None:
    real = feature_like(2, 8, 32, seed=1)
    results = []
    for autocast in (False, True):
        synthetic = feature_like(2, 8, 32, seed=2).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = MATCHING[name](real, synthetic)
        loss.backward()
        results.append((loss.detach(), synthetic.grad))
    (loss, grad), (loss_autocast, grad_autocast) = results
    assert loss_autocast.dtype == torch.float32
    torch.testing.assert_close(loss_autocast, loss, rtol=0, atol=0)
    torch.testing.assert_close(grad_autocast, grad, rtol=0, atol=0)


def test_the_matching_functions_run_with_ieee_fp32_matmuls_whatever_tf32_says() -> None:
    from dmcondense.methods.base import full_precision

    seen = []
    probe = full_precision(lambda: seen.append(torch.backends.cuda.matmul.allow_tf32))
    before = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True  # what tf32=true sets
        probe()
        assert torch.backends.cuda.matmul.allow_tf32 is True  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert seen == [False]


def random_state(net: torch.nn.Module, seed: int) -> dict:
    reset_parameters(net, torch.Generator().manual_seed(seed))
    return {k: v.clone() for k, v in net.state_dict().items()}


def make(name: str, init: torch.Tensor, **knobs):
    net = build_model("convnet", 3, CLASSES, SIZE, width=8, depth=2)
    common = {"lr_img": 0.1, "seed": 1, **knobs}
    args = (net, NoAugment(), init, CLASSES, NORMALISER)
    if name == "ncfm":
        pool = [(random_state(net, 1), random_state(net, 2))]
        common = {"num_freqs": 256, "optimizer": "sgd", "calibration_weight": 0.0, **common}
        return CharacteristicFunctionMatching(*args, pool=pool, **common)
    if name == "rded":
        pool = [(random_state(net, 1), random_state(net, 2))]
        return RealisticDiverseSelection(*args, pool=pool, num_crop=2, **common)
    if name == "idm":
        common = {"queue_data": "step_batches", "model_train_steps": 1, "batch_train": 4, **common}
    if name in ("dc", "dsa"):
        common = {"outer_loop": 2, "inner_loop": 1, **common}
    classes = {"dm": DistributionMatching, "m3d": KernelMeanMatching, "dc": DatasetCondensation,
               "dsa": SiameseAugmentation, "idm": ImprovedDistributionMatching}  # fmt: skip
    return classes[name](*args, **common)


def test_ncfms_sampling_network_makes_the_same_frequencies_under_bf16_autocast() -> None:
    module = make("ncfm", torch.zeros(CLASSES * IPC, 3, SIZE, SIZE), sampling_net=True)
    module.sampler.train()
    made = []
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            made.append(module.frequencies(generator(0, "freqs", 3), module.embed_net.embed_dim))
    assert made[1].dtype == torch.float32
    torch.testing.assert_close(made[1], made[0], rtol=0, atol=0)


# --- one end-to-end step under bf16-mixed -----------------------------------------------------

# The step's image update under bf16-mixed against 32-true, as a cosine: the network runs in bf16
# by design and moves the update a little; a loss computed in bf16 (M3D's kernel before the
# losses were kept fp32) moved it by an order of magnitude more on these alike images.
STEP_COSINE_BOUND = 0.99


def alike_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Real uint8 [2 rounds, classes, REAL, 3, H, W] and normalised initial images, all near one
    picture a class: features close together, the hard case for a low-precision loss."""
    g = torch.Generator().manual_seed(5)
    picture = torch.rand(CLASSES, 1, 3, SIZE, SIZE, generator=g) * 0.5 + 0.25
    real = picture + 0.02 * torch.randn(CLASSES, REAL, 3, SIZE, SIZE, generator=g)
    init = (picture + 0.02 * torch.randn(CLASSES, IPC, 3, SIZE, SIZE, generator=g)).flatten(0, 1)
    real = (real.clamp(0, 1) * 255).round().to(torch.uint8)
    return torch.stack([real, real.flip(1)]), (init - 0.5) / 0.25  # normalised


def image_update(name: str, precision: str) -> torch.Tensor:
    real, init = alike_images()
    module = make(name, init)
    before = module.synthetic.detach().clone()

    class OneStep(L.LightningDataModule):
        def train_dataloader(self):
            images = real[: module.real_batches_per_step]
            batch = {"step": 0, "classes": torch.arange(CLASSES), "images": images}
            return DataLoader([batch], batch_size=None)

    L.Trainer(accelerator="cpu", precision=precision, max_steps=1, logger=False,
              enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, datamodule=OneStep())  # fmt: skip
    return (module.synthetic.detach() - before).flatten()


@pytest.mark.parametrize("name", ["dm", "m3d", "ncfm"])
def test_a_bf16_mixed_step_stays_within_the_bound_of_fp32(name: str) -> None:
    fp32, bf16 = image_update(name, "32-true"), image_update(name, "bf16-mixed")
    assert fp32.abs().sum() > 0
    cosine = torch.nn.functional.cosine_similarity(fp32, bf16, dim=0)
    assert cosine >= STEP_COSINE_BOUND, float(cosine)


# --- precisions, compile ----------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "64-true", "transformer-engine"])
def test_true_precisions_are_refused_in_one_line(precision: str) -> None:
    with pytest.raises(ConfigError, match=f"trainer.precision={precision} is not supported"):
        check_config(composed(f"trainer.precision={precision}"))


def test_a_true_precision_run_stops_before_it_starts_with_one_line(tmp_path) -> None:
    result = train(*tiny("trainer.precision=bf16-true", f"hydra.run.dir={tmp_path}"))
    assert result.returncode == 2
    assert len(result.error_lines) == 1 and "use 32-true, bf16-mixed or 16-mixed" in result.stderr
    assert not (tmp_path / "synthetic.pt").exists()


@pytest.mark.parametrize("precision", ["32-true", "32", "bf16-mixed", "bf16", "16-mixed", "16"])
def test_mixed_and_fp32_precisions_pass_the_checks(precision: str) -> None:
    check_config(composed("trainer=gpu", f"trainer.precision={precision}"))


@pytest.mark.parametrize(
    ("name", "knobs", "why"),
    [
        ("dc", {}, "its inner loop trains the network"),
        ("dsa", {}, "its inner loop trains the network"),
        ("idm", {}, "its queued networks train"),
        ("ncfm", {"sampling_net": True}, "its sampling network steps on the pixels' scaled"),
    ],
)
def test_16_mixed_is_refused_in_one_line_where_a_backward_bypasses_the_scaler(
    name: str, knobs: dict, why: str
) -> None:
    module = make(name, torch.zeros(CLASSES * IPC, 3, SIZE, SIZE), **knobs)
    for precision in ("32-true", "bf16-mixed"):
        module.trainer = SimpleNamespace(precision=precision)
        module.check_precision()
    module.trainer = SimpleNamespace(precision="16-mixed")
    with pytest.raises(ConfigError, match=f"16-mixed does not work for method={name}: {why}"):
        module.check_precision()


@pytest.mark.parametrize("name", ["dm", "m3d", "ncfm"])
def test_16_mixed_runs_where_every_backward_goes_through_the_scaler(name: str) -> None:
    module = make(name, torch.zeros(CLASSES * IPC, 3, SIZE, SIZE))
    module.trainer = SimpleNamespace(precision="16-mixed")
    module.check_precision()


@pytest.mark.parametrize(
    ("name", "why"),
    [("dc", "double backward"), ("dsa", "double backward"), ("idm", "queued"),
     ("rded", "no step")],
)  # fmt: skip
def test_compile_is_refused_in_one_line_where_it_would_do_nothing(name: str, why: str) -> None:
    init = torch.zeros(CLASSES * IPC, 3, SIZE, SIZE)
    with pytest.raises(ConfigError, match=f"compile=true does not apply to method={name}: .*{why}"):
        make(name, init, compile=True)
    make(name, init, compile=False)


def test_ncfm_compiles_its_embedding_once_though_its_weights_change_every_step() -> None:
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(len(example_inputs))
        return graph_module.forward

    init = torch.randn(CLASSES * IPC, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    compiled = make("ncfm", init, compile=True, compile_backend=counting_backend)
    eager = make("ncfm", init)
    with torch.no_grad():
        for step in range(3):  # a new interpolation of the pool's weights, loaded in place
            features = compiled.embed(compiled.pool_networks(step)[0], init)
            torch.testing.assert_close(features, eager.embed(eager.pool_networks(step)[0], init))
    assert len(graphs) == 1, graphs


# --- deterministic and TF32 -------------------------------------------------------------------


@pytest.fixture
def torch_flags(monkeypatch):
    """Records torch.use_deterministic_algorithms; puts the flags set_numerics sets back after."""
    calls = []
    monkeypatch.setattr(
        torch,
        "use_deterministic_algorithms",
        lambda mode, warn_only=False: calls.append((mode, warn_only)),
    )
    workspace = os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
             torch.backends.cuda.matmul.allow_tf32, torch.backends.fp32_precision,
             torch.backends.mkldnn.matmul.fp32_precision)  # fmt: skip
    yield calls
    torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic = saved[:2]
    torch.backends.cuda.matmul.allow_tf32 = saved[2]
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)  # set by set_numerics and by Lightning
    if workspace is not None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace
    # The CPU's numerics are never touched (a CPU result would move).
    assert (torch.backends.fp32_precision, torch.backends.mkldnn.matmul.fp32_precision) == saved[3:]


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_deterministic_true_on_a_gpu_composes_and_means_warn_with_cudnn_deterministic(
    trainer: str, torch_flags
) -> None:
    cfg = composed(f"trainer={trainer}", "trainer.deterministic=true")
    check_config(cfg)
    assert build.deterministic_mode(cfg) == "warn"
    build.set_numerics(cfg)
    assert torch_flags == [(True, True)]
    assert torch.backends.cudnn.deterministic is True
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_the_gpu_trainers_default_to_nondeterministic_without_autotuning(torch_flags) -> None:
    for trainer in ("gpu", "ddp"):
        cfg = composed(f"trainer={trainer}")
        assert cfg.trainer.deterministic is False and cfg.trainer.benchmark is False
        build.set_numerics(cfg)
        assert torch.backends.cudnn.deterministic is False
    assert torch_flags == [(False, False)] * 2 and "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_deterministic_true_on_the_cpu_stays_strict_through_lightning(
    torch_flags, tmp_path
) -> None:
    cfg = composed("trainer=cpu", "trainer.deterministic=true", "~logger")
    assert build.deterministic_mode(cfg) is True
    trainer = build.trainer(cfg, tmp_path, [])
    assert isinstance(trainer, L.Trainer)
    assert torch_flags == [(True, False), (True, False)]  # ours, then Lightning's


def test_an_unknown_deterministic_value_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="trainer.deterministic must be true, false or warn"):
        check_config(composed("trainer=gpu", "trainer.deterministic=always"))


def test_tf32_is_on_by_default_and_tf32_false_gives_ieee_fp32_networks(torch_flags) -> None:
    for overrides, tf32 in (((), True), (("tf32=false",), False), (("tf32=true",), True)):
        build.set_numerics(composed("trainer=gpu", *overrides))
        assert torch.backends.cudnn.allow_tf32 is torch.backends.cuda.matmul.allow_tf32 is tf32
