"""The evaluate job: build the training sets (saved synthetic sets or baseline selections),
train fresh networks on each with the protocol, and write the table.

results.json (evaluate):
    what                      "condensed <path>" or "baseline <name> (ipc N)"
    dataset, ipc, seed        the setting
    experiments               synthetic sets (or baseline selections) scored
    networks_per_experiment   eval.num_models
    epochs                    training epochs of each network
    evaluation                what each architecture's networks trained with
    seconds                   wall time of the job
    results                   {set: {architecture: {mean, std, accuracies}}}: test accuracy in
                              percent, mean and population std over every network of every
                              experiment; the set is condensed_name, else the method that
                              condensed it (a res_*.pt: its file name's; other formats: the
                              format's name), or the baseline's name
    labels                    hard | soft (eval.labels)
    lr_search                 with eval.lr_search: each set's chosen learning rate and every
                              candidate's accuracy on the held-out training images
    scores                    with scores=[lrs,ars]: {architecture: {lrs: {lrs, hlr, ior, alpha,
                              whole_hard, synthetic_hard, synthetic, random}, ars: {ars,
                              with_aug, without_aug, beta, synthetic_aug, random_aug,
                              synthetic_noaug, random_noaug}}}, all fractions of 1; `results`
                              then also holds "random", "<set>:hard", "whole:hard",
                              "<set>:noaug" and "random:noaug"
results.csv: one row per set and architecture: set, architecture, mean, std, networks (and,
with scores, a unit column and one row per score and term, in fractions).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from dmcondense.data.datamodule import ClassBatchDataModule
from dmcondense.data.spec import DatasetSpec, resolve_spec
from dmcondense.errors import ConfigError, DmcondenseWarning
from dmcondense.evaluation.plan import EvaluationPlan
from dmcondense.evaluation.protocol import accuracy_summary
from dmcondense.evaluation.score import LabelledImages
from dmcondense.hostmem import reuse_freed_memory
from dmcondense.io import read_synthetic
from dmcondense.jobs import build, scores
from dmcondense.jobs.checks import requested_scores
from dmcondense.jobs.common import (
    accuracy_rows,
    load_data,
    load_test,
    quiet_library_chatter,
    select_real,
    write_results,
)
from dmcondense.jobs.pretrain import teacher
from dmcondense.sets import detect_format, fit_set, read_set


def condensed_paths(cfg: DictConfig) -> list[str] | None:
    """condensed= as a list of paths; `synthetic=` is its old spelling, still read this release."""
    value = cfg.condensed
    if cfg.get("synthetic") is not None:  # evaluate.yaml sets it null: given, it is a path
        warnings.warn(
            "synthetic=PATH is now condensed=PATH (synthetic.* holds the multi-formation "
            "settings); the old spelling stops working in the next release",
            DmcondenseWarning,
            stacklevel=2,
        )
        value = cfg.synthetic
    if value is None:
        return None
    return [str(p) for p in value] if OmegaConf.is_list(value) else [str(value)]


def synthetic_sets(
    paths: list[str], cfg: DictConfig
) -> tuple[list[LabelledImages], DictConfig, DatasetSpec, int, str]:
    """The condensed sets (their training images, normalised, and labels: class indices, or
    soft labels as probabilities), the data set config and facts they are scored on, their IPC
    and their name. A synthetic.pt names its data set; a set of another format
    (`condensed_format`, dmcondense/sets.py) is scored on `dataset=`."""
    sets, dataset, spec, ipc, method = [], None, None, None, None
    form, pixels = cfg.get("condensed_format", "auto"), cfg.get("condensed_pixels")
    for path in paths:
        kind = detect_format(Path(path).expanduser()) if form == "auto" else form
        if kind == "dmcondense":
            read = read_set(path, kind)
            saved = read.record["config"]["dataset"]
            this = OmegaConf.merge(cfg.dataset, saved)
        else:
            this = cfg.dataset
        zca = read.record.get("zca") if kind == "dmcondense" else None
        this_spec = stated_spec(cfg, this, zca)
        if spec is not None and this_spec.name != spec.name:
            raise ConfigError(f"{path} was condensed from {this_spec.name}, not {spec.name}")
        dataset, spec = this, this_spec
        if kind != "dmcondense":
            read = read_set(path, kind, list(spec.class_names))
        fitted = fit_set(read, spec, pixels)
        if ipc is None:
            ipc = read.record["ipc"] if read.record else images_per_class(fitted[0], spec)
        method = method or read.name  # synthetic.pt before 0.2 does not say: "synthetic"
        sets += fitted
    return sets, dataset, spec, ipc, cfg.get("condensed_name") or method


def stated_spec(cfg: DictConfig, dataset: DictConfig, zca: dict | None = None) -> DatasetSpec:
    """The data set's facts as its config states them, or as its data gives them (an image
    folder's class count, mean and std; dataset.zca=true without a saved whitening: its fit on
    the training split). `zca`: the whitening a synthetic.pt carries."""
    if dataset.get("zca", False) and zca is None:
        return resolve_spec(dataset, load_data(cfg, dataset).train_set)
    try:
        return DatasetSpec.from_config(dataset, zca=zca)
    except (TypeError, ValueError, MissingMandatoryValue):
        return resolve_spec(dataset, load_data(cfg, dataset).train_set)


def images_per_class(experiment: LabelledImages, spec: DatasetSpec) -> int:
    """Images a class of a set that does not say (its images over the classes)."""
    labels = experiment[1]
    return max(1, labels.shape[0] // spec.num_classes)


def hard_labelled(sets: list[LabelledImages]) -> list[LabelledImages]:
    """The sets with each image's most likely class as its label (soft labels [N, K] -> [N])."""
    return [(images, labels.argmax(dim=1) if labels.dim() == 2 else labels)
            for images, labels in sets]  # fmt: skip


