"""Turn a composed config into the run's objects: data, networks, augmentation, method, the
evaluation plan, the trainer.

Every job calls these once at its top and passes the objects down, so `train`, `evaluate` and
`continual` read a config the same way. Nothing here edits the config.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from dmcondense.augment.crops import default_crop_factor
from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.sources import SOURCES
from dmcondense.data.spec import DatasetSpec, configured_num_classes
from dmcondense.data.streaming import STREAMING_SOURCES, StreamingClassDataModule
from dmcondense.errors import ConfigError
from dmcondense.evaluation.plan import EvaluationPlan
from dmcondense.evaluation.protocol import (
    Protocol,
    check_dsa_settings,
    dsa_augment,
    idc_protocol,
    ncfm_protocol,
    rded_protocol,
)
from dmcondense.evaluation.score import BACKENDS
from dmcondense.glue.tracking import WANDB_OFFLINE_MODES, WANDB_TARGET, wandb_credentials_found
from dmcondense.methods.base import CondensationMethod
from dmcondense.models.experts import ExpertRecipe, ExpertStore, experts_manifest
from dmcondense.models.network_store import keyed_folder
from dmcondense.models.pretrained import PoolRecipe, PretrainedPool, pool_manifest
from dmcondense.models.registry import MODELS, build_model, default_depth, uses_batchnorm
from dmcondense.progress import LossBar, StepLines
from dmcondense.progress import on_terminal as progress_on_terminal

EVAL_PROTOCOLS = ("dsa", "dc", "idc", "ncfm", "rded", "mtt")
# soft: a teacher's labels computed once on the stored images (NCFM's); relabel: the teacher
# labels every augmented batch anew (RDED's, eval.protocol=rded only).
EVAL_LABELS = ("hard", "soft", "relabel")
TEACHER_LABELS = ("soft", "relabel")
WHOLE_CHOICES = ("auto", "never")
POOL_BUILDS = ("never", "auto")
GPU_PROGRESS_EVERY = 50  # the progress bar's default refresh interval off the CPU


def model_knobs(cfg: DictConfig) -> dict:
    """The model group's constructor knobs (everything but its name)."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    model.pop("name")
    return model


def architectures(cfg: DictConfig) -> dict[str, dict]:
    """eval.models -> each one's constructor knobs, from eval.architectures."""
    known = cfg.eval.architectures
    unknown = [name for name in cfg.eval.models if name not in known]
    if unknown:
        raise ConfigError(
            f"unknown evaluation model '{unknown[0]}'; choose eval.models from {', '.join(known)}"
        )
    return {name: OmegaConf.to_container(known[name], resolve=True) for name in cfg.eval.models}


def eval_backend(cfg: DictConfig) -> str:
    if cfg.eval.backend not in BACKENDS:
        raise ConfigError(
            f"unknown eval.backend '{cfg.eval.backend}'; choose one of {', '.join(BACKENDS)}"
        )
    return cfg.eval.backend


def check_evaluation(cfg: DictConfig) -> None:
    """The eval group's choices, checked before anything runs (a typo answers before a long
    condensation rather than after it)."""
    eval_backend(cfg)
    architectures(cfg)
    check_dsa_settings(cfg.eval.dsa_family, cfg.eval.dsa_strategy)
    if cfg.eval.protocol not in EVAL_PROTOCOLS:
        raise ConfigError(
            f"unknown eval.protocol '{cfg.eval.protocol}'; choose one of "
            f"{', '.join(EVAL_PROTOCOLS)}"
        )
    # Only the protocols with CutMix read it (a config saved before it existed has no key).
    if cfg.eval.protocol in ("idc", "ncfm") and not 0.0 <= float(cfg.eval.cutmix_p) <= 1.0:
        raise ConfigError(f"eval.cutmix_p must be a probability in [0, 1], got {cfg.eval.cutmix_p}")
    labels = cfg.eval.get("labels", "hard")
    if labels not in EVAL_LABELS:
        raise ConfigError(f"unknown eval.labels '{labels}'; choose one of {', '.join(EVAL_LABELS)}")
    if labels == "soft" and not float(cfg.eval.temperature) > 0:
        raise ConfigError(f"eval.temperature must be positive, got {cfg.eval.temperature}")
    if labels == "relabel" and cfg.eval.protocol != "rded":
        raise ConfigError(
            "eval.labels=relabel (the teacher labels every augmented batch) is RDED's: use it "
            "with eval.protocol=rded, or eval.labels=soft for labels computed once"
        )
    if cfg.eval.protocol == "rded" and not float(cfg.eval.get("rded_temperature", 20)) > 0:
        raise ConfigError(
            f"eval.rded_temperature must be positive, got {cfg.eval.rded_temperature}"
        )
    lr_search(cfg)
    whole = cfg.eval.get("whole", "auto")
    if whole not in WHOLE_CHOICES:
        raise ConfigError(f"unknown eval.whole '{whole}'; choose one of {', '.join(WHOLE_CHOICES)}")


