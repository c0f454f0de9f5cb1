"""A pool of networks pretrained on the real training set, each kept at its initial and its
trained weights (NCFM's matching networks; any method may use one).

A pool lives in one folder, keyed by what made it (data set, model and its knobs, the training
recipe, the seed), so a second run finds and reuses it:

    <root>/<data set>-<model>-<digest>/
        pool.json          what made the pool (the manifest); written before the first network
        network_000.pt     {"manifest", "index", "initial", "trained", "test_accuracy"}
        network_001.pt     ...

Network i is the same whatever the pool's size: its initialisation, batch order, augmentation
and CutMix draws are keyed by (seed, i, epoch), so a pool of 20 extends a pool of 5 and a pool
stopped part-way resumes with its first missing network. Each network file is written
atomically when its training ends; a file that cannot be read, or one made for another data set
or model, stops the run with one line and nothing is overwritten.

The recipe is the NCFM authors' pretraining: SGD (lr 0.01, momentum 0.9, weight decay 5e-4),
batch 128, the learning rate x 0.2 at 2/3 and 5/6 of the epochs, a DSA augmentation per image and
CutMix (probability 0.5, Beta(1, 1) area) on the training batches.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmcondense.atomic import atomic_write
from dmcondense.errors import ConfigError
from dmcondense.models.init import reset_parameters
from dmcondense.rng import derive_seed, generator, to_device

MANIFEST = "pool.json"
FORMAT = 1  # bump when the files' layout changes


@dataclass(frozen=True)
class PoolRecipe:
    """How each network of the pool trains (the NCFM authors' pretraining by default)."""

    epochs: int = 60
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "color_crop"  # the DSA strategy of the training batches, drawn per image
    cutmix: float = 0.5  # probability that a batch is CutMixed; 0: never
    cutmix_beta: float = 1.0  # Beta(beta, beta) draws the kept area

    def milestones(self) -> tuple[int, int]:
        return 2 * self.epochs // 3, 5 * self.epochs // 6


def pool_manifest(dataset: dict, model: str, knobs: dict, recipe: PoolRecipe, seed: int) -> dict:
    """What makes a pool: the data set's facts, the model and its knobs, the recipe, the seed."""
    return {
        "format": FORMAT,
        "dataset": dict(dataset),
        "model": model,
        "knobs": dict(sorted(knobs.items())),
        "recipe": asdict(recipe),
        "seed": int(seed),
    }


def manifest_digest(manifest: dict) -> str:
    text = json.dumps(manifest, sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:12]


def pool_folder(root: str | Path, manifest: dict) -> Path:
    """The folder under `root` that a pool with this manifest lives in."""
    name = f"{manifest['dataset']['name']}-{manifest['model']}-{manifest_digest(manifest)}"
    return Path(root).expanduser() / name


def first_difference(expected: dict, found: dict, prefix: str = "") -> str | None:
    """The first key (dotted) whose value differs, or None when the two agree."""
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key), found.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            inner = first_difference(a, b, f"{prefix}{key}.")
            if inner:
                return inner
        elif a != b:
            return f"{prefix}{key} (this run: {a!r}, the pool: {b!r})"
    return None


class PretrainedPool:
    """The pool folder `folder` for `manifest`: which networks are finished, read them, add one.

    Every read checks what it reads: an unreadable file or a file made with another manifest is a
    ConfigError (one line), and nothing in the folder is changed by a failed check.

    The folder, manifest and file machinery is shared with other keyed stores of networks (the
    experts' trajectories, models/experts.py), which change the names below."""

    kind = "pool"  # what the folder holds, in messages
    member = "network"  # one file's name stem and, in messages, what it holds
    required = frozenset({"initial", "trained", "manifest"})  # the keys every file has
    remake = "run the pretrain command again"  # how a deleted file is made again
    manifest_name = MANIFEST

    def __init__(self, folder: str | Path, manifest: dict) -> None:
        self.folder, self.manifest = Path(folder), manifest

    def network_path(self, index: int) -> Path:
        return self.folder / f"{self.member}_{index:03d}.pt"

    def check_manifest(self) -> None:
        """The folder's pool.json, when there is one, must be this pool's."""
        path = self.folder / self.manifest_name
        kind, name = self.kind, self.manifest_name
        if not path.exists():
            if any(self.folder.glob(f"{self.member}_*.pt")):
                raise ConfigError(
                    f"{kind} folder {self.folder} holds {self.member}s but no {name}; it was not "
                    f"made by this version: move it away or set {kind}.dir= to another folder"
                )
            return
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{kind} folder {self.folder}: {name} is unreadable ({error}); it may be "
                f"truncated: delete the folder to retrain the {kind}"
            ) from error
        self.check_same(found, path)

    def check_same(self, found: dict, path: Path) -> None:
        difference = first_difference(self.manifest, found)
        if difference:
            raise ConfigError(
                f"{path} was made for another {self.kind}: {difference}; set {self.kind}.dir= to "
                f"another folder, or run with the {self.kind}'s settings"
            )

    def finished(self) -> list[int]:
        """Indices of the network files present (not yet read)."""
        found = []
        for path in self.folder.glob(f"{self.member}_*.pt"):
            stem = path.stem.removeprefix(f"{self.member}_")
            if stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def read(self, index: int) -> dict:
        """Network `index`'s record, checked: readable, this pool's, with its `required` keys."""
        path = self.network_path(index)
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as error:  # torch raises several kinds for a truncated zip
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ConfigError(
                f"{self.kind} {self.member} {path} is unreadable ({type(error).__name__}: "
                f"{first}); it may be truncated: delete that file and {self.remake}"
            ) from error
        if not isinstance(record, dict) or not self.required <= set(record):
            raise ConfigError(
                f"{self.kind} {self.member} {path} is not a {self.member} of a {self.kind}; "
                f"delete it"
            )
        self.check_same(record["manifest"], path)
        return record

    def check_all(self) -> list[int]:
        """Check the manifest and read every finished network; returns their indices."""
        self.check_manifest()
        finished = self.finished()
        for index in finished:
            self.read(index)
        return finished

    def load(self, count: int) -> list[tuple[dict, dict]]:
        """(initial, trained) state dicts of networks 0..count-1."""
        self.check_manifest()
        missing = [i for i in range(count) if not self.network_path(i).exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.kind} {self.folder} lacks {self.member} {missing[0]} of {count} "
                f"({len(missing)} missing)"
            )
        pairs = []
        for index in range(count):
            record = self.read(index)
            pairs.append((record["initial"], record["trained"]))
        return pairs

    def write_manifest(self) -> None:
        if not (self.folder / self.manifest_name).exists():
            text = json.dumps(self.manifest, indent=2, sort_keys=True) + "\n"
            atomic_write(self.folder / self.manifest_name, lambda tmp: Path(tmp).write_text(text))

    def save(self, index: int, initial: dict, trained: dict, test_accuracy: float | None) -> Path:
        record = {
            "manifest": self.manifest,
            "index": index,
            "initial": initial,
            "trained": trained,
            "test_accuracy": test_accuracy,
        }
        return atomic_write(self.network_path(index), lambda tmp: torch.save(record, tmp))


