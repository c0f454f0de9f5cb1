"""A keyed folder of networks trained on the real training set, and the build that fills it.

Its two kinds, the pretrained pools (models/pretrained.py) and the expert trajectories
(models/experts.py), each say what one member's file stores and how its network trains. The
folder is keyed by what made its members (data set, model and its knobs, the training recipe,
the seed), so a second run finds and reuses it; its manifest file says what made it and is
written before the first member. Member i is the same whatever the folder's size: its
initialisation and every draw of its training are keyed by (seed, i, epoch), so 20 members
extend 5 and a stopped build resumes with its first missing member. Each member's file,
{"manifest", "index", ...what the kind stores..., "test_accuracy"}, is written atomically when
its training ends: a killed build loses at most the member in progress; a file that cannot be
read, or one made with another manifest, stops the build with one line and nothing is
overwritten.

What making a member cost, {"index", "seconds", "peak_mib"} (its training and test in wall
seconds; the building process's peak resident memory when it ended, so the peak so far), is
written beside its file, in <member>_<index>.cost.json, just before it: a report reads the cost
of a hundred members without loading their tensors. The record only informs: one that is
missing (a folder made before the records were kept) or unreadable reads as unknown, and never
stops a build or a run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dmcondense.atomic import atomic_write, atomic_write_json
from dmcondense.errors import ConfigError
from dmcondense.hostmem import peak_resident_mib
from dmcondense.models.init import reset_parameters
from dmcondense.rng import generator

FORMAT = 1  # bump when the files' layout changes


def manifest(dataset: dict, model: str, knobs: dict, recipe: dict, seed: int) -> dict:
    """What makes a folder's members: the data set's facts, the model and its knobs, the
    recipe's fields, the seed."""
    return {
        "format": FORMAT,
        "dataset": dict(dataset),
        "model": model,
        "knobs": dict(sorted(knobs.items())),
        "recipe": recipe,
        "seed": int(seed),
    }


def manifest_digest(manifest: dict) -> str:
    text = json.dumps(manifest, sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:12]


def keyed_folder(root: str | Path, manifest: dict) -> Path:
    """The folder under `root` that the cache made with this manifest lives in."""
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