def lr_search(cfg: DictConfig) -> list[float]:
    """eval.lr_search as a list of learning rates (empty: no search); one line for a value that
    is not a positive number."""
    value = cfg.eval.get("lr_search") or []
    values = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]
    rates = []
    for v in values:
        try:
            rate = float(v)
        except (TypeError, ValueError):
            rate = float("nan")
        if not rate > 0:
            raise ConfigError(
                f"eval.lr_search holds {v!r}; give positive learning rates, e.g. "
                f"eval.lr_search=[0.001,0.01,0.1]"
            )
        rates.append(rate)
    if rates and not 0.0 < float(cfg.eval.lr_holdout) < 1.0:
        raise ConfigError(
            f"eval.lr_holdout must be a fraction in (0, 1), got {cfg.eval.lr_holdout}"
        )
    return rates


def on_gpu(cfg: DictConfig) -> bool:
    """Whether the trainer group runs on a CUDA device."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def deterministic_mode(cfg: DictConfig) -> bool | str:
    """trainer.deterministic as Lightning takes it. On a GPU `true` is Lightning's "warn":
    every op that has a deterministic CUDA kernel uses it, and an op without one (DSA's
    grid_sample, multi-formation's bilinear upsampling and adaptive pooling, all in their
    backward) runs anyway with a warning that names it, where `true` alone would stop the run
    at that op with a traceback."""
    value = cfg.trainer.get("deterministic") or False
    if value is True and on_gpu(cfg):
        return "warn"
    return value


def set_numerics(cfg: DictConfig) -> None:
    """The process's numerics, set by every job before its first network runs (trainer,
    eval_device): CUDA fp32 convolutions and matmuls in TF32 under `tf32=true`, IEEE fp32 under
    false (PyTorch's own default is TF32 for convolutions only); under trainer.deterministic
    deterministic algorithms (deterministic_mode), cuDNN's deterministic kernels and cuBLAS's
    fixed workspace. Only CUDA flags: the CPU's numerics are left as they are."""
    tf32 = bool(cfg.get("tf32", True))
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    mode = deterministic_mode(cfg)
    torch.use_deterministic_algorithms(bool(mode), warn_only=mode == "warn")
    torch.backends.cudnn.deterministic = bool(mode)
    if mode:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def local_rank() -> int:
    """This process's rank on its node, before Lightning starts: LOCAL_RANK (Lightning's
    launcher and torchrun set it) or SLURM_LOCALID (srun starts every rank of a job)."""
    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return 0


def trainer_device_indices(devices: object) -> list[int] | None:
    """The GPU indices trainer.devices names ([1, 3], "1,3", "1,"), or None where it gives only
    a count ("auto", 2, -1): Lightning then uses the first GPUs in order."""
    if OmegaConf.is_list(devices) or isinstance(devices, list | tuple):
        return [int(d) for d in devices]
    if isinstance(devices, str) and "," in devices:
        return [int(d) for d in devices.split(",") if d.strip()]
    return None


def eval_device(cfg: DictConfig) -> torch.device:
    """Where this process's evaluation networks (and a pool it builds) train: on a GPU run, the
    GPU that Lightning gives this rank (trainer.devices, this process's local rank), not a bare
    `cuda` (cuda:0, whatever trainer.devices says). Sets the run's numerics (set_numerics)
    first."""
    set_numerics(cfg)
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        rank = local_rank()
        indices = trainer_device_indices(cfg.trainer.get("devices", "auto"))
        if indices is None:
            return torch.device("cuda", rank)
        if rank >= len(indices):
            raise ConfigError(
                f"local rank {rank} has no GPU in trainer.devices={list(indices)}; "
                "give one device a process"
            )
        return torch.device("cuda", indices[rank])
    if accelerator in ("gpu", "cuda"):
        raise ConfigError(f"trainer.accelerator={accelerator} but no CUDA device is visible")
    return torch.device("cpu")


def embedding_network(cfg: DictConfig, spec: DatasetSpec) -> torch.nn.Module:
    name = cfg.model.name
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join(MODELS)}")
    shape = (spec.channels, spec.num_classes, spec.image_size)
    try:
        net = build_model(name, *shape, **model_knobs(cfg))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"model {name}: {error}") from error
    if not hasattr(net, "embed"):
        raise ConfigError(f"model '{name}' has no embed(); use convnet or convnet_bn to condense")
    return net


