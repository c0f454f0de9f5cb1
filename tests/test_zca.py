"""ZCA whitening (dataset.zca=true): the fit is the hand-computed one, it inverts, and a saved
set carries it, so export and pictures unwhiten to the pixels the set was made from."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers.inprocess import tiny, train
from PIL import Image

from dmcondense.data.normalise import Normaliser
from dmcondense.data.zca import ZCA, ZCANormaliser, normaliser_of
from dmcondense.export import export_imagefolder


def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (50, 2, 2, 2), generator=g, dtype=torch.uint8)


def test_the_fit_is_the_hand_computed_whitening_and_it_inverts() -> None:
    x = images()
    zca = ZCA.fit(x, eps=0.1)
    flat = x.reshape(50, -1).double() / 255
    centred = flat - flat.mean(0)
    cov = centred.T @ centred / 49
    s, u = torch.linalg.eigh(cov)
    matrix = u @ torch.diag((s + 0.1).rsqrt()) @ u.T
    expected = (centred @ matrix).float().reshape(x.shape)
    assert torch.allclose(zca.whiten(x.float() / 255), expected, atol=1e-5)
    # whitened covariance: U diag(S / (S + eps)) U^T (kornia's ZCAWhitening(eps) does the same)
    white = expected.reshape(50, -1).double()
    assert torch.allclose(white.T @ white / 49, u @ torch.diag(s / (s + 0.1)) @ u.T, atol=1e-5)
    assert torch.allclose(zca.unwhiten(zca.whiten(x.float() / 255)), x.float() / 255, atol=1e-5)


def test_a_saved_whitening_is_the_fitted_one_to_the_bit() -> None:
    zca = ZCA.fit(images())
    again = ZCA.from_state(zca.state_dict())
    x = images().float() / 255
    assert torch.equal(zca.whiten(x), again.whiten(x))


def test_export_unwhitens_a_whitened_set(tmp_path: Path) -> None:
    x = images()[:4]
    normaliser = ZCANormaliser([0.5, 0.5], [0.2, 0.2], ZCA.fit(images()))
    record = {
        "format": 1, "images": normaliser.to_input(x), "labels": torch.tensor([0, 0, 1, 1]),
        "class_names": ["a", "b"], "mean": [0.5, 0.5], "std": [0.2, 0.2], "ipc": 2,
        "zca": normaliser.zca.state_dict(),
    }  # fmt: skip
    out = export_imagefolder(record, tmp_path / "export")
    first = torch.tensor(list(Image.open(out / "a" / "0.png").getdata()))  # [H W, C]
    assert torch.equal(first.T.reshape(2, 2, 2).to(torch.uint8), x[0])
    assert type(normaliser_of([0.5], [0.2], None)) is Normaliser  # a set without ZCA


def test_unit_pixels_and_zca_stop_in_one_line(tmp_path: Path) -> None:
    result = train(*tiny("method=m3d", "dataset.zca=true", f"hydra.run.dir={tmp_path}"))
    assert result.returncode == 2
    assert result.error_lines == [
        "error: ZCA-whitened input is not a per-channel normalisation; method.pixels=unit and "
        "dataset.zca=true do not go together"
    ]
