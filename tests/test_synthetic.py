"""The seam between stored pixels and training images (`SyntheticImages`): the identity today,
and every consumer (the method's step, evaluation, pictures, export, load_synthetic) asks it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dmcondense.augment import NoAugment
from dmcondense.data.normalise import Normaliser
from dmcondense.export import export_imagefolder
from dmcondense.io import load_synthetic, save_synthetic
from dmcondense.methods.dm import DistributionMatching
from dmcondense.models.registry import build_model
from dmcondense.synthetic import SyntheticImages

NORMALISER = Normaliser([0.5], [0.25])


def stored(num_classes: int = 3, ipc: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(num_classes * ipc, 1, 6, 6, generator=g)
    return images, torch.arange(num_classes).repeat_interleave(ipc)


def test_identity_decodes_each_stored_image_to_itself() -> None:
    images, labels = stored()
    seam = SyntheticImages(num_classes=3, ipc=2)
    assert seam.decode(images) is images
    assert seam.decode_labels(labels) is labels
    assert seam.decoded_per_class == 2
    per_class = seam.per_class(images)
    assert per_class.shape == (3, 2, 1, 6, 6)
    assert torch.equal(per_class[1, 0], images[2])  # class-major
    record = {"class_names": ["a", "b", "c"], "ipc": 2}
    assert SyntheticImages.from_record(record).decoded_per_class == 2


def flip_decode(monkeypatch) -> None:
    """A stand-in decoder (a mirror image) that no consumer could reproduce by accident."""
    monkeypatch.setattr(SyntheticImages, "decode", lambda self, stored: stored.flip(-1))


def test_load_synthetic_and_export_give_the_decoded_images(monkeypatch, tmp_path) -> None:
    images, labels = stored()
    record = {"images": images, "labels": labels, "class_names": ["a", "b", "c"],
              "mean": [0.5], "std": [0.25], "ipc": 2, "step": 0}  # fmt: skip
    save_synthetic(tmp_path / "synthetic.pt", record)
    flip_decode(monkeypatch)

    dataset, meta = load_synthetic(tmp_path)
    assert torch.equal(dataset.tensors[0], images.flip(-1)) and meta["ipc"] == 2

    out = export_imagefolder(tmp_path, tmp_path / "export")
    with Image.open(out / "b" / "1.png") as png:
        written = np.array(png)
    assert np.array_equal(written, NORMALISER.to_uint8(images.flip(-1))[3, 0].numpy())


def test_the_method_matches_and_shows_the_decoded_images(monkeypatch) -> None:
    images, _ = stored()
    module = DistributionMatching(build_model("convnet", 1, 3, 6, width=4, depth=1), NoAugment(),
                                  images, 3, NORMALISER)  # fmt: skip
    real = torch.randint(0, 256, (3, 4, 1, 6, 6), generator=torch.Generator().manual_seed(1),
                         dtype=torch.uint8)  # fmt: skip
    plain = module.step_loss(0, torch.arange(3), real).item()
    flip_decode(monkeypatch)
    decoded, labels = module.decoded()
    assert torch.equal(decoded, images.flip(-1)) and torch.equal(labels, module.labels)
    assert torch.equal(module.denormalised(), NORMALISER.to_unit(images.flip(-1)))
    assert module.step_loss(0, torch.arange(3), real).item() != pytest.approx(plain)
    assert torch.equal(module.synthetic.detach(), images)  # what is stored stays stored