def augmenter(cfg: DictConfig):
    try:
        return instantiate(cfg.augment)
    except Exception as error:  # Hydra wraps the constructor's ValueError/TypeError
        cause = error.__cause__ or error
        raise ConfigError(f"augment: {cause}") from error


def method(cfg: DictConfig, spec: DatasetSpec, initial_images: torch.Tensor) -> CondensationMethod:
    """The `method` group's LightningModule, given what every method shares; a method that
    matches with pretrained networks also gets the pool's weights (`pool=`)."""
    make = instantiate(cfg.method, _partial_=True)
    extra = {}
    if uses_pool(cfg):
        extra["pool"] = ready_pool(cfg, spec).load(int(cfg.pool.size))
    if uses_experts(cfg):
        check_expert_window(cfg)
        extra["experts"] = ready_experts(cfg, spec).trajectories(int(cfg.experts.size))
    return make(
        **extra,
        embed_net=embedding_network(cfg, spec),
        augment=augmenter(cfg),
        initial_images=initial_images,
        num_classes=spec.num_classes,
        normaliser=spec.normaliser,
        lr_img=cfg.lr_img,
        momentum=cfg.momentum,
        seed=cfg.seed,
        channels_last=cfg.channels_last,
        compile=cfg.compile,
        factor=cfg.synthetic.factor,
    )


def uses_pool(cfg: DictConfig) -> bool:
    """Whether the `method` group's module matches with a pool of pretrained networks."""
    return bool(getattr(get_class(cfg.method._target_), "uses_pretrained_pool", False))


def uses_experts(cfg: DictConfig) -> bool:
    """Whether the `method` group's module matches expert trajectories (MTT, DATM)."""
    return bool(getattr(get_class(cfg.method._target_), "uses_experts", False))


def check_expert_window(cfg: DictConfig) -> None:
    """The method's start window and target (max_start_epoch - 1 + expert_epochs) within the
    experts' epochs, before any expert is trained for it."""
    m = cfg.method
    reach = int(m.max_start_epoch) - 1 + int(m.expert_epochs)
    if reach > int(cfg.experts.epochs):
        raise ConfigError(
            f"method.max_start_epoch={m.max_start_epoch} and method.expert_epochs="
            f"{m.expert_epochs} reach expert epoch {reach}, but experts.epochs="
            f"{cfg.experts.epochs}; set experts.epochs={reach} or more, or lower them"
        )


EXPERT_OPTIMIZERS = ("sgd", "gsam")


def expert_recipe(cfg: DictConfig) -> ExpertRecipe:
    e = cfg.experts
    optimizer = str(e.get("optimizer", "sgd"))
    if optimizer not in EXPERT_OPTIMIZERS:
        raise ConfigError(
            f"unknown experts.optimizer '{optimizer}'; choose one of {', '.join(EXPERT_OPTIMIZERS)}"
            " (experts=gsam sets DATM's)"
        )
    gsam = (
        {"rho": float(e.rho), "alpha": float(e.alpha), "adaptive": bool(e.adaptive)}
        if optimizer == "gsam"
        else {}
    )
    return ExpertRecipe(
        epochs=int(e.epochs), lr=float(e.lr), momentum=float(e.momentum),
        weight_decay=float(e.weight_decay), batch_size=int(e.batch_size), augment=str(e.augment),
        optimizer=optimizer, **gsam,
    )  # fmt: skip


def check_experts(cfg: DictConfig) -> None:
    """experts.size, epochs, batch_size and build, before anything is loaded."""
    check_cached_group(cfg, "experts")


