"""DC, DSA, DM, DM x factor 2, M3D, IDM, NCFM, MTT and DATM side by side at one CPU budget, one
protocol.

    python benchmarks/compare_methods.py          # seconds=60, mnist_sample and CIFAR-10, IPC 1, 10
    python benchmarks/compare_methods.py --budget steps=50 --datasets mnist_sample --ipcs 1
    python benchmarks/compare_methods.py --budget seconds=30 --datasets mnist_sample --ipcs 10
    python benchmarks/compare_methods.py --tiny   # the wiring at toy size

`--budget seconds=S`: every run gets the same condensation wall time (Lightning's max_time: a run
stops at the first step that ends past it). `--budget steps=N`: every run makes N iterations
(the papers compare at their own step counts; an iteration costs very different times by
method). Every run gets the same ConvNet, real batch and evaluation (the common DSA protocol,
`--num-models` networks x `--epochs` epochs, last-epoch accuracy), and each method its own
defaults otherwise (DC from noise, the others from real images; DM x2, M3D, IDM and NCFM decode
each stored image into 4 by multi-formation). IPC counts stored images: every method gets the
same pixels. The random real images of each run (IPC full-size real images a class) are the
floor. NCFM matches with a pool of pretrained networks, trained once per data set before the
runs (`--pool-size` networks x `--pool-epochs` epochs, under `--pool-root`) and reused.

MTT and DATM match expert trajectories (trajectory.py): before a data set's runs, the experts job
(`python -m dmcondense.experts`) makes each method's experts (MTT's SGD recipe, DATM's GSAM one;
`--experts-size` x `--experts-epochs`, under `--experts-root`, by default <out>/experts), or
finds them made; its results.json (in <out>/<data set>_experts_<method>/) reports what making
them cost as their store recorded it: the experts' seconds summed and the peak memory of the
process that made them. Where the store has no such record (made before records were kept),
the job's own measured seconds and peak stand in, marked, with a note under the table. An
invocation into the same --out reads that cost back from <out>/<data set>_experts_<method>.json
instead of running the job again. Making the experts is outside the budget: under `--budget
seconds=S` each run still condenses for S seconds, and the experts' seconds and memory are shown
beside the run's, in their own columns, not inside S.
Both read no real batch (they keep their batch_real of 1) and are scored by the same DSA protocol
as the rest (`eval.protocol=dsa`, not their own, which trains at the learned step size: the
board, leaderboard.py, has it); DATM's set trains on its learned soft labels, as every
evaluation of it does (docs/methods/datm.md).

Each run goes through benchmarks/clocked_train.py (the train job with a clock on the fit): its
seconds an iteration (median over the fit, the first iteration left out) and its peak resident
memory at the end of the fit, each also as a ratio to DM's in the same data set and IPC, which
ran in the same invocation; for MTT and DATM, what making their experts cost beside them.
CIFAR-10 is the shared JPEG copy (../shared/datasets); without it only mnist_sample runs. Prints
a Markdown table and writes it to <out>/table.md, the rows to <out>/rows.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from cifar10 import ARCHIVE, REPO, unpack
from measured import run_job
from trajectory import (
    EXPERTS_COST,
    EXPERTS_MODULE,
    JOB_OWN,
    JOB_OWN_NOTE,
    METHOD_OVERRIDES,
    MIN_EXPERT_EPOCHS,
    experts_cost,
    experts_overrides,
    job_own_mark,
    uses_experts,
)

CLOCKED = Path(__file__).resolve().parent / "clocked_train.py"

# name in the table -> the overrides that select it
METHODS = {
    "dc": ["method=dc"],
    "dsa": ["method=dsa"],
    "dm": ["method=dm"],
    "dm_x2": ["method=dm", "synthetic.factor=2"],
    "m3d": ["method=m3d"],
    "idm": ["method=idm"],
    "ncfm": ["method=ncfm"],
    "mtt": ["method=mtt", *METHOD_OVERRIDES["mtt"], "eval.protocol=dsa"],
    "datm": ["method=datm", *METHOD_OVERRIDES["datm"], "eval.protocol=dsa"],
}
LABELS = {"dm_x2": "DM x2"}
BUDGET_KINDS = ("seconds", "steps")


def parse_budget(text: str) -> tuple[str, int]:
    """`seconds=S` or `steps=N` -> (kind, a positive integer); ValueError with what to write."""
    kind, sep, value = text.partition("=")
    if not sep or kind not in BUDGET_KINDS or not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"--budget {text!r}: write seconds=S (equal condensation wall time) or steps=N "
            "(equal iterations), with a positive whole number"
        )
    return kind, int(value)


def budget_overrides(kind: str, value: int) -> list[str]:
    if kind == "steps":
        return [f"iterations={value}"]
    clock = f"00:{value // 3600:02d}:{value % 3600 // 60:02d}:{value % 60:02d}"
    return ["iterations=1000000", f"+trainer.max_time={clock}"]


def train(overrides: list[str], run_dir: Path) -> dict:
    """One condensation job: the row's figures."""
    command = [sys.executable, str(CLOCKED), *overrides, f"hydra.run.dir={run_dir}"]
    started = time.time()
    peak = run_job(command, run_dir.parent / f"{run_dir.name}.stderr")
    results = json.loads((run_dir / "results.json").read_text())
    timing = json.loads((run_dir / "timing.json").read_text())
    seconds = timing["iteration_seconds"]
    return {
        "decoded": results.get("decoded_per_class", results["ipc"]),
        "accuracy": results["results"][results["method"]]["convnet"],
        "random real": results["results"]["random"]["convnet"],
        "steps": int(results["steps"]),
        "s/it": statistics.median(seconds) if seconds else float("nan"),
        "fit MiB": timing["rss_after_fit_mib"],
        "before fit MiB": timing["rss_before_fit_mib"],
        "peak MiB": peak,
        "condense s": results["condense_seconds"],
        "wall s": time.time() - started,
    }


