"""Differentiable Siamese augmentation: Siamese sharing, per-family behaviour, gradients, RNG."""

from __future__ import annotations

import pytest
import torch

from dmcondense.augment import DSA, FAMILIES, NoAugment


def _gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _forced(family: str, n: int = 1, dtype: torch.dtype = torch.float32) -> dict:
    """`n` groups of `family` with clearly non-identity parameters (no randomness involved)."""
    full = lambda v: torch.full((n,), v, dtype=dtype)  # noqa: E731
    pair = lambda a, b: torch.tensor([[a, b]], dtype=dtype).expand(n, 2).clone()  # noqa: E731
    return {
        "family": torch.full((n,), FAMILIES.index(family), dtype=torch.long),
        "brightness": full(0.3),
        "saturation": full(1.6),
        "contrast": full(0.7),
        "crop": pair(0.9, 0.2),
        "cutout": pair(0.3, 0.6),
        "flip": torch.ones(n, dtype=torch.bool),
        "scale": pair(1.15, 0.87),
        "rotate": full(11.0),
    }


def test_unknown_strategy_raises_and_names_valid_families() -> None:
    with pytest.raises(ValueError, match="rotate"):
        DSA("color_blur")
    with pytest.raises(ValueError):
        DSA("")
    assert DSA("crop_flip").families == ("crop", "flip")


@pytest.mark.parametrize("family", FAMILIES)
def test_siamese_group_gives_identical_transform(family: str) -> None:
    dsa = DSA()
    torch.manual_seed(0)  # test data only; the augmentation itself never reads global RNG
    a, b = torch.randn(3, 3, 8, 8), torch.randn(2, 3, 8, 8)
    params = _forced(family)
    zeros = lambda k: torch.zeros(k, dtype=torch.long)  # noqa: E731
    together = dsa.apply(torch.cat([a, b]), params, index=zeros(5))
    apart = torch.cat([dsa.apply(a, params, index=zeros(3)), dsa.apply(b, params, index=zeros(2))])
    torch.testing.assert_close(together, apart)
    # Copies of one image inside a group come out identical...
    copies = dsa.apply(a[:1].expand(4, -1, -1, -1), params, index=zeros(4))
    assert (copies == copies[:1]).all()
    # ...and the transform does something.
    assert not torch.allclose(together, torch.cat([a, b]), atol=1e-3)


def test_groups_with_mixed_families_match_per_group_application() -> None:
    dsa = DSA()
    params = dsa.sample(6, _gen(1))
    params["family"] = torch.arange(6)  # one group per family, whatever was drawn
    torch.manual_seed(1)
    x = torch.randn(12, 3, 16, 16)
    index = torch.tensor([5, 0, 3, 1, 1, 4, 2, 0, 5, 3, 2, 4])
    out = dsa.apply(x, params, index=index)
    for i in range(len(x)):  # slow reference: one image at a time with its group's row
        row = {k: v[index[i] : index[i] + 1] for k, v in params.items()}
        torch.testing.assert_close(out[i : i + 1], dsa.apply(x[i : i + 1], row))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_passes_gradcheck(family: str) -> None:
    dsa = DSA()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=_gen(2), requires_grad=True)
    params = _forced(family, n=2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params), (x,))


def test_mixed_families_pass_gradcheck_and_leave_input_untouched() -> None:
    dsa = DSA()
    params = dsa.sample(6, _gen(3))
    params["family"] = torch.arange(6)
    x = torch.randn(6, 1, 6, 6, dtype=torch.float64, generator=_gen(4), requires_grad=True)
    before = x.detach().clone()
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, params), (x,))
    assert torch.equal(x.detach(), before)


def test_per_image_mode_transforms_copies_differently() -> None:
    image = torch.randn(1, 3, 16, 16, generator=_gen(5))
    copies = image.expand(32, -1, -1, -1)

    def distinct(out: torch.Tensor) -> int:
        return torch.unique(out.flatten(1), dim=0).shape[0]

    # Continuous parameters: every copy its own result.
    assert distinct(DSA("color_scale_rotate")(copies, _gen(6))) == 32
    # Flip has two outcomes and crop a few dozen, so some repeats are expected here.
    assert distinct(DSA()(copies, _gen(6))) >= 16