def dataset_key(spec: DatasetSpec) -> dict:
    """The data set's facts in a cache key (pools, experts)."""
    return {"name": spec.name, "channels": spec.channels, "image_size": spec.image_size,
            "num_classes": spec.num_classes}  # fmt: skip


def resolved_knobs(cfg: DictConfig, spec: DatasetSpec) -> dict:
    """The model's knobs with the ConvNet's depth resolved (the key names what was built)."""
    knobs = model_knobs(cfg)
    if cfg.model.name in ("convnet", "convnet_bn") and knobs.get("depth") is None:
        knobs["depth"] = default_depth(spec.image_size)
    return knobs


def expert_store(cfg: DictConfig, spec: DatasetSpec) -> ExpertStore:
    """The experts of this data set (and its whitening), model (knobs resolved), recipe and
    seed: their keyed folder under experts.root, or experts.dir when set."""
    check_experts(cfg)
    dataset = {**dataset_key(spec), "zca": spec.whitening_key()}
    manifest = experts_manifest(
        dataset, cfg.model.name, resolved_knobs(cfg, spec), expert_recipe(cfg), cfg.experts.seed
    )
    folder = cfg.experts.dir or keyed_folder(cfg.experts.root, manifest)
    return ExpertStore(Path(str(folder)).expanduser(), manifest)


def experts_command(cfg: DictConfig, size: int | None = None) -> str:
    """The experts command that makes this run's experts (`size`, default experts.size)."""
    return cache_command(cfg, "experts", "experts", size)


def ready_experts(cfg: DictConfig, spec: DatasetSpec, count: int | None = None) -> ExpertStore:
    """The run's experts, with the first `count` (default experts.size) finished; otherwise one
    line that gives the experts command (the jobs train them first under experts.build=auto)."""
    store = expert_store(cfg, spec)
    count = int(cfg.experts.size) if count is None else count
    finished = set(store.check_all()) if store.folder.is_dir() else set()
    missing = [i for i in range(count) if i not in finished]
    if missing:
        have = f"have {len(finished)} of {count} experts" if finished else "are missing"
        raise ConfigError(
            f"the expert trajectories for {spec.name} and {cfg.model.name} ({store.folder}) "
            f"{have}; make them with: {experts_command(cfg, count)} (or add experts.build=auto)"
        )
    return store


def pool_recipe(cfg: DictConfig) -> PoolRecipe:
    p = cfg.pool
    return PoolRecipe(
        epochs=int(p.epochs), lr=float(p.lr), momentum=float(p.momentum),
        weight_decay=float(p.weight_decay), batch_size=int(p.batch_size),
        augment=str(p.augment), cutmix=float(p.cutmix),
    )  # fmt: skip


def check_pool(cfg: DictConfig) -> None:
    """pool.size, pool.epochs, pool.batch_size and pool.build, before anything is loaded."""
    check_cached_group(cfg, "pool")


def check_cached_group(cfg: DictConfig, group: str) -> None:
    """A job-made cache's group (pool, experts): size, epochs and batch_size of 1 or more, a
    known build."""
    node = cfg[group]
    for key in ("size", "epochs", "batch_size"):
        value = node.get(key)
        if value is None or int(value) < 1:
            raise ConfigError(f"{group}.{key} must be 1 or more, got {value}; set {group}.{key}=N")
    if node.build not in POOL_BUILDS:
        raise ConfigError(
            f"unknown {group}.build '{node.build}'; choose one of {', '.join(POOL_BUILDS)}"
        )


def pretrained_pool(cfg: DictConfig, spec: DatasetSpec) -> PretrainedPool:
    """The pool of this data set, model (knobs resolved) and recipe: its keyed folder under
    pool.root, or pool.dir when set. A whitened data set (dataset.zca=true) is a key of its own;
    the key of an unwhitened one is as it always was."""
    check_pool(cfg)
    dataset = dataset_key(spec)
    if spec.zca is not None:
        dataset["zca"] = spec.whitening_key()
    knobs = resolved_knobs(cfg, spec)
    manifest = pool_manifest(dataset, cfg.model.name, knobs, pool_recipe(cfg), cfg.pool.seed)
    folder = cfg.pool.dir or keyed_folder(cfg.pool.root, manifest)
    return PretrainedPool(Path(str(folder)).expanduser(), manifest)