def carried_rates(paths: list[str] | None, form: str = "auto") -> set:
    """The learned step sizes the saved sets carry (a synthetic.pt of method=mtt; None for a
    set without one, and for sets of other formats)."""
    rates = set()
    for path in paths or []:
        kind = detect_format(Path(path).expanduser()) if form == "auto" else form
        rates.add(read_synthetic(path).get("lr") if kind == "dmcondense" else None)
    return rates


def learned_lr(rates: set) -> float | None:
    """The one learned step size of the sets, which eval.protocol=mtt trains at; one line when
    the sets carry different ones (score them one at a time)."""
    if len(rates) > 1:
        raise ConfigError(
            "eval.protocol=mtt trains each set at its own learned step size, and these sets "
            "carry different ones; evaluate them one condensed= at a time"
        )
    return next(iter(rates), None)


def baseline_sets(
    cfg: DictConfig, dm: ClassBatchDataModule, spec: DatasetSpec
) -> list[LabelledImages]:
    """num_exp selections of `baseline`, experiment e drawn with seed + e."""
    train = dm.train_set
    sets = []
    for exp in range(cfg.num_exp):
        seed = cfg.seed + exp
        index = select_real(
            cfg, train, spec, cfg.baseline, seed, ("baseline-random",), ("kcenter",)
        )
        images = train.decode(index)
        sets.append((images if cfg.baseline == "whole" else spec.normaliser.to_input(images),
                     train.labels[index]))  # fmt: skip
    return sets


