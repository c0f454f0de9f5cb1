"""RDED: realistic and diverse images, selected, not optimised (Sun et al., CVPR 2024).

    observer <- a network of the pretrained pool, at its trained weights (eval mode)
    for each class c (one iteration, the run's only step):
        x_1 .. x_n   = the step's n = batch_real real images of c    generator(seed, "real", 0)
        p_ij         = random resized crop j of x_i, j = 1..m      generator(seed, "rded-crops", 0)
                       (crop_scale, crop_ratio, side size // f; m = num_crop)
        l_ij         = CE(observer(pad(p_ij)), c)                    crops zero-padded to size
        j*(i)        = argmin_j l_ij                                 each image's typical crop
        r_1 .. r_K   = images i by ascending l_{i j*(i)}, K = ipc f^2    the realistic ones
        stored image s of c, tile t (row-major) = crop p_{r_q, j*(r_q)}, q = t ipc + s

No gradient reaches the pixels and no optimiser moves them: the selection is written into the
synthetic tensor and the base's optimiser takes one step without a gradient, which changes
nothing and counts the iteration, so checkpoints, synthetic.pt, the picture and results.json
are the engine's as for every method. The run stops after that step (`iterations` above 1 adds
nothing), and a run resumed after it takes no second one. Every draw is keyed by the seed, so a
run restarted from scratch selects the same set.

The stitched images are what is stored and trained on (`crop_factor` f; the engine's
`synthetic.factor` stays 1): RDED's evaluation trains on the whole mosaic, with its patches
shuffled (evaluation/relabel.py), not on the tiles decoded apart.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.augment.crops import crop_boxes, default_crop_factor, resized_crops
from dmcondense.errors import ConfigError
from dmcondense.methods.base import AuxiliaryPart, CondensationMethod
from dmcondense.rng import generator


def pad_to(crops: Tensor, size: int) -> Tensor:
    """Crops [N, C, s, s] centred in size x size with zeros (the normalised mean), as the
    authors' `pad` scores a crop smaller than the observer's input."""
    extra = size - crops.shape[-1]
    if extra == 0:
        return crops
    before = extra // 2
    return F.pad(crops, (before, extra - before, before, extra - before))


def select_crops(losses: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """losses [k, n, m] (class, image, crop) -> (each image's lowest-loss crop [k, n], the
    `count` images of each class with the lowest such loss, ascending [k, count])."""
    if count > losses.shape[1]:
        raise ValueError(f"{count} crops a class asked of {losses.shape[1]} images")
    best = losses.argmin(dim=2)  # the first minimum on a tie, as torch.argmin (theirs)
    best_loss = losses.gather(2, best[..., None])[..., 0]
    ranked = best_loss.argsort(dim=1, stable=True)[:, :count]
    return best, ranked


def stitch(crops: Tensor, factor: int, ipc: int) -> Tensor:
    """Ranked crops [k, ipc * factor^2, C, s, s] -> stored images [k, ipc, C, factor s,
    factor s]: tile t (row-major) of image i is crop t * ipc + i (the authors' `mix_images`)."""
    k, count, c, s, _ = crops.shape
    if count != ipc * factor**2:
        raise ValueError(f"{count} crops do not fill {ipc} images of {factor}x{factor} tiles")
    tiles = crops.reshape(k, factor, factor, ipc, c, s, s)
    return tiles.permute(0, 3, 4, 1, 5, 2, 6).reshape(k, ipc, c, factor * s, factor * s)


class Observer(AuxiliaryPart):
    """The pool network that scores the crops, at its trained weights, in eval mode (its
    BatchNorm uses the running statistics). Read-only data: nothing to checkpoint."""

    saves_state = False

    def __init__(self, net: nn.Module) -> None:
        self.net = net.requires_grad_(False).eval()

    def start(self, device: torch.device) -> None:
        self.net.to(device).eval()


class RealisticDiverseSelection(CondensationMethod):
    name = "rded"
    uses_pretrained_pool = True
    compile_refusal = "it takes no step: the observer scores each class's crops once"

    def __init__(
        self,
        *args,
        pool: list[tuple[dict, dict]],
        num_crop: int = 5,
        crop_factor: int | None = None,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (1.0, 1.0),
        observer: int = 0,
        score_batch: int = 1024,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.synthetic_images.factor != 1:
            raise ConfigError(
                "method=rded stitches its own crops (method.crop_factor); set synthetic.factor=1"
            )
        if num_crop < 1 or score_batch < 1:
            raise ConfigError("method.num_crop and method.score_batch must be 1 or more")
        if not 0 <= observer < len(pool):
            raise ConfigError(
                f"method.observer={observer} but the pool holds {len(pool)} network(s); "
                f"set pool.size={observer + 1} or more"
            )
        size = self.synthetic.shape[-1]
        self.crop_factor = default_crop_factor(size) if crop_factor is None else int(crop_factor)
        if self.crop_factor < 1 or size % self.crop_factor:
            raise ConfigError(
                f"method.crop_factor={self.crop_factor} does not cut {size}x{size} images "
                f"into equal tiles"
            )
        self.num_crop, self.score_batch = int(num_crop), int(score_batch)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        net = copy.deepcopy(self.embed_net)
        net.load_state_dict(pool[observer][1])
        self.observer = self.register_part(
            "observer", Observer(net), ddp="all_reduce",
            why="nothing learns: each rank selects its own classes, then they are shared",
        )  # fmt: skip

    @property
    def crops_per_class(self) -> int:
        return self.ipc * self.crop_factor**2

    @torch.no_grad()
    def crop_losses(self, crops: Tensor, label: int | Tensor) -> Tensor:
        """The observer's cross-entropy [N] of normalised crops [N, C, s, s] for class `label`,
        scored zero-padded to the image size in batches of `score_batch`."""
        size = self.synthetic.shape[-1]
        net = self.observer.net
        losses = []
        for start in range(0, crops.shape[0], self.score_batch):
            x = pad_to(crops[start : start + self.score_batch], size)
            logits = net(x).float()
            target = torch.as_tensor(label, device=logits.device).expand(logits.shape[0])
            losses.append(F.cross_entropy(logits, target, reduction="none"))
        return torch.cat(losses)

    @torch.no_grad()
    def select(self, step: int, classes: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
        """The stored images [k, ipc, C, H, W] (normalised) of `classes` from uint8 real images
        [k, n, C, H, W], and the observer's loss of each kept crop [k, ipc f^2]."""
        k, n, c, height, width = real.shape
        m, side = self.num_crop, height // self.crop_factor
        if self.crops_per_class > n:
            raise ConfigError(
                f"method=rded keeps {self.crops_per_class} crops a class (ipc x crop_factor^2) "
                f"but has {n} real images a class; raise batch_real (their mipc)"
            )
        # Every class's boxes from one draw, so a rank's classes get the same boxes whatever
        # the rank layout.
        draws = generator(self.seed, "rded-crops", step, device=self.device)
        boxes = crop_boxes(self.num_classes * n * m, height, width, self.crop_scale,
                           self.crop_ratio, draws).view(self.num_classes, n * m, 4)  # fmt: skip
        stored, kept = [], []
        for row in range(k):  # one class at a time bounds the memory; its images are batched
            images = self.normalise(real[row]).repeat_interleave(m, dim=0)  # image-major
            crops = resized_crops(images, boxes[classes[row]], side)  # [n * m, C, s, s]
            losses = self.crop_losses(crops, classes[row]).view(1, n, m)
            best, ranked = select_crops(losses, self.crops_per_class)
            chosen = (ranked[0] * m + best[0, ranked[0]]).flatten()
            stored.append(stitch(crops[chosen][None], self.crop_factor, self.ipc)[0])
            kept.append(losses.view(n * m)[chosen])
        return torch.stack(stored), torch.stack(kept)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        self.trainer.should_stop = True  # one step selects everything
        if self.trainer.global_step > 0:  # resumed after the selection: nothing is left to do
            return torch.zeros((), device=self.device)
        classes = batch["classes"]
        chosen, kept = self.select(batch["step"], classes, batch["images"][0])
        rows = classes[:, None] * self.ipc + torch.arange(self.ipc, device=classes.device)
        with torch.no_grad():
            stored = chosen.flatten(0, 1)
            if self.pixels == "unit":
                stored = self.unit_from_normalised(stored)
            self.synthetic[rows.flatten()] = stored.to(self.synthetic.dtype)
        self.share_class_rows(classes)
        self.optimizers().step()  # no gradient: moves nothing, counts the one iteration
        loss = kept.mean()  # the observer's mean loss of the kept crops, for the log
        self.log_loss(loss)
        return loss
