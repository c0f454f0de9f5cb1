"""Bigger data and the GPU fast path: TinyImageNet end to end, bf16, torch.compile, no syncs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.fixtures import write_tinyimagenet
from helpers.inprocess import train
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader

from dmcondense.augment import DSA, FAMILIES
from dmcondense.data.normalise import Normaliser
from dmcondense.data.spec import DatasetSpec
from dmcondense.io import load_synthetic
from dmcondense.jobs import build
from dmcondense.methods.dm import DistributionMatching
from dmcondense.models.registry import build_model

# aten ops that make the host wait for the device (a value read back, or a data-dependent size).
SYNCING_OPS = {
    "aten._local_scalar_dense",
    "aten.item",
    "aten.nonzero",
    "aten.masked_select",
    "aten.is_nonzero",
    "aten.equal",
    "aten.unique_dim",
    "aten._unique2",
}


def test_tinyimagenet_runs_end_to_end_with_a_depth_4_convnet(tmp_path: Path) -> None:
    classes, ipc = 3, 1
    write_tinyimagenet(tmp_path / "data", num_classes=classes, per_class=4, val_per_class=2)
    run_dir = tmp_path / "run"
    result = train(
        "dataset=tinyimagenet",
        f"data_dir={tmp_path / 'data'}",
        f"dataset.num_classes={classes}",
        "dataset.download=false",
        *["model.width=8", "batch_real=2", "iterations=2", f"ipc={ipc}"],
        *["eval.epochs=1", "eval.num_models=1", f"hydra.run.dir={run_dir}"],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dataset, meta = load_synthetic(run_dir / "synthetic.pt")
    assert dataset.tensors[0].shape == (classes * ipc, 3, 64, 64)
    assert meta["class_names"] == [f"thing{i}" for i in range(classes)]
    # The saved config leaves depth to the image size; it builds the network the run used.
    cfg = OmegaConf.create(meta["config"])
    assert cfg.model.depth is None
    net = build.embedding_network(cfg, DatasetSpec.from_config(cfg.dataset))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and net.embed_dim == 8 * 4 * 4


def _module(**kwargs) -> DistributionMatching:
    net = build_model("convnet", 3, 4, 16, width=8)
    init = torch.randn(4 * 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return DistributionMatching(net, DSA(), init, 4, Normaliser([0.5] * 3, [0.25] * 3), **kwargs)


def _real(k: int = 4, n: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (k, n, 3, 16, 16), generator=g, dtype=torch.uint8)


def test_bf16_autocast_keeps_the_loss_and_the_synthetic_images_fp32() -> None:
    module, classes = _module(), torch.arange(4)
    full = module.step_loss(3, classes, _real())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert module.embed(module.draw_network(3), torch.randn(2, 3, 16, 16)).dtype == (
            torch.float32
        )
        half = module.step_loss(3, classes, _real())
    assert half.dtype == torch.float32
    half.backward()
    assert module.synthetic.dtype == module.synthetic.grad.dtype == torch.float32
    torch.testing.assert_close(half, full.detach(), rtol=0.1, atol=0)


def test_bf16_mixed_lightning_steps_leave_a_finite_fp32_set() -> None:
    module = _module()
    before = module.synthetic.detach().clone()
    real = _real()

    class Batches(L.LightningDataModule):
        def train_dataloader(self):
            # images: [rounds, classes, per_class, C, H, W], as the DataModule serves them
            steps = [
                {"step": s, "classes": torch.arange(4), "images": real[None]} for s in range(2)
            ]
            return DataLoader(steps, batch_size=None)

    trainer = L.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=Batches())
    assert module.synthetic.dtype == torch.float32
    assert torch.isfinite(module.synthetic).all() and not torch.equal(module.synthetic, before)


def test_compiled_embedding_compiles_once_per_pass_and_matches_eager() -> None:
    graphs: list[int] = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(len(example_inputs))
        return graph_module.forward

    compiled, eager = _module(compile=True, compile_backend=counting_backend), _module()
    classes, real = torch.arange(4), _real()
    for step in range(3):  # the network is re-drawn in place every step
        loss = compiled.step_loss(step, classes, real)
        loss.backward()
        torch.testing.assert_close(loss.detach(), eager.step_loss(step, classes, real).detach())
        assert len(graphs) == 2, graphs  # real pass (no grad) + synthetic pass, never again


class SyncFreeDSA(DSA):
    """DSA forced onto its GPU formulation, so a CPU test can check it."""

    def apply(self, x, params, index=None, sync_free=None):
        return super().apply(x, params, index, sync_free=True)


class OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_a_step_has_no_host_device_sync() -> None:
    module = _module()
    module.augment = SyncFreeDSA()
    classes, real = torch.tensor([1, 3]), _real(k=2)
    with OpRecorder() as recorder:
        module.step_loss(5, classes, real).backward()
    assert "aten.convolution" in recorder.ops  # the recorder sees the step
    assert not recorder.ops & SYNCING_OPS, recorder.ops & SYNCING_OPS
    # The CPU formulation does use nonzero (free there): the recorder would notice.
    module.augment = DSA()
    with OpRecorder() as recorder:
        module.step_loss(5, classes, real)
    assert "aten.nonzero" in recorder.ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sync_free_dsa_equals_the_per_family_path_values_and_gradients(dtype) -> None:
    dsa = DSA()
    params = dsa.sample(12, torch.Generator().manual_seed(2))
    params["family"] = torch.arange(12) % len(FAMILIES)  # every family, twice
    index = torch.randperm(24, generator=torch.Generator().manual_seed(3)) % 12
    x = torch.randn(24, 3, 12, 12, dtype=dtype, generator=torch.Generator().manual_seed(4))
    outputs, grads = [], []
    for sync_free in (True, False):
        leaf = x.clone().requires_grad_(True)
        out = dsa.apply(leaf, params, index, sync_free=sync_free)
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append(leaf.grad)
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0], grads[1])
    assert not torch.allclose(outputs[0], x)