def run(cfg: DictConfig) -> Path:
    """Score the saved sets or the baseline; `cfg` was checked by check_evaluate_config."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    started = time.time()
    quiet_library_chatter()
    if cfg.get("reuse_host_memory", True):
        reuse_freed_memory()
    paths = condensed_paths(cfg)
    ipc = cfg.ipc
    wanted = requested_scores(cfg)
    rates = build.lr_search(cfg)
    build.check_evaluation(cfg)
    if paths is not None:
        sets, dataset, spec, ipc, name = synthetic_sets(paths, cfg)
        what = f"condensed {', '.join(paths)}"
        needs_train = wanted or rates or cfg.eval.get("labels", "hard") == "soft"
        if needs_train:
            dm = load_data(cfg, dataset)
        else:
            dm = build.datamodule(cfg, dataset)
            dm.prepare_data()
    else:
        dataset, name = cfg.dataset, cfg.baseline
        dm = load_data(cfg)
        spec = resolve_spec(cfg.dataset, dm.train_set)
        sets, what = baseline_sets(cfg, dm, spec), f"baseline {cfg.baseline} (ipc {ipc})"
    test = load_test(dm, dataset)
    plan = build.evaluation_plan(
        cfg, spec, epochs=cfg.whole_epochs if cfg.baseline == "whole" else None,
        teacher=teacher(cfg, dm, spec),
    )  # fmt: skip
    device = build.eval_device(cfg)
    named = {name: sets}
    if wanted:
        named["random"] = random_subsets(cfg, dm.train_set, spec, ipc, len(sets))
    plans = {set_name: plan for set_name in named}
    carried = carried_rates(paths, cfg.get("condensed_format", "auto"))
    if paths is not None and plan.protocol_name == "mtt":
        plans[name] = build.mtt_plan(plan, learned_lr(carried), ", ".join(paths))
    elif carried - {None}:
        print(
            "note: the set carries a learned step size (method=mtt); eval.protocol=mtt trains "
            f"at it, as its authors score it (now: eval.protocol={plan.protocol_name})"
        )
    searched = {}
    if rates:
        plans, searched = search_rates(cfg, plan, named, dm.train_set, spec, rates, device)
    raw = {n: plans[n].scores({n: named[n]}, test, spec.normaliser, device, True)[n]
           for n in named}  # fmt: skip
    if "lrs" in wanted:
        if plan.labels == "hard" and all(labels.dim() == 1 for _, labels in sets):
            raw[f"{name}:hard"] = raw[name]
        else:
            hard = plans[name].variant(labels="hard")
            raw[f"{name}:hard"] = hard.scores({name: hard_labelled(sets)}, test, spec.normaliser,
                                              device, True)[name]  # fmt: skip
        raw["whole:hard"] = scores.whole_accuracies(cfg, plan, dm.train_set, spec, test, device)
    if "ars" in wanted:
        for n in (name, "random"):
            bare = plans[n].variant(augment="none", cutmix_p=0.0)
            raw[f"{n}:noaug"] = bare.scores({n: named[n]}, test, spec.normaliser, device, True)[n]
    results = {n: {arch: accuracy_summary(acc) for arch, acc in by_arch.items()}
               for n, by_arch in raw.items()}  # fmt: skip
    epochs = {arch: protocol.epochs for arch, protocol in plan.protocols.items()}
    summary = {
        "what": what, "dataset": spec.name, "ipc": ipc, "seed": cfg.seed,
        "eval_protocol": plan.protocol_name, "labels": plan.labels,
        "experiments": len(sets), "networks_per_experiment": plan.num_models,
        "epochs": next(iter(epochs.values())) if len(set(epochs.values())) == 1 else epochs,
        "evaluation": {**plan.record(), "device": str(device)},
    }  # fmt: skip
    if paths is not None and plan.protocol_name == "mtt":
        summary["learned_lr"] = learned_lr(carried)  # the rate the set's networks trained at
    if rates:
        summary["lr_search"] = searched
    if "lrs" in wanted:
        summary["whole_epochs"] = int(cfg.whole_epochs)
    if wanted:
        summary["scores"] = scores.robust_scores(wanted, raw, name)
        summary["score_units"] = "fractions of 1 (accuracies in `results` are percent)"
    summary["seconds"] = round(time.time() - started, 1)
    summary["results"] = results
    rows = accuracy_rows(results)
    if wanted:
        rows = [{**row, "unit": "percent"} for row in rows]
        rows += scores.score_rows(summary["scores"])
    write_results(run_dir, summary, rows)
    print(
        f"{what} on {spec.name}: {len(sets)} experiment(s) x {plan.num_models} "
        f"networks, {summary['epochs']} epochs, {plan.labels} labels"
    )
    for n, chosen in searched.items():
        print(f"learning rate of {n}: {chosen['chosen']} (chosen on held-out training images)")
    print(f"{'set':<16}{'architecture':<14}{'accuracy %':>12}")
    for row in rows:
        if row.get("unit", "percent") == "percent":
            print(f"{row['set']:<16}{row['architecture']:<14}{row['mean']:>7.2f} +- "
                  f"{row['std']:.2f}")  # fmt: skip
    for arch, by_score in summary.get("scores", {}).items():
        for score, terms in by_score.items():
            rest = ", ".join(f"{t} {v:.4f}" for t, v in terms.items() if t != score)
            print(f"{score.upper()} {arch}: {terms[score]:.4f} ({rest})")
    print(f"wall time {summary['seconds']:.0f} s")
    print(f"run folder: {run_dir}")
    return run_dir


def random_subsets(
    cfg: DictConfig, train, spec: DatasetSpec, ipc: int, count: int
) -> list[LabelledImages]:
    """`count` random real subsets of `ipc` images a class (the scores' baseline), subset e
    drawn with seed + e, normalised as the synthetic sets are."""
    same_ipc = OmegaConf.merge(cfg, {"ipc": ipc})
    out = []
    for e in range(count):
        index = select_real(same_ipc, train, spec, "random", cfg.seed + e, ("scores-random",),
                            ("kcenter",))  # fmt: skip
        out.append((spec.normaliser.to_input(train.decode(index)), train.labels[index]))
    return out


def search_rates(
    cfg: DictConfig,
    plan: EvaluationPlan,
    named: dict[str, list[LabelledImages]],
    train,
    spec: DatasetSpec,
    rates: list[float],
    device,
) -> tuple[dict[str, EvaluationPlan], dict[str, dict]]:
    """Each set's plan with the learning rate chosen on held-out training images (eval.lr_search,
    eval.lr_holdout) and what the search saw; the test split is not among its inputs."""
    held = scores.holdout_indices(train, float(cfg.eval.lr_holdout), int(cfg.seed))
    validation = scores.validation_set(train, held)
    plans, searched = {}, {}
    for n, experiments in named.items():
        best, means = scores.choose_lr(plan, experiments, validation, spec.normaliser, rates,
                                       device)  # fmt: skip
        plans[n] = plan.variant(lr=best)
        searched[n] = {"chosen": best, "holdout_accuracy": {str(r): round(m, 6)
                                                            for r, m in means.items()},
                       "holdout_images": int(held.numel())}  # fmt: skip
    return plans, searched