def pretrain_command(cfg: DictConfig, size: int | None = None) -> str:
    """The pretrain command that makes this run's pool (`size` networks, default pool.size)."""
    return cache_command(cfg, "pretrain", "pool", size)


def cache_command(cfg: DictConfig, job: str, group: str, size: int | None = None) -> str:
    """The command of `job` that makes this run's cache of `group` (pool, experts) with `size`
    members (default <group>.size): its data set and model choices and the command line's data
    set, model and group keys."""
    words = [f"dataset={cfg.dataset.name}", f"model={cfg.model.name}"]
    if HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
        words = [f"dataset={choices.get('dataset')}", f"model={choices.get('model')}"]
        if choices.get("trainer") not in (None, "cpu"):  # train on the run's device
            words.append(f"trainer={choices.get('trainer')}")
        if choices.get("pool") not in (None, "default"):  # another recipe: another pool
            words.append(f"pool={choices.get('pool')}")
        for override in HydraConfig.get().overrides.task:
            key = override.split("=", 1)[0].lstrip("+~")
            if key.startswith(("dataset.", "model.", f"{group}.", "path", "data_dir")) and (
                key != f"{group}.build"
            ):
                words.append(override)
    else:
        if cfg.model.get("width") is not None:
            words.append(f"model.width={cfg.model.width}")
        if cfg.dataset.get("zca", False):
            words.append("dataset.zca=true")
    node = cfg[group]
    words = [w for w in words if not w.startswith(f"{group}.size=")]
    words += [f"{group}.size={size or node.size}", f"{group}.epochs={node.epochs}"]
    return f"python -m dmcondense.{job} " + " ".join(dict.fromkeys(words))


def ready_pool(cfg: DictConfig, spec: DatasetSpec, count: int | None = None) -> PretrainedPool:
    """The run's pool, with its first `count` (default pool.size) networks finished; otherwise
    one line that gives the pretrain command (the jobs build the pool first under
    pool.build=auto)."""
    pool = pretrained_pool(cfg, spec)
    count = int(cfg.pool.size) if count is None else count
    finished = set(pool.check_all()) if pool.folder.is_dir() else set()
    missing = [i for i in range(count) if i not in finished]
    if missing:
        have = f"has {len(finished)} of {count} networks" if finished else "is missing"
        raise ConfigError(
            f"the pretrained pool for {spec.name} and {cfg.model.name} ({pool.folder}) {have}; "
            f"make it with: {pretrain_command(cfg, count)} (or add pool.build=auto)"
        )
    return pool


def datamodule(
    cfg: DictConfig, dataset: DictConfig | None = None, classes: list[int] | None = None
) -> ClassBatchDataModule:
    """In memory (uint8, moved once to the device), or with dataset.streaming=true read from
    disk step by step: only the sampled images are decoded, in dataset.num_workers workers.
    `dataset` replaces cfg.dataset (the evaluation job reads a saved set's data set); `classes`
    keeps those classes' training images only, relabelled 0.. in that order (continual steps)."""
    d = cfg.dataset if dataset is None else dataset
    if d.source not in SOURCES:
        raise ConfigError(
            f"unknown dataset.source '{d.source}'; choose one of {', '.join(SOURCES)}"
        )
    strict = bool(d.get("strict", False))
    source_kwargs = {}
    if d.source == "imagefolder":
        source_kwargs = {"image_size": d.image_size, "strict": strict}
    root = d.get("path") or cfg.data_dir
    common = {
        "source": d.source,
        "data_dir": str(Path(root).expanduser()),
        "num_classes": configured_num_classes(d),
        "batch_real": cfg.batch_real,
        "iterations": cfg.iterations,
        "seed": cfg.seed,
        "download": d.download,
        "source_kwargs": source_kwargs,
        "classes": classes,
    }
    if not d.get("streaming", False):
        return ClassBatchDataModule(**common)
    if d.source not in STREAMING_SOURCES:
        raise ConfigError(
            f"dataset.streaming=true works for {' and '.join(STREAMING_SOURCES)}, not "
            f"'{d.source}' (it fits in memory); set dataset.streaming=false"
        )
    return StreamingClassDataModule(
        **common,
        channels=d.channels,
        image_size=d.image_size,
        num_workers=int(d.get("num_workers", 2)),
        strict=strict,
    )


