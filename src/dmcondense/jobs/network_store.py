"""What the pretrain and experts jobs share: fill a keyed folder of trained networks
(models/network_store.py) from the run's config, every member already there checked first, and
the job around it, which leaves results.json in its run folder: the folder, how many members
were trained now and reused, and what making them cost as their records say, whenever made."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dmcondense.atomic import atomic_write_json, exclusive
from dmcondense.augment import DSA
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.imageset import ImageSet
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError
from dmcondense.hostmem import peak_resident_mib, reuse_freed_memory
from dmcondense.jobs import build
from dmcondense.jobs.common import load_data, load_test, quiet_library_chatter
from dmcondense.models.network_store import NetworkStore


def fill(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec, store: NetworkStore,
    build_members: Callable[..., int], recipe: object, augment: str | None, size: int | None,
    doing: str,
) -> int:  # fmt: skip
    """Train with `build_members` (build_pool, build_experts) the members 0..size-1 (default
    <group>.size) that `store` lacks on the data module's training split, on the evaluation
    device, with the DSA strategy `augment` (None: none); returns how many it trained."""
    group = store.kind
    store.check_all()  # before reading the test split: a bad folder answers at once
    train = training_split(dm, doing)
    try:
        dsa = None if augment is None else DSA(strategy=augment)
    except ValueError as error:
        raise ConfigError(f"{group}.augment: {error}") from error
    test = load_test(dm, cfg.dataset)
    # Every rank of a SLURM job (and each rank Lightning's launcher starts) runs the job's
    # pre-fit code: one trains the members on its own GPU, the others wait, then find them built.
    # The lock is the key's folder, not the root: jobs of other keys need not wait.
    with exclusive(store.folder):
        return build_members(
            store,
            make_network=lambda: build.embedding_network(cfg, spec),
            size=int(cfg[group].size) if size is None else size,
            images=train.images,
            labels=train.labels,
            normalise=spec.normaliser.to_input_fused,
            augment=dsa,
            recipe=recipe,
            seed=int(cfg[group].seed),
            device=build.eval_device(cfg),
            test=(test.images, test.labels),
        )


def training_split(dm: ClassBatchDataModule, doing: str) -> ImageSet:
    """The training split, in memory (`doing` names what reads it when it is streamed)."""
    if not hasattr(dm.train_set, "images"):
        raise ConfigError(
            f"{doing} reads the training split into memory; set dataset.streaming=false"
        )
    return dm.train_set


def run(
    cfg: DictConfig,
    group: str,
    make: Callable[[DictConfig, ClassBatchDataModule, DatasetSpec], tuple[NetworkStore, int]],
    what: str,
    footnote: Callable[[DictConfig, DatasetSpec], str] = lambda cfg, spec: "",
) -> Path:
    """The job: check `group`'s sizes, load the data, `make` the store (the members it lacks),
    write results.json (`summary`) into the run folder, then say how many of `what` it trained
    (and `footnote`) and, last, where the store is."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    build.check_cached_group(cfg, group)  # a bad size answers before the data loads
    quiet_library_chatter()
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    dm = load_data(cfg)
    spec = resolve_spec(cfg.dataset, dm.train_set)
    store, trained = make(cfg, dm, spec)
    size = int(cfg[group].size)
    seconds = time.time() - started
    atomic_write_json(
        run_dir / "results.json", summary(group, store, size, trained, seconds), indent=2
    )
    print(
        f"{size} {what} ({trained} trained now, {size - trained} reused) in "
        f"{seconds:.0f} s{footnote(cfg, spec)}"
    )
    print(f"{group}: {store.folder}")
    return store.folder


def summary(group: str, store: NetworkStore, size: int, trained: int, seconds: float) -> dict:
    """The job's results.json: the store, how many members it trained now and reused, what
    making members 0..size-1 cost (`making_seconds` summed, `making_peak_mib` the largest
    building process's peak: None where a member has no readable record, `unrecorded` names
    them), and the job's own seconds and peak, which for reused members is the cost of checking
    them."""
    making = store.making_total(size)
    return {
        "job": group,
        "folder": str(store.folder),
        "size": size,
        "trained_now": trained,
        "reused": size - trained,
        "making_seconds": making["seconds"],
        "making_peak_mib": making["peak_mib"],
        "unrecorded": making["unrecorded"],
        "job_seconds": round(seconds, 3),
        "job_peak_mib": round(peak_resident_mib(), 1),
    }