def cpu_state(net: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().cpu().clone() for name, value in net.state_dict().items()}


def cutmix_box(height: int, width: int, area: float, rng: np.random.Generator) -> tuple:
    """A box covering about 1 - `area` of the image, centred uniformly (clipped at the edges)."""
    cut = math.sqrt(1.0 - area)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


def train_network(
    net: nn.Module,
    images: Tensor,
    labels: Tensor,
    normalise: Callable[[Tensor], Tensor],
    augment: Callable[[Tensor, torch.Generator], Tensor],
    recipe: PoolRecipe,
    seed: int,
    index: int,
) -> None:
    """Train `net` (already initialised, on its device) by `recipe` on uint8 `images` [N, ...]
    (on the same device) with integer `labels`; every draw keyed by (seed, index, epoch)."""
    device = next(net.parameters()).device
    optimizer = torch.optim.SGD(
        net.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    milestones = recipe.milestones()
    net.train()
    n = images.shape[0]
    for epoch in range(recipe.epochs):
        lr = recipe.lr * 0.2 ** sum(epoch >= m for m in milestones)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(n, generator=generator(seed, "pool-order", index, epoch))
        order = to_device(order, device)
        augment_g = generator(seed, "pool-augment", index, epoch, device=device)
        mix_g = generator(seed, "pool-cutmix-pairs", index, epoch)
        mix_rng = np.random.default_rng(derive_seed(seed, "pool-cutmix", index, epoch))
        for start in range(0, n, recipe.batch_size):
            chosen = order[start : start + recipe.batch_size]
            with torch.no_grad():
                x = augment(normalise(images[chosen]), augment_g)
            y = labels[chosen]
            if recipe.cutmix > 0 and mix_rng.random() < recipe.cutmix:
                area = float(mix_rng.beta(recipe.cutmix_beta, recipe.cutmix_beta))
                partner = to_device(torch.randperm(x.shape[0], generator=mix_g), device)
                top, bottom, left, right = cutmix_box(x.shape[2], x.shape[3], area, mix_rng)
                x = x.clone()
                x[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
                kept = 1.0 - (bottom - top) * (right - left) / (x.shape[2] * x.shape[3])
                logits = net(x)
                loss = kept * F.cross_entropy(logits, y) + (1.0 - kept) * F.cross_entropy(
                    logits, y[partner]
                )
            else:
                loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def test_accuracy(
    net: nn.Module, images: Tensor, labels: Tensor, normalise: Callable[[Tensor], Tensor]
) -> float:
    """Top-1 accuracy (%) of `net` on uint8 `images`, in eval mode and batches of 1,024."""
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, images.shape[0], 1024):
        x = normalise(images[start : start + 1024].to(device))
        correct += int((net(x).argmax(1) == labels[start : start + 1024].to(device)).sum())
    net.train()
    return 100.0 * correct / max(images.shape[0], 1)


def build_pool(
    pool: PretrainedPool,
    make_network: Callable[[], nn.Module],
    size: int,
    images: Tensor,
    labels: Tensor,
    normalise: Callable[[Tensor], Tensor],
    augment: Callable[[Tensor, torch.Generator], Tensor],
    recipe: PoolRecipe,
    seed: int,
    device: torch.device | str = "cpu",
    test: tuple[Tensor, Tensor] | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Train the networks 0..size-1 the folder lacks (each written when it finishes) after
    checking every one it holds; returns how many were trained."""
    finished = set(pool.check_all())
    todo = [i for i in range(size) if i not in finished]
    if not todo:
        return 0
    pool.write_manifest()
    images, labels = images.to(device), labels.to(device)
    for index in todo:
        started = time.time()
        net = make_network()
        reset_parameters(net, generator(seed, "pool-init", index))  # on the CPU: any device
        initial = cpu_state(net)
        net = net.to(device).requires_grad_(True)
        train_network(net, images, labels, normalise, augment, recipe, seed, index)
        accuracy = None if test is None else test_accuracy(net, *test, normalise)
        path = pool.save(index, initial, cpu_state(net), accuracy)
        scored = "" if accuracy is None else f", test accuracy {accuracy:.2f}%"
        log(
            f"pool network {index + 1}/{size}: {recipe.epochs} epochs{scored} "
            f"({time.time() - started:.0f} s) -> {path}"
        )
    return len(todo)