def evaluation_plan(
    cfg: DictConfig,
    spec: DatasetSpec,
    epochs: int | None = None,
    teacher: torch.nn.Module | None = None,
) -> EvaluationPlan:
    """The eval group, resolved once: architectures, their protocols, networks, backend, seed.
    `epochs` replaces the protocol's epochs under dsa, idc and ncfm (the whole-data baseline's
    budget); `teacher` labels the sets under eval.labels=soft (jobs/pretrain.py: teacher)."""
    check_evaluation(cfg)
    labels = cfg.eval.get("labels", "hard")
    if labels in TEACHER_LABELS and teacher is None:
        raise ConfigError(
            f"eval.labels={labels} is scored by python -m dmcondense.train and "
            f"dmcondense.evaluate only; set eval.labels=hard here"
        )
    return EvaluationPlan(
        teacher=teacher,
        protocol_name=str(cfg.eval.protocol),
        architectures=architectures(cfg),
        protocols=protocols(cfg, spec, epochs),
        num_models=int(cfg.eval.num_models),
        backend=str(cfg.eval.backend),
        seed=int(cfg.seed),
    )


def protocols(cfg: DictConfig, spec: DatasetSpec, epochs: int | None = None) -> dict[str, Protocol]:
    """Each evaluated architecture's protocol (eval.protocol):
    dsa  the common protocol of the DSA and DM papers: eval.epochs (or `epochs`), DSA when
         eval.augment (families eval.dsa_strategy, one a batch or per image: eval.dsa_family)
    dc   as the DC paper scored its sets: 300 epochs without augmentation; MNIST 1,000 epochs
         with crop, scale and rotate; BatchNorm models 1,000 epochs with crop
    idc  IDC's (and M3D's): eval.epochs (or `epochs`), SGD, batch 64, x 0.2 at 2/3 and 5/6,
         IDC's DSA per image over eval.dsa_strategy, CutMix with eval.cutmix_p
    ncfm NCFM's: eval.ncfm_epochs (or `epochs`), AdamW lr 1e-3, batch 128, x 0.5 at each fifth,
         IDC's DSA per image over eval.dsa_strategy without cutout, CutMix with eval.cutmix_p
    rded RDED's: eval.rded_epochs (or `epochs`), AdamW lr 1e-3 (2e-3 on CIFAR-100), batch by
         IPC, half cosine, patch shuffle + resized crop + flip, CutMix on every batch; under
         eval.labels=relabel the teacher labels each batch at eval.rded_temperature
    mtt  MTT's: dsa's, with the networks trained at the set's learned step size (mtt_plan;
         eval.lr for sets that learned none, such as the random baseline)
    """
    kind = str(cfg.eval.get("labels", "hard"))
    key = "rded_temperature" if kind == "relabel" else "temperature"
    temperature = cfg.eval.get(key, 20.0 if kind == "relabel" else 1.0)
    labels = {"labels": kind, "temperature": float(temperature)}
    return {name: dataclasses.replace(p, **labels) for name, p in
            protocol_choices(cfg, spec, epochs).items()}  # fmt: skip