def test_same_seed_same_draw_and_output_different_seed_different() -> None:
    dsa = DSA()
    x = torch.randn(16, 3, 8, 8, generator=_gen(7))
    p1, p2, p3 = dsa.sample(16, _gen(8)), dsa.sample(16, _gen(8)), dsa.sample(16, _gen(9))
    for key in p1:
        assert torch.equal(p1[key], p2[key]), key
    assert torch.equal(dsa.apply(x, p1), dsa.apply(x, p2))
    assert not torch.equal(p1["rotate"], p3["rotate"])
    assert not torch.equal(dsa.apply(x, p1), dsa.apply(x, p3))


def test_randomness_consumed_depends_only_on_n() -> None:
    g_full, g_one = _gen(10), _gen(10)
    DSA().sample(7, g_full)
    DSA("flip").sample(7, g_one)
    assert torch.equal(g_full.get_state(), g_one.get_state())


def test_family_choice_roughly_uniform_and_ranges_respected() -> None:
    n = 6000
    p = DSA().sample(n, _gen(11))
    counts = torch.bincount(p["family"], minlength=6)
    assert ((counts - n / 6).abs() < 150).all(), counts  # about 5 standard deviations
    assert p["rotate"].abs().max() <= 15.0 and p["rotate"].abs().max() > 14.5
    assert p["scale"].min() >= 1 / 1.2 - 1e-6 and p["scale"].max() <= 1.2 + 1e-6
    assert p["scale"].min() < 0.85 and p["scale"].max() > 1.18
    assert p["brightness"].abs().max() <= 0.5
    assert 0.0 <= p["saturation"].min() and p["saturation"].max() <= 2.0
    assert 0.5 <= p["contrast"].min() and p["contrast"].max() <= 1.5
    assert 0.4 < p["flip"].float().mean() < 0.6
    only = DSA("crop_flip").sample(600, _gen(12))["family"]
    assert set(only.tolist()) == {FAMILIES.index("crop"), FAMILIES.index("flip")}


def test_crop_is_an_integer_shift_within_an_eighth_of_the_side() -> None:
    dsa = DSA("crop")
    h = w = 32
    x = (torch.arange(h * w, dtype=torch.float32) + 1).view(1, 1, h, w).expand(400, -1, -1, -1)
    out = dsa(x, _gen(13))[:, 0]
    rows, cols = torch.arange(h).view(h, 1), torch.arange(w).view(1, w)
    shifts = set()
    for image in out:  # test-side loop, small
        kept = image > 0
        src = image[kept].long() - 1
        dr, dc = src // w - rows.expand(h, w)[kept], src % w - cols.expand(h, w)[kept]
        assert (dr == dr[0]).all() and (dc == dc[0]).all()  # a rigid translation
        shifts.add((int(dr[0]), int(dc[0])))
        assert (image == 0).sum() == h * w - kept.sum()  # the rest is zero fill
    steps = {s for pair in shifts for s in pair}
    assert steps == set(range(-4, 5))


def test_cutout_zeros_one_half_side_square_possibly_clipped() -> None:
    out = DSA("cutout")(torch.ones(300, 1, 32, 32), _gen(14))[:, 0]
    areas = []
    for image in out:
        zero_rows = (image == 0).any(1).nonzero().squeeze(1)
        zero_cols = (image == 0).any(0).nonzero().squeeze(1)
        height, width = zero_rows.numel(), zero_cols.numel()
        assert 0 < height <= 16 and 0 < width <= 16
        assert (image == 0).sum() == height * width  # a solid rectangle
        areas.append(height * width)
    assert max(areas) == 256 and min(areas) < 256  # whole squares and clipped ones