def pretrain_pool(data: list[str], common: list[str], pool: list[str], log: Path) -> None:
    """NCFM's pool for this data set and model: trained once, reused when it is there."""
    command = [sys.executable, "-m", "dmcondense.pretrain", *data, *common, *pool]
    run_job(command, log)


def make_experts(overrides: list[str], record: Path) -> dict:
    """The experts of one data set and method, made (or found made) by the experts job with
    `overrides`, in the run folder `record` less its suffix; their cost (trajectory.experts_cost:
    {"experts s", "experts MiB"}, what making them cost as their store recorded it, or the job's
    wall seconds and peak RSS where it has no record, and where they come from). The cost is
    kept in `record` and read back, without running the job, when it was made with the same
    overrides (a record from before the making cost was read runs the job again)."""
    if record.is_file():
        done = json.loads(record.read_text())
        if done["overrides"] == overrides and EXPERTS_COST in done["cost"]:
            print(f"reusing the experts (and their cost) recorded in {record}", flush=True)
            return done["cost"]
    run_dir = record.with_suffix("")
    started = time.time()
    peak = run_job([sys.executable, "-m", EXPERTS_MODULE, *overrides, f"hydra.run.dir={run_dir}"],
                   record.with_suffix(".stderr"))  # fmt: skip
    results = run_dir / "results.json"
    made = json.loads(results.read_text()) if results.is_file() else {}
    cost = experts_cost(made, (time.time() - started, peak))
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"overrides": overrides, "cost": cost}) + "\n")
    return cost


def ratio(value: float, reference: float | None) -> str:
    return f"{value / reference:.2f}" if reference else "-"


def table(rows: list[dict]) -> list[str]:
    """Markdown rows; the ratios are to DM's run of the same data set and IPC. "fit added": the
    peak at the end of the fit less the peak when it started (what the fit itself added).
    "experts s", "experts MiB": what making the experts cost (seconds summed, peak RSS), for
    the methods that match experts (- for the rest); marked where they are the experts job's
    own (JOB_OWN), with JOB_OWN_NOTE under the table."""
    lines = [
        "| data set | IPC | method | decoded a class | accuracy % | random real % | steps | "
        "s/it | s/it / DM's | fit peak MiB | / DM's | fit added MiB | condense s | wall s | "
        "experts s | experts MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
        "--- | --- |",
    ]
    dm = {(r["data set"], r["IPC"]): r for r in rows if r["method"] == "dm"}
    for r in rows:
        acc, floor, ref = r["accuracy"], r["random real"], dm.get((r["data set"], r["IPC"]))
        name = LABELS.get(r["method"], r["method"].upper())
        lines.append(
            f"| {r['data set']} | {r['IPC']} | {name} | {r['decoded']} | "
            f"{acc['mean']:.2f} +- {acc['std']:.2f} | {floor['mean']:.2f} +- {floor['std']:.2f} | "
            f"{r['steps']} | {r['s/it']:.3f} | {ratio(r['s/it'], ref and ref['s/it'])} | "
            f"{r['fit MiB']:.0f} | {ratio(r['fit MiB'], ref and ref['fit MiB'])} | "
            f"{r['fit MiB'] - r['before fit MiB']:.0f} | {r['condense s']:.0f} | "
            f"{r['wall s']:.0f} | {figure(r.get('experts s'))}{job_own_mark(r)} | "
            f"{figure(r.get('experts MiB'))}{job_own_mark(r)} |"
        )
    if any(r.get(EXPERTS_COST) == JOB_OWN for r in rows):
        lines += ["", JOB_OWN_NOTE]
    return lines


def figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="seconds=60", help="seconds=S or steps=N a run")
    parser.add_argument("--datasets", nargs="+", default=["mnist_sample", "cifar10"])
    parser.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--num-models", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--pool-epochs", type=int, default=2)
    parser.add_argument("--pool-root", type=Path, default=REPO / "lightning_logs" / "pools")
    parser.add_argument("--experts-size", type=int, default=4, help="MTT's and DATM's experts")
    parser.add_argument("--experts-epochs", type=int, default=4,
                        help=f"epochs of each expert, at least {MIN_EXPERT_EPOCHS}")  # fmt: skip
    parser.add_argument("--experts-root", type=Path,
                        help="where the experts live (default <out>/experts); experts already "
                        "there are reused, and the cost shown is still that of making them, "
                        "as their store recorded it (where it has none, that of checking "
                        "them, marked)")  # fmt: skip
    parser.add_argument("--tiny", action="store_true",
                        help="toy size (mnist_sample, IPC 1, width 8, 1 network x 1 epoch, 1 "
                        "expert x 3 epochs); figures mean nothing")  # fmt: skip
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--data", type=Path, default=Path("/tmp/dmcondense-cifar10"))
    parser.add_argument("--out", type=Path, default=REPO / "lightning_logs" / "compare_methods")
    args = parser.parse_args(argv)
    try:
        args.budget_kind, args.budget_value = parse_budget(args.budget)
    except ValueError as error:
        sys.exit(f"error: {error}")
    if args.experts_epochs < MIN_EXPERT_EPOCHS:
        sys.exit(
            f"error: --experts-epochs {args.experts_epochs}: MTT's and DATM's start window "
            f"reaches expert epoch {MIN_EXPERT_EPOCHS}; give {MIN_EXPERT_EPOCHS} or more"
        )
    if args.tiny:
        args.datasets, args.ipcs, args.batch_real, args.width = ["mnist_sample"], [1], 8, 8
        args.epochs, args.num_models, args.pool_size, args.pool_epochs = 1, 1, 1, 1
        args.experts_size, args.experts_epochs = 1, MIN_EXPERT_EPOCHS
    args.experts_root = args.experts_root or args.out / "experts"
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse(argv)
    started = time.time()
    common = [f"model.width={args.width}", "seed=0", "logger=csv", "save_every=1000000"]
    runs = [
        f"batch_real={args.batch_real}", f"eval.epochs={args.epochs}",
        f"eval.num_models={args.num_models}",
        *budget_overrides(args.budget_kind, args.budget_value),
    ]  # fmt: skip
    pool = [f"pool.root={args.pool_root}", f"pool.size={args.pool_size}",
            f"pool.epochs={args.pool_epochs}"]  # fmt: skip
    experts = experts_overrides(args.experts_size, args.experts_epochs, args.experts_root)
    trajectory = ["method.syn_steps=2"] if args.tiny else []
    rows = []
    for dataset in args.datasets:
        if dataset == "cifar10":
            if not args.archive.is_file():
                print(f"skipping CIFAR-10: {args.archive} not found", flush=True)
                continue
            data = ["dataset=imagefolder", f"path={unpack(args.archive, args.data)}",
                    "dataset.num_classes=10", "dataset.name=cifar10"]  # fmt: skip
        else:
            data = [f"dataset={dataset}"]
        if "ncfm" in args.methods:
            pretrain_pool(data, common, pool, args.out / f"pretrain_{dataset}.stderr")
        costs = {method: make_experts([*data, *common, f"method={method}", *experts],
                                      args.out / f"{dataset}_experts_{method}.json")
                 for method in args.methods if uses_experts(method)}  # fmt: skip
        for ipc in args.ipcs:
            for method in args.methods:
                run_dir = args.out / f"{dataset}_ipc{ipc}_{method}"
                extra = pool if method == "ncfm" else []
                if uses_experts(method):
                    extra = [*experts, *trajectory]
                figures = train([*data, *common, *runs, *METHODS[method], *extra, f"ipc={ipc}"],
                                run_dir)  # fmt: skip
                rows.append({"data set": dataset, "IPC": ipc, "method": method, **figures,
                             **costs.get(method, {})})  # fmt: skip
                write(args, rows, started)  # a stopped comparison keeps its rows
    print(write(args, rows, started))
    return rows


def header(args: argparse.Namespace, minutes: float) -> str:
    """What the runs shared, and where the experts' cost stands against the budget."""
    value, kind = args.budget_value, args.budget_kind
    trajectory = [m.upper() for m in args.methods if uses_experts(m)]
    experts = (
        f"; {' and '.join(trajectory)} experts {args.experts_size} x {args.experts_epochs} "
        f"epochs, made once a data set before the runs and outside the budget of {value} "
        f"{kind}: what making them cost (seconds summed, peak memory, as their store recorded "
        f"it, whenever made) is the experts columns, beside the run's"
        if trajectory
        else ""
    )
    return (
        f"{value} {kind} of condensation a run; ConvNet width {args.width}, batch_real "
        f"{args.batch_real}; {args.num_models} networks x {args.epochs} epochs (DSA protocol, "
        f"last epoch); NCFM pool {args.pool_size} networks x {args.pool_epochs} epochs"
        f"{experts}; {minutes:.0f} min in all"
    )


def write(args: argparse.Namespace, rows: list[dict], started: float) -> str:
    """The table so far into <out>/table.md and the rows into <out>/rows.json; the table."""
    lines = [header(args, (time.time() - started) / 60), "", *table(rows)]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