class NetworkStore:
    """The folder `folder` for `manifest`: which members are finished, read them, add one.

    Every read checks what it reads: an unreadable file or a file made with another manifest is a
    ConfigError (one line), and nothing in the folder is changed by a failed check. A kind names
    itself with the class attributes below and trains its members with `train_member`."""

    kind: str  # what the folder holds, in messages; also its config group (`<kind>.dir=`)
    member: str  # one file's name stem and, in messages, what it holds
    title: str  # one member in the build's log lines
    draws: str  # the prefix of the names of its members' draws
    required: frozenset[str]  # the keys every file has
    remake: str  # how a deleted file is made again
    manifest_name: str

    def __init__(self, folder: str | Path, manifest: dict) -> None:
        self.folder, self.manifest = Path(folder), manifest

    def train_member(
        self, net: nn.Module, images: Tensor, labels: Tensor, normalise: Callable,
        augment: Any, recipe: Any, seed: int, index: int,
    ) -> dict:  # fmt: skip
        """Train member `index`'s `net` (initialised, on the data's device); returns what its
        file stores besides the manifest, its index and the test accuracy."""
        raise NotImplementedError

    def network_path(self, index: int) -> Path:
        return self.folder / f"{self.member}_{index:03d}.pt"

    def check_manifest(self) -> None:
        """The folder's manifest file, when there is one, must be this manifest."""
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
        """Indices of the member files present (not yet read)."""
        found = []
        for path in self.folder.glob(f"{self.member}_*.pt"):
            stem = path.stem.removeprefix(f"{self.member}_")
            if stem.isdigit():
                found.append(int(stem))
        return sorted(found)

    def read(self, index: int) -> dict:
        """Member `index`'s record, checked: readable, this folder's, with its `required` keys."""
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
        """Check the manifest and read every finished member; returns their indices."""
        self.check_manifest()
        finished = self.finished()
        for index in finished:
            self.read(index)
        return finished

    def records(self, count: int) -> list[dict]:
        """The records of members 0..count-1, checked (FileNotFoundError names the first
        missing one)."""
        self.check_manifest()
        missing = [i for i in range(count) if not self.network_path(i).exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.kind} {self.folder} lacks {self.member} {missing[0]} of {count} "
                f"({len(missing)} missing)"
            )
        return [self.read(index) for index in range(count)]

    def write_manifest(self) -> None:
        if not (self.folder / self.manifest_name).exists():
            atomic_write_json(
                self.folder / self.manifest_name, self.manifest, indent=2, sort_keys=True
            )

    def save(self, index: int, fields: dict) -> Path:
        """Write member `index`'s record: the manifest, the index, then `fields`."""
        record = {"manifest": self.manifest, "index": index, **fields}
        return atomic_write(self.network_path(index), lambda tmp: torch.save(record, tmp))

    def cost_path(self, index: int) -> Path:
        return self.folder / f"{self.member}_{index:03d}.cost.json"

    def save_cost(self, index: int, seconds: float, peak_mib: float) -> Path:
        """Write what making member `index` cost: its wall seconds and the building process's
        peak resident MiB."""
        record = {"index": index, "seconds": round(seconds, 3), "peak_mib": round(peak_mib, 1)}
        return atomic_write_json(self.cost_path(index), record)

    def making_cost(self, index: int) -> dict | None:
        """What making member `index` cost ({"seconds", "peak_mib"}), or None where its record
        is missing or unreadable: the cost informs, the member's file is what a run needs."""
        try:
            record = json.loads(self.cost_path(index).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("index") != index:
            return None
        found = {key: record.get(key) for key in ("seconds", "peak_mib")}
        if not all(isinstance(value, int | float) for value in found.values()):
            return None
        return found

    def making_total(self, count: int) -> dict:
        """What making members 0..count-1 cost: {"seconds": summed, "peak_mib": the largest},
        each None where any member lacks a readable record, and "unrecorded": those members."""
        costs = [self.making_cost(index) for index in range(count)]
        unrecorded = [index for index, cost in enumerate(costs) if cost is None]
        if unrecorded:
            return {"seconds": None, "peak_mib": None, "unrecorded": unrecorded}
        return {
            "seconds": round(sum(cost["seconds"] for cost in costs), 3),
            "peak_mib": max(cost["peak_mib"] for cost in costs),
            "unrecorded": [],
        }


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


def build_members(
    store: NetworkStore,
    make_network: Callable[[], nn.Module],
    size: int,
    images: Tensor,
    labels: Tensor,
    normalise: Callable[[Tensor], Tensor],
    augment: Any,
    recipe: Any,
    seed: int,
    device: torch.device | str = "cpu",
    test: tuple[Tensor, Tensor] | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Train the members 0..size-1 the folder lacks (each written when it finishes) after
    checking every one it holds; returns how many were trained (each with what making it cost,
    `store.save_cost`, written just before its file). Member i's network is
    initialised from generator(seed, f"{store.draws}-init", i) and trained on `device` by
    `store.train_member` with `normalise`, `augment` (the kind's augmentation), `recipe` and
    `seed`; the test accuracy is measured when `test` is given."""
    finished = set(store.check_all())
    todo = [i for i in range(size) if i not in finished]
    if not todo:
        return 0
    store.write_manifest()
    images, labels = images.to(device), labels.to(device)
    for index in todo:
        started = time.time()
        net = make_network()
        # Initialised on the CPU, so member i is the same on any device.
        reset_parameters(net, generator(seed, f"{store.draws}-init", index))
        net = net.to(device).requires_grad_(True)
        fields = store.train_member(net, images, labels, normalise, augment, recipe, seed, index)
        accuracy = None if test is None else test_accuracy(net, *test, normalise)
        # Before the member's file: a finished member always has its cost beside it, and a cost
        # left by a build killed before the file is written again with the member.
        store.save_cost(index, time.time() - started, peak_resident_mib())
        path = store.save(index, {**fields, "test_accuracy": accuracy})
        scored = "" if accuracy is None else f", test accuracy {accuracy:.2f}%"
        log(
            f"{store.title} {index + 1}/{size}: {recipe.epochs} epochs{scored} "
            f"({time.time() - started:.0f} s) -> {path}"
        )
    return len(todo)