def test_color_flip_scale_rotate_properties() -> None:
    dsa = DSA()
    x = torch.randn(2, 3, 8, 8, generator=_gen(15))
    p = _forced("color", n=2)
    p["saturation"][:], p["contrast"][:] = 1.0, 1.0
    torch.testing.assert_close(dsa.apply(x, p), x + 0.3)
    p["brightness"][:], p["saturation"][:] = 0.0, 0.0
    grey = dsa.apply(x, p)
    torch.testing.assert_close(grey, x.mean(1, keepdim=True).expand_as(x))
    p["saturation"][:], p["contrast"][:] = 1.0, 0.5
    low = dsa.apply(x, p)
    mean = x.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(low - mean, (x - mean) * 0.5)

    flip = _forced("flip", n=2)
    flip["flip"] = torch.tensor([True, False])
    out = dsa.apply(x, flip)
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[1], x[1])

    scale = _forced("scale", n=2)
    scale["scale"][:] = 1.0
    torch.testing.assert_close(dsa.apply(x, scale), x)
    # A horizontal ramp j - 4 on 9 columns: x-factor 1.2 reads column 4 + 1.2 (j - 4), so the
    # in-range columns 1..7 hold 1.2 (j - 4); the y-factor 1.0 leaves every row alike.
    ramp = (torch.arange(9.0) - 4).expand(1, 1, 5, 9)
    scale["scale"][:] = torch.tensor([1.2, 1.0])
    stretched = dsa.apply(ramp, {k: v[:1] for k, v in scale.items()})
    torch.testing.assert_close(stretched[..., 1:8], 1.2 * ramp[..., 1:8])

    rotate = _forced("rotate", n=2)
    rotate["rotate"][:] = 0.0
    torch.testing.assert_close(dsa.apply(x, rotate), x)
    rotate["rotate"][:] = 90.0  # outside the drawn range, but an exact check of the geometry
    quarter = dsa.apply(x, rotate)
    assert any(torch.allclose(quarter, x.rot90(k, (2, 3)), atol=1e-5) for k in (1, -1))


def test_any_size_grey_images_and_low_precision() -> None:
    dsa = DSA()
    p = dsa.sample(4, _gen(16))
    p["family"] = torch.tensor([0, 1, 4, 5])
    grey = torch.randn(4, 1, 28, 20, generator=_gen(17))
    assert dsa.apply(grey, p).shape == grey.shape
    x = torch.randn(4, 3, 16, 16, generator=_gen(18))
    half = dsa.apply(x.bfloat16(), p)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), dsa.apply(x, p), atol=0.1, rtol=0.05)


def test_no_augment_is_identity() -> None:
    aug = NoAugment()
    x = torch.randn(3, 3, 4, 4)
    assert aug.sample(3, _gen(0)) == {}
    assert aug.apply(x, {}) is x and aug(x, _gen(0)) is x


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_params_follow_the_images() -> None:
    dsa = DSA()
    x = torch.randn(8, 3, 16, 16, generator=_gen(19))
    p_cpu = dsa.sample(4, _gen(20))
    index = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    on_cpu = dsa.apply(x, p_cpu, index=index)
    on_gpu = dsa.apply(x.cuda(), p_cpu, index=index)  # params and index moved to x.device
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=1e-4)
    g = _gen(21, "cuda")
    p_gpu = dsa.sample(4, g)
    assert p_gpu["family"].device.type == "cuda"
    assert dsa(x.cuda(), g).device.type == "cuda"


# --- IDC's choice (M3D) and the reference's one family a batch ---------------------------------


def test_idc_choice_applies_color_crop_and_cutout_together_on_one_call() -> None:
    # A hand-made 3x8x8 image: channel c holds c + row / 10 + column / 100 (distinct pixels).
    rows = torch.arange(8.0).view(8, 1) / 10
    cols = torch.arange(8.0).view(1, 8) / 100
    image = torch.stack([c + rows + cols for c in range(3)]).unsqueeze(0)
    params = _forced("crop")  # the drawn family is crop; idc adds color and cutout to it
    out = DSA("color_crop_cutout", choice="idc").apply(image, params)

    def by_hand(color: bool = True, crop: bool = True, cutout: bool = True) -> torch.Tensor:
        x = image.clone()
        if color:  # brightness +0.3, saturation x1.6, contrast x0.7, in that order
            x = x + 0.3
            grey = x.mean(dim=1, keepdim=True)
            x = (x - grey) * 1.6 + grey
            mean = x.mean()
            x = (x - mean) * 0.7 + mean
        if crop:  # uniforms (0.9, 0.2) over -1..1 (an eighth of 8, rounded): rows +1, columns -1
            shifted = torch.zeros_like(x)
            shifted[:, :, :7, 1:] = x[:, :, 1:, :7]
            x = shifted
        if cutout:  # a 4x4 square centred at (floor(0.3 * 9), floor(0.6 * 9)) = (2, 5)
            x[:, :, 0:4, 3:7] = 0.0
        return x

    torch.testing.assert_close(out, by_hand())
    for left_out in ({"color": False}, {"crop": False}, {"cutout": False}):
        assert not torch.allclose(out, by_hand(**left_out), atol=1e-3), left_out
    # DSA's own choice applies the drawn family alone.
    torch.testing.assert_close(DSA("color_crop_cutout").apply(image, params),
                               by_hand(color=False, cutout=False))  # fmt: skip


