"""Differentiable Siamese augmentation (DSA): draw parameters, then apply them, batched.

A draw ("group") picks one family from the strategy and holds the parameters of every family,
so the amount of randomness consumed depends only on the number of draws. `apply` maps each
image to a group through `index`: give all images of a class the same group and real and
synthetic images of that class get the identical transform (Siamese); give each image its own
group and every image is augmented independently.

Which families a group applies (`choice`):
  one  DSA's: one family of the strategy, drawn per group.
  idc  IDC's batch mode (used by M3D): flip, color and cutout on every group, in that order
       around one drawn family of the others (crop, scale, rotate); `color_crop_cutout` thus
       applies all three every time.
Training a network (evaluation, DC/DSA's inner loop), the reference draws one family a call,
that is a batch, with each image's own parameters: `sample(n, g, one_family=True)`.

Integer pixel quantities (crop shift, cutout box) are kept as uniform numbers in [0, 1) and
turned into pixels inside `apply`, from the actual H and W of the images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

FAMILIES: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
CHOICES: tuple[str, ...] = ("one", "idc")
# IDC's order of the families it applies on every call (the drawn one goes after color).
IDC_ALWAYS: tuple[str, ...] = ("flip", "color", "cutout")
NO_FAMILY = -1  # the "family" of a group that draws none (idc with only always-on families)

# Columns of the single uniform draw of `DSA.sample`: one row per group, always all of them.
_COLUMNS = {
    "family": slice(0, 1),
    "brightness": slice(1, 2),
    "saturation": slice(2, 3),
    "contrast": slice(3, 4),
    "crop": slice(4, 6),
    "cutout": slice(6, 8),
    "flip": slice(8, 9),
    "scale": slice(9, 11),
    "rotate": slice(11, 12),
}
_NUM_UNIFORMS = 12


class DSA:
    """DSA over the '_'-joined `strategy`; `choice` says which families a group applies.

    Parameter keys returned by `sample(n, g)` (first dim n):
      family      long  index into `FAMILIES` of the group's drawn family (one of `drawn`),
                  NO_FAMILY when `drawn` is empty
      brightness  added offset, (u - 0.5) * brightness
      saturation  factor on the deviation from the per-pixel channel mean, u * saturation
      contrast    factor on the deviation from the image mean, u + contrast
      crop        [n, 2] uniforms in [0, 1) -> integer (row, col) shift in [-s, s] pixels
      cutout      [n, 2] uniforms in [0, 1) -> (row, col) centre of the cut square
      flip        bool, flip horizontally
      scale       [n, 2] (x, y) stretch factors in [1/scale, scale]
      rotate      angle in degrees, in [-rotate, rotate]
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout_flip_scale_rotate",
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
        crop: float = 0.125,
        cutout: float = 0.5,
        flip: float = 0.5,
        scale: float = 1.2,
        rotate: float = 15.0,
        choice: str = "one",
    ) -> None:
        names = [name for name in strategy.split("_") if name]
        unknown = [name for name in names if name not in FAMILIES]
        if not names or unknown:
            raise ValueError(
                f"unknown DSA strategy {strategy!r} (bad names: {unknown}); "
                f"use a '_'-joined subset of {list(FAMILIES)}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"DSA strategy {strategy!r} repeats a family")
        if choice not in CHOICES:
            raise ValueError(f"unknown DSA choice {choice!r}; use one of {list(CHOICES)}")
        self.strategy, self.choice = strategy, choice
        self.families: tuple[str, ...] = tuple(names)
        # `always`: applied by every group; `drawn`: the families a group draws one of.
        if choice == "idc":
            self.always = tuple(name for name in IDC_ALWAYS if name in names)
            self.drawn = tuple(name for name in names if name not in IDC_ALWAYS)
        else:
            self.always, self.drawn = (), self.families
        self.brightness = brightness
        self.saturation = saturation
        self.contrast = contrast
        self.crop = crop
        self.cutout = cutout
        self.flip = flip
        self.scale = scale
        self.rotate = rotate

        # FAMILIES indices of the drawn families, kept per device: building the table from a
        # Python list at every draw would be a blocking host-to-device copy on a GPU.
        ids = [FAMILIES.index(f) for f in self.drawn] or [NO_FAMILY]
        self._ids = {torch.device("cpu"): torch.tensor(ids)}

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, choice={self.choice!r})"

    def _family_ids(self, device: torch.device) -> torch.Tensor:
        if device not in self._ids:
            self._ids[device] = self._ids[torch.device("cpu")].to(device)
        return self._ids[device]

    # ------------------------------------------------------------------ drawing
    def sample(
        self, n: int, generator: torch.Generator, one_family: bool = False
    ) -> dict[str, torch.Tensor]:
        """`n` groups, on `generator.device`; consumes n * 12 uniforms, always.

        `one_family`: every group takes the family drawn for group 0 (the reference's draw when
        it trains a network: one family a batch), each keeping its own parameters.
        """
        u = torch.rand(n, _NUM_UNIFORMS, generator=generator, device=generator.device)

        def col(key: str) -> torch.Tensor:
            block = u[:, _COLUMNS[key]]
            return block.squeeze(1) if block.shape[1] == 1 else block

        drawn = max(len(self.drawn), 1)
        choice = (col("family") * drawn).long().clamp_(max=drawn - 1)
        if one_family:
            choice = choice[:1].expand(n)
        low = 1.0 / self.scale
        return {
            "family": self._family_ids(u.device)[choice],
            "brightness": (col("brightness") - 0.5) * self.brightness,
            "saturation": col("saturation") * self.saturation,
            "contrast": col("contrast") + self.contrast,
            "crop": col("crop"),
            "cutout": col("cutout"),
            "flip": col("flip") < self.flip,
            "scale": low + col("scale") * (self.scale - low),
            "rotate": (col("rotate") - 0.5) * 2.0 * self.rotate,
        }

    # ----------------------------------------------------------------- applying
    def apply(
        self,
        x: torch.Tensor,
        params: dict[str, torch.Tensor],
        index: torch.Tensor | None = None,
        sync_free: bool | None = None,
    ) -> torch.Tensor:
        """Augment `x` [N, C, H, W]; image i uses group `index[i]` (default: group i).

        Two ways to give every image its own family's transform, with the same values:
        `sync_free` runs every family on every image and keeps each image's own result with
        `torch.where` (no `nonzero`, no data-dependent size, so a GPU never waits for the host);
        otherwise each family runs on its own images only (`nonzero` picks them: free on a CPU,
        a host-device sync on a GPU, but about half the work). None: sync-free off the CPU.
        """
        n = x.shape[0]
        if index is None:  # image i is group i: the draws are one a row already, no gather
            short = [key for key, value in params.items() if value.shape[0] < n]
            if short:
                raise ValueError(f"{n} images but fewer draws of {short[0]!r}")
            per_image = {key: value.to(x.device)[:n] for key, value in params.items()}
        else:
            index = index.to(device=x.device, dtype=torch.long)
            if index.shape != (n,):
                raise ValueError(f"index must have shape ({n},), got {tuple(index.shape)}")
            per_image = {key: value.to(x.device)[index] for key, value in params.items()}
        if n == 0:
            return x
        if sync_free is None:
            sync_free = x.device.type != "cpu"
        apply_drawn = self._apply_selecting if sync_free else self._apply_by_family
        if not self.always:
            return apply_drawn(x, per_image)
        return self._apply_idc(x, per_image, apply_drawn)

    def _apply_idc(
        self,
        x: torch.Tensor,
        p: dict[str, torch.Tensor],
        apply_drawn: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
    ) -> torch.Tensor:
        """IDC's order: flip, color, the drawn family, cutout, each on the previous result."""
        n = x.shape[0]
        if "flip" in self.always:
            x = torch.where(p["flip"].view(n, 1, 1, 1), x.flip(3), x)
        if "color" in self.always:
            x = self._color(x, p).to(x.dtype)
        if self.drawn:
            x = apply_drawn(x, p)
        if "cutout" in self.always:
            x = torch.where(self._cutout_mask(x, p), 0.0, x)
        return x

    def _apply_selecting(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        n, family = x.shape[0], p["family"]

        def chosen(*names: str) -> torch.Tensor:
            """[N, 1, 1, 1] bool: the image's family is one of `names`."""
            mask = torch.zeros_like(family, dtype=torch.bool)
            for name in names:
                mask |= family == FAMILIES.index(name)
            return mask.view(n, 1, 1, 1)

        out = x
        if "crop" in self.drawn:  # a zero shift copies an image exactly: no selection needed
            out = self._crop(x, p, active=chosen("crop").view(n, 1))
        if "color" in self.drawn:
            out = torch.where(chosen("color"), self._color(x, p).to(x.dtype), out)
        if "flip" in self.drawn:
            out = torch.where(chosen("flip") & p["flip"].view(n, 1, 1, 1), x.flip(3), out)
        if "cutout" in self.drawn:
            out = torch.where(chosen("cutout") & self._cutout_mask(x, p), 0.0, out)
        warps = [name for name in ("scale", "rotate") if name in self.drawn]
        if warps:  # both are affine maps: one resampling pass serves the two families
            theta = self._rotate_theta(p) if "rotate" in warps else self._scale_theta(p)
            if len(warps) == 2:
                theta = torch.where(chosen("scale").view(n, 1, 1), self._scale_theta(p), theta)
            out = torch.where(chosen(*warps), _warp(x, theta), out)
        return out

    def _apply_by_family(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        pieces, positions = [], []
        for name in self.drawn:
            where = torch.nonzero(p["family"] == FAMILIES.index(name)).squeeze(1)
            if where.numel() == n:  # one family for every image (a network's training draw)
                return self._family(name, x, p)
            if where.numel() == 0:
                continue
            pieces.append(self._family(name, x[where], {k: v[where] for k, v in p.items()}))
            positions.append(where)
        if len(pieces) == 1:
            return pieces[0]  # every image took the same family, in order
        # Undo the grouping by family with one gather (out-of-place, so autograd is intact).
        order = torch.cat(positions)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=x.device)
        return torch.cat(pieces)[inverse]

    def _family(self, name: str, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Family `name` applied to every image of `x`."""
        if name == "crop":
            return self._crop(x, p)
        if name == "color":
            return self._color(x, p).to(x.dtype)
        if name == "flip":
            return torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(3), x)
        if name == "cutout":
            return torch.where(self._cutout_mask(x, p), 0.0, x)
        theta = self._scale_theta(p) if name == "scale" else self._rotate_theta(p)
        return _warp(x, theta)

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, one_family: bool = False
    ) -> torch.Tensor:
        """Every image its own parameters; its own family too unless `one_family` (see
        `sample`)."""
        return self.apply(x, self.sample(x.shape[0], generator, one_family))

    # --------------------------------------------------------------- families
    @staticmethod
    def _color(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        def per_image(value: torch.Tensor) -> torch.Tensor:
            return value.to(x.dtype).view(-1, 1, 1, 1)

        # (x - m) * f + m written as lerp(m, x, f): one pass instead of three.
        x = x + per_image(p["brightness"])
        x = torch.lerp(x.mean(dim=1, keepdim=True), x, per_image(p["saturation"]))
        return torch.lerp(x.mean(dim=(1, 2, 3), keepdim=True), x, per_image(p["contrast"]))

    def _crop(
        self, x: torch.Tensor, p: dict[str, torch.Tensor], active: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Translate the images (only the `active` [N, 1] ones; the others are copied)."""
        n, _, h, w = x.shape
        limits = (int(h * self.crop + 0.5), int(w * self.crop + 0.5))
        # Uniform over the integers -s..s, computed from the uniform in [0, 1); Python-int
        # bounds, so nothing is copied to the device.
        shift = torch.stack(
            [
                (p["crop"][:, axis].float() * (2 * s + 1)).long().clamp(max=2 * s) - s
                for axis, s in enumerate(limits)
            ],
            dim=1,
        )
        if active is not None:
            shift = shift * active
        # Read from a 1-pixel zero border; out-of-image sources land on it. One flat gather
        # over H * W per image is about twice as fast on a CPU as advanced indexing.
        rows = (torch.arange(h, device=x.device) + shift[:, :1] + 1).clamp(0, h + 1)
        cols = (torch.arange(w, device=x.device) + shift[:, 1:] + 1).clamp(0, w + 1)
        source = (rows[:, :, None] * (w + 2) + cols[:, None, :]).view(n, 1, h * w)
        padded = F.pad(x, [1, 1, 1, 1]).flatten(2)
        return padded.gather(2, source.expand(n, x.shape[1], h * w)).view(x.shape)

    def _cutout_mask(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """[N, 1, H, W] bool, true inside each image's cut square."""
        _, _, h, w = x.shape
        size_h, size_w = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        # Centre ranges over 0..H (0..H-1 for odd sizes), so the square may hang over an edge.
        span_h, span_w = h + 1 - size_h % 2, w + 1 - size_w % 2
        centre_r = (p["cutout"][:, 0].float() * span_h).long().clamp(max=span_h - 1)
        centre_c = (p["cutout"][:, 1].float() * span_w).long().clamp(max=span_w - 1)
        top = (centre_r - size_h // 2).view(-1, 1, 1)
        left = (centre_c - size_w // 2).view(-1, 1, 1)
        r = torch.arange(h, device=x.device).view(1, h, 1)
        c = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (r >= top) & (r < top + size_h) & (c >= left) & (c < left + size_w)
        return inside.unsqueeze(1)

    @staticmethod
    def _scale_theta(p: dict[str, torch.Tensor]) -> torch.Tensor:
        """[N, 2, 3] affine maps stretching x and y independently."""
        factors = p["scale"].to(_at_least_float32(p["scale"].dtype))
        zero = torch.zeros_like(factors[:, 0])
        return torch.stack(
            [
                torch.stack([factors[:, 0], zero, zero], dim=1),
                torch.stack([zero, factors[:, 1], zero], dim=1),
            ],
            dim=1,
        )

    @staticmethod
    def _rotate_theta(p: dict[str, torch.Tensor]) -> torch.Tensor:
        """[N, 2, 3] rotations; trigonometry in at least float32 (bf16 would be too coarse)."""
        angle = p["rotate"].to(_at_least_float32(p["rotate"].dtype)) * (math.pi / 180.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros_like(cos)
        return torch.stack(
            [torch.stack([cos, -sin, zero], dim=1), torch.stack([sin, cos, zero], dim=1)],
            dim=1,
        )


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Resample `x` through the affine maps `theta` [N, 2, 3]; zero outside the image.

    Sampling runs in at least float32: a bf16 grid is off by a sizeable fraction of a pixel
    near the border (autocast does the same for grid_sample).
    """
    work = _at_least_float32(x.dtype)
    grid = F.affine_grid(theta.to(work), list(x.shape), align_corners=True)
    return F.grid_sample(x.to(work), grid, align_corners=True).to(x.dtype)


class NoAugment:
    """The identity with DSA's interface, for runs without augmentation."""

    strategy = "none"
    families: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return "NoAugment()"

    def sample(
        self, n: int, generator: torch.Generator, one_family: bool = False
    ) -> dict[str, torch.Tensor]:
        return {}

    def apply(
        self,
        x: torch.Tensor,
        params: dict[str, torch.Tensor],
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return x

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, one_family: bool = False
    ) -> torch.Tensor:
        return x