def protocol_choices(
    cfg: DictConfig, spec: DatasetSpec, epochs: int | None = None
) -> dict[str, Protocol]:
    """protocols() before the labels are set."""
    e = cfg.eval
    if e.protocol == "rded":
        factor = e.get("rded_factor") or default_crop_factor(spec.image_size)
        # Their argument.py's special cases: conv3 on CIFAR-100, lr 2e-3 and batch 25; batch
        # 100 on TinyImageNet; elsewhere the batch follows the IPC (0).
        cifar100 = spec.name == "cifar100"
        batch = {"cifar100": 25, "tinyimagenet": 100}.get(spec.name, 0)
        one = rded_protocol(
            epochs=int(epochs or e.rded_epochs), patch_factor=int(factor),
            lr=2e-3 if cifar100 else 1e-3, batch_size=batch,
        )  # fmt: skip
        return {name: one for name in architectures(cfg)}
    if e.protocol in ("idc", "ncfm"):
        make = idc_protocol if e.protocol == "idc" else ncfm_protocol
        default_epochs = e.epochs if e.protocol == "idc" else e.ncfm_epochs
        one = make(epochs=int(epochs or default_epochs), dsa_strategy=str(e.dsa_strategy),
                   cutmix_p=float(e.cutmix_p))  # fmt: skip
        return {name: one for name in architectures(cfg)}
    common = dict(lr=e.lr, momentum=e.momentum, weight_decay=e.weight_decay,
                  batch_size=e.batch_size)  # fmt: skip
    dc_epochs = e.get("dc_epochs")  # a budget in place of DC's own 300 / 1,000
    chosen = {}
    for name, knobs in architectures(cfg).items():
        if e.protocol in ("dsa", "mtt"):  # mtt: the set's learned lr replaces eval.lr (mtt_plan)
            augment = dsa_augment(e.dsa_family) if e.augment else "none"
            chosen[name] = Protocol(epochs=epochs or e.epochs, augment=augment,
                                    dsa_strategy=e.dsa_strategy, **common)  # fmt: skip
            continue
        shape = (spec.channels, spec.num_classes, spec.image_size)
        if uses_batchnorm(build_model(name, *shape, **knobs)):
            chosen[name] = Protocol(epochs=dc_epochs or 1000, augment="dc_batchnorm", **common)
        elif spec.name.startswith("mnist"):
            chosen[name] = Protocol(epochs=dc_epochs or 1000, augment="dc_mnist", **common)
        else:
            chosen[name] = Protocol(epochs=dc_epochs or 300, augment="none", **common)
    return chosen


def mtt_plan(plan: EvaluationPlan, lr: float | None, what: str) -> EvaluationPlan:
    """Under eval.protocol=mtt, `plan` with the learned step size `lr` of the set `what` as the
    evaluation networks' learning rate (MTT's evaluation); other protocols: `plan` as it is."""
    if plan.protocol_name != "mtt":
        return plan
    if lr is None:
        raise ConfigError(
            f"eval.protocol=mtt trains at a set's learned step size, and {what} has none; "
            f"use eval.protocol=dsa"
        )
    return plan.variant(lr=float(lr))


def wandb_logger_kwargs(cfg: DictConfig) -> dict:
    """For `logger=wandb`: {"offline": True} when WANDB_MODE says so or no API key is
    configured, else {"offline": False}; {} for other loggers. Passed to the logger's
    constructor, so the config stays as composed."""
    logger = cfg.get("logger")
    if not logger or logger.get("_target_") != WANDB_TARGET:
        return {}
    mode = os.environ.get("WANDB_MODE", "").lower()
    offline = bool(logger.get("offline")) or mode in WANDB_OFFLINE_MODES
    if not offline and mode != "disabled" and not wandb_credentials_found():
        print(
            "W&B: no API key found (WANDB_API_KEY or `wandb login`); logging offline",
            flush=True,
        )
        offline = True
    return {"offline": offline}


def progress_every(cfg: DictConfig) -> int:
    """The bar's refresh interval: progress_every, or by default each step on the CPU and every
    GPU_PROGRESS_EVERY steps elsewhere (each refresh reads the loss: a host-device sync)."""
    every = cfg.get("progress_every")
    if every is not None:
        return int(every)
    return 1 if str(cfg.trainer.get("accelerator", "cpu")) == "cpu" else GPU_PROGRESS_EVERY


def trainer(
    cfg: DictConfig, run_dir: Path, callbacks: list, plugins: list | None = None
) -> L.Trainer:
    """The Lightning Trainer of the trainer group, with the logger of the logger group (W&B
    offline when it has no key) and `plugins` (the checkpoint writer)."""
    logger = instantiate(cfg.logger, **wandb_logger_kwargs(cfg)) if cfg.get("logger") else False
    # The bar reads the logged loss, a host-device sync: on a GPU refresh it every N steps.
    # Off a terminal (a log file), plain lines instead of a bar's carriage-return frames.
    progress = LossBar(refresh_rate=progress_every(cfg))
    on_terminal = progress_on_terminal()
    set_numerics(cfg)
    return instantiate(
        cfg.trainer,
        deterministic=deterministic_mode(cfg),
        logger=logger,
        callbacks=[*callbacks, progress if on_terminal else StepLines()],
        enable_progress_bar=on_terminal,
        plugins=plugins or [],
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