def test_idc_choice_draws_one_of_crop_scale_rotate_around_flip_color_cutout() -> None:
    dsa = DSA(choice="idc")
    assert dsa.always == ("flip", "color", "cutout")
    assert dsa.drawn == ("crop", "scale", "rotate")
    drawn = dsa.sample(600, _gen(30))["family"]
    assert set(drawn.tolist()) == {FAMILIES.index(f) for f in ("crop", "scale", "rotate")}
    with pytest.raises(ValueError, match="unknown DSA choice 'all'"):
        DSA(choice="all")
    # On a GPU-style (sync-free) pass the result is the same.
    x = torch.randn(12, 3, 8, 8, generator=_gen(31))
    p = dsa.sample(12, _gen(32))
    torch.testing.assert_close(dsa.apply(x, p, sync_free=True), dsa.apply(x, p, sync_free=False))


def test_one_family_a_batch_shares_the_family_and_keeps_each_images_parameters() -> None:
    dsa = DSA()
    per_image = dsa.sample(64, _gen(40))
    batch = dsa.sample(64, _gen(40), one_family=True)
    assert len(set(per_image["family"].tolist())) > 1  # per image: families differ
    assert batch["family"].tolist() == [int(per_image["family"][0])] * 64
    for key in per_image.keys() - {"family"}:  # the same draw otherwise: own parameters
        assert torch.equal(per_image[key], batch[key]), key
    assert len(set(batch["rotate"].tolist())) == 64
    # Copies of one image come out all different (their own parameters) but of one family:
    # with crop_flip forced to the crop family by the first draw, no output is a mirror.
    crop_flip = DSA("crop_flip")
    draws = (crop_flip.sample(16, _gen(s), one_family=True) for s in range(50))
    crops = next(d for d in draws if d["family"][0] == FAMILIES.index("crop"))
    assert crops["flip"].sum() >= 4  # a per-image family would mirror some of these
    copies = torch.arange(64.0).view(1, 1, 8, 8).expand(16, 1, 8, 8)
    out = crop_flip.apply(copies, crops)
    assert not any(torch.equal(o[0], copies[0, 0].flip(1)) for o in out)
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1
    # The families over many batches still cover the strategy.
    firsts = {int(dsa.sample(4, _gen(s), one_family=True)["family"][0]) for s in range(60)}
    assert firsts == set(range(len(FAMILIES)))


def _graph_names(tensor: torch.Tensor) -> set[str]:
    """The names of the autograd nodes `tensor` was made through."""
    names, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            todo += [next_node for next_node, _ in node.next_functions]
    return names


def test_one_family_a_batch_on_the_cpu_gathers_nothing_for_autograd_to_undo() -> None:
    """A network's training draw (and each of MTT's inner steps) has one family for every
    image: that family runs on the whole batch, without selecting its images and putting them
    back in order, with the values and gradients of the sync-free path."""
    dsa = DSA()
    x = torch.randn(12, 3, 16, 16, generator=_gen(3))
    for seed in range(12):  # the first draws cover every family
        params = dsa.sample(12, _gen(seed), one_family=True)
        outputs, grads = [], []
        for sync_free in (False, True):
            leaf = x.clone().requires_grad_(True)
            out = dsa.apply(leaf, params, sync_free=sync_free)
            out.square().sum().backward()
            outputs.append(out)
            grads.append(leaf.grad)
        assert "IndexBackward0" not in _graph_names(outputs[0]), _graph_names(outputs[0])
        torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
        torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_draws_shorter_than_the_batch_are_refused() -> None:
    dsa = DSA()
    with pytest.raises(ValueError, match="8 images but fewer draws"):
        dsa.apply(torch.zeros(8, 3, 8, 8), dsa.sample(4, _gen(0)))
