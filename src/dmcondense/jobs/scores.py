"""What `python -m dmcondense.evaluate condensed=... scores=[lrs,ars]` adds to plain scoring: the
random real subset of equal IPC, the learning-rate search on held-out training images, the
cached whole-data accuracy, and DD-Ranking's LRS and ARS (evaluation/robust.py) from them.

Every accuracy that enters a score is the last-epoch test accuracy of the plan's networks; the
learning-rate search trains on the set and tests on held-out images of the real training split
only (it is never handed the test split).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from dmcondense.atomic import atomic_write
from dmcondense.data.imageset import ImageSet, TrainingSplit
from dmcondense.data.spec import DatasetSpec
from dmcondense.errors import ConfigError
from dmcondense.evaluation.plan import EvaluationPlan
from dmcondense.evaluation.robust import augmentation_robust_score, label_robust_score
from dmcondense.evaluation.score import LabelledImages
from dmcondense.models.network_store import keyed_folder, manifest_digest
from dmcondense.rng import generator

WHOLE_FILE = "whole.json"
CALIBRATION_IMAGES = 512


def holdout_indices(
    train: TrainingSplit, fraction: float, seed: int, exclude: Tensor | None = None
) -> Tensor:
    """`fraction` of each class's training images (at least one), drawn from
    generator(seed, "lr-holdout") among those not in `exclude` (the random subset)."""
    g = generator(seed, "lr-holdout")
    allowed = torch.ones(len(train), dtype=torch.bool)
    if exclude is not None:
        allowed[exclude] = False
    picks = []
    for c in range(train.num_classes):
        members = torch.nonzero((train.labels == c) & allowed).flatten()
        count = max(1, int(fraction * members.numel()))
        picks.append(members[torch.randperm(members.numel(), generator=g)[:count]])
    return torch.cat(picks)


def validation_set(train: TrainingSplit, indices: Tensor) -> ImageSet:
    """The held-out training images as an ImageSet (what the search tests on)."""
    return ImageSet(train.decode(indices), train.labels[indices], list(train.class_names))


def choose_lr(
    plan: EvaluationPlan,
    experiments: Sequence[LabelledImages],
    validation: ImageSet,
    normaliser,
    rates: Sequence[float],
    device: torch.device | None = None,
) -> tuple[float, dict[float, float]]:
    """The rate of `rates` whose networks, trained on `experiments` under the plan, reach the
    highest mean last-epoch accuracy on `validation` (the first on a tie); and every rate's."""
    means = {}
    for rate in rates:
        raw = plan.variant(lr=rate).scores({"set": experiments}, validation, normaliser, device)
        means[rate] = float(torch.cat(list(raw["set"].values())).mean())
    best = max(rates, key=lambda r: (means[r], -rates.index(r)))
    return best, means


def whole_manifest(plan: EvaluationPlan, arch: str, spec: DatasetSpec, train_images: int) -> dict:
    """What the cached whole-data accuracy of one architecture depends on."""
    return {
        "dataset": {"name": spec.name, "channels": spec.channels, "image_size": spec.image_size,
                    "num_classes": spec.num_classes, "train_images": train_images},
        "model": arch,
        "knobs": dict(sorted(dict(plan.architectures[arch]).items())),
        "protocol": dataclasses.asdict(plan.protocols[arch]),
        "num_models": plan.num_models,
        "seed": plan.seed,
    }  # fmt: skip


def whole_accuracies(
    cfg: DictConfig,
    plan: EvaluationPlan,
    train: TrainingSplit,
    spec: DatasetSpec,
    test: ImageSet,
    device: torch.device | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Tensor]:
    """Accuracies [num_models] per architecture of networks trained on the whole training split
    with hard labels under the plan's protocol for `whole_epochs` epochs: read from the keyed
    cache folder under eval.whole_root, or trained now and cached (eval.whole=auto), or one
    line (eval.whole=never). The expected time comes from one timed epoch of one network on
    the first CALIBRATION_IMAGES images."""
    whole = plan.variant(labels="hard", epochs=int(cfg.whole_epochs))
    found: dict[str, Tensor] = {}
    images = labels = None
    for arch in whole.architectures:
        manifest = whole_manifest(whole, arch, spec, len(train))
        folder = keyed_folder(cfg.eval.whole_root, manifest)
        path = folder / WHOLE_FILE
        record = read_record(path, manifest)
        if record is not None:
            found[arch] = torch.tensor(record["accuracies"], dtype=torch.float64)
            continue
        if cfg.eval.whole == "never":
            raise ConfigError(
                f"scores=[lrs] needs the whole-data accuracy of {spec.name} and {arch} under "
                f"protocol {plan.protocol_name}, not cached in {folder}; set eval.whole=auto to "
                f"train it ({whole.num_models} networks x {cfg.whole_epochs} epochs)"
            )
        if images is None:
            every = torch.arange(len(train))
            images, labels = train.decode(every), train.labels[every]
        one = dataclasses.replace(whole, architectures={arch: whole.architectures[arch]})
        expected = expected_seconds(one, images, labels, test, spec, device)
        log(
            f"the whole-data accuracy of {spec.name} and {arch} under protocol "
            f"{plan.protocol_name} is not cached: training it first ({whole.num_models} networks "
            f"x {cfg.whole_epochs} epochs on {len(train)} images, about {expected:.0f} s) -> "
            f"{folder}"
        )
        raw = one.scores({"whole": [(images, labels)]}, test, spec.normaliser, device)
        found[arch] = raw["whole"][arch]
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"manifest": manifest, "accuracies": found[arch].tolist()}, indent=2)
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text + "\n"))
    return found


def expected_seconds(
    plan: EvaluationPlan,
    images: Tensor,
    labels: Tensor,
    test: ImageSet,
    spec: DatasetSpec,
    device: torch.device | None,
) -> float:
    """The plan's training time on (images, labels), from one epoch of one network on a slice."""
    n = min(CALIBRATION_IMAGES, images.shape[0])
    probe = dataclasses.replace(plan.variant(epochs=1), num_models=1)
    few = ImageSet(test.images[:1], test.labels[:1], list(range(test.num_classes)))
    started = time.time()
    probe.scores({"probe": [(images[:n], labels[:n])]}, few, spec.normaliser, device)
    per_image_epoch = (time.time() - started) / n
    return (
        per_image_epoch
        * images.shape[0]
        * plan.protocols[next(iter(plan.protocols))].epochs
        * (plan.num_models)
    )


def read_record(path: Path, manifest: dict) -> dict | None:
    """The cached record at `path` when it is readable and made for `manifest`; else None
    (an unreadable or foreign file is retrained over)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if manifest_digest(record.get("manifest", {})) != manifest_digest(manifest):
        return None
    return record


def robust_scores(
    wanted: Sequence[str], raw: Mapping[str, Mapping[str, Tensor]], name: str
) -> dict[str, dict]:
    """{architecture: {score: {its value and raw terms, fractions}}} from the raw accuracies of
    the sets `name`, "random", f"{name}:hard", "whole:hard", f"{name}:noaug", "random:noaug"."""
    out: dict[str, dict] = {}
    for arch in raw[name]:

        def acc(set_name: str, arch: str = arch) -> float:
            return float(raw[set_name][arch].mean())

        entry = {}
        if "lrs" in wanted:
            terms = {
                "whole_hard": acc("whole:hard"),
                "synthetic_hard": acc(f"{name}:hard"),
                "synthetic": acc(name),
                "random": acc("random"),
            }
            got = label_robust_score(*terms.values())
            entry["lrs"] = {
                "lrs": got.lrs,
                "hlr": got.hard_label_recovery,
                "ior": got.improvement_over_random,
                "alpha": got.alpha,
                **terms,
            }
        if "ars" in wanted:
            terms = {
                "synthetic_aug": acc(name),
                "random_aug": acc("random"),
                "synthetic_noaug": acc(f"{name}:noaug"),
                "random_noaug": acc("random:noaug"),
            }
            got = augmentation_robust_score(*terms.values())
            entry["ars"] = {
                "ars": got.ars,
                "with_aug": got.with_augmentation,
                "without_aug": got.without_augmentation,
                "beta": got.beta,
                **terms,
            }
        out[arch] = {k: {t: round(v, 6) for t, v in e.items()} for k, e in entry.items()}
    return out


def score_rows(scores: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[dict]:
    """results.csv rows of the scores and their terms (fractions): set "lrs", "lrs.hlr", ..."""
    rows = []
    for arch, by_score in scores.items():
        for score, terms in by_score.items():
            for term, value in terms.items():
                name = score if term == score else f"{score}.{term}"
                rows.append({"set": name, "architecture": arch, "mean": value, "std": "",
                             "networks": "", "unit": "fraction"})  # fmt: skip
    return rows
