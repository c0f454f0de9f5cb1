"""The board: every method's condensed set scored under the common protocol and its own, with
hard and soft labels, and DD-Ranking's LRS and ARS, at a CPU budget.

    python benchmarks/leaderboard.py --datasets mnist_sample --ipcs 1 --budget 60
    python benchmarks/leaderboard.py --condensed dm=RUN_DIR ...   # score given sets instead
    python benchmarks/leaderboard.py --tiny                       # seconds; the suite runs it
    python benchmarks/leaderboard.py --methods dm --outside 'dm=PATH;condensed_pixels=unit'

Each set is condensed (`python -m dmcondense.train`, `--budget` seconds of condensation) or
taken from `--condensed METHOD=PATH`, then scored by `python -m dmcondense.evaluate`:
  common    eval.protocol=dsa (the DSA and DM papers'), hard and soft labels
  own       the protocol of the method's paper (OWN_PROTOCOL), hard and soft labels; every
            protocol trains the board's `--epochs` (NCFM's 2,000 and DC's 300 / 1,000 do not
            fit a CPU budget). RDED's own soft column is its relabelling (eval.labels=relabel:
            the teacher, its convnet_bn observer, labels every augmented batch); its common
            soft column is the labels computed once, as every other method's
  scores    scores=[lrs,ars] under both protocols with hard labels; their whole-data accuracy
            is trained once per data set, model and protocol and cached under <out>/whole
  cost      a table of its own: the iterations each condensation made, its seconds (the fit,
            which --budget bounds) and the train job's peak resident memory, and for MTT and
            DATM the seconds and peak resident memory of making their experts (as the experts
            job's results.json reports the store's records, made now or earlier), beside them
            and outside the budget; where there is no such record (a store made before records
            were kept), the experts job's own, marked with a note: a job that found its experts
            made checked them, and did not make them
Soft labels come from network 0 of the data set's pretrained pool (<out>/pools, built when
missing; --pool-size and --pool-epochs set its budget, which on CIFAR-10 is 20 networks x 60
epochs by default).

MTT and DATM match expert trajectories (trajectory.py): before a data set's first MTT (DATM)
condensation the experts job (`python -m dmcondense.experts`) makes that method's experts under
<out>/experts (MTT's SGD recipe, DATM's GSAM one; --experts-size and --experts-epochs set their
budget, by default the data set's: mnist_sample 4 experts x 4 epochs, else MTT's 100 x 50);
the method's later sets on that data set reuse them, and each of its rows shows their cost.
Both are scored under their own protocol `mtt` (networks trained at the set's learned step
size). DATM's set carries its learned soft labels, which every evaluation trains on, never a
teacher's (docs/methods/datm.md): its hard and soft columns both train on them every epoch;
board.md says so.

CIFAR-10 is the shared JPEG copy (../shared/datasets); without it its rows are
skipped with the reason. Writes <out>/board.md, board.csv and board.png. A rerun with the
same --out reads back every job that finished with the same overrides (its board_job.json)
and runs only the rest.

`--outside METHOD=PATH` scores a set made elsewhere (a published set: any condensed_format of
`python -m dmcondense.evaluate`, docs/howto/outside-sets.md) in the same table, in a row of its
own beside ours ("METHOD (PATH's name)"), under the same jobs and METHOD's own protocol, on each
data set of --datasets at the set's own IPC; `;KEY=VALUE` after the path adds evaluate
overrides for that set (condensed_pixels=..., condensed_format=...). An MTT or DATM set is
scored under `mtt` only where it carries its learned step size (a synthetic.pt); the authors'
tensor files do not, and its evaluate job stops the board in one line.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cifar10 import ARCHIVE, REPO, run_folder, unpack
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

METHODS = ("dm", "dc", "dsa", "m3d", "idm", "ncfm", "rded", "dance", "mtt", "datm")
# The protocol each method's paper scored with (METHODS.md): IDM's code scores with DM's,
# DANCE's with IDC's; MTT and DATM train the networks at the set's learned step size.
OWN_PROTOCOL = {"dm": "dsa", "dc": "dc", "dsa": "dsa", "m3d": "idc", "idm": "dsa", "ncfm": "ncfm",
                "rded": "rded", "dance": "idc", "mtt": "mtt", "datm": "mtt"}  # fmt: skip
# The teacher's labels of the "soft" columns under a protocol: computed once (NCFM's), or, under
# RDED's, relabelled every batch by its observer (a convnet_bn pool's network 0).
SOFT_LABELS = {"rded": ("relabel", ["model=convnet_bn"])}
# What a method's condensation adds: RDED draws its crops from 300 real images a class (mipc);
# MTT and DATM the start window their experts hold at the board's budget.
CONDENSE_EXTRA = {"rded": ["batch_real=300"], **METHOD_OVERRIDES}
# Sets that carry their own learned soft labels, which every evaluation trains on: what their
# label columns mean instead of a teacher's labels.
OWN_LABELS = {
    "datm": "its set carries learned soft labels, and every evaluation trains on them "
    "(docs/methods/datm.md), never a teacher's: its hard and soft columns both train on them "
    "every epoch; LRS's hard-label term trains on their argmax"
}
COLUMNS = ("common hard", "common soft", "own hard", "own soft")
COST = ("steps", "condense s", "condense MiB", "experts s", "experts MiB")
# A runner returns the job's results.json ({} for a job that writes none); one that measures
# the job adds its own peak resident memory under PEAK.
Runner = Callable[[str, list[str]], dict]
PEAK = "job peak MiB"


def run_in_child(module: str, overrides: list[str]) -> dict:
    """The job as `python -m module overrides`, its stderr in <run folder>.stderr beside it."""
    run_dir = run_folder(overrides)
    peak = run_job([sys.executable, "-m", module, *overrides],
                   run_dir.parent / f"{run_dir.name}.stderr")  # fmt: skip
    results = run_dir / "results.json"
    return {**(json.loads(results.read_text()) if results.is_file() else {}), PEAK: peak}


def dataset_overrides(dataset: str, args: argparse.Namespace) -> list[str] | str:
    """The data set's overrides, or the reason it is skipped."""
    if dataset != "cifar10":
        return [f"dataset={dataset}"]
    if not args.archive.is_file():
        return f"{args.archive} not found (the shared CIFAR-10 copy)"
    path = unpack(args.archive, args.data)
    return ["dataset=imagefolder", f"path={path}", "dataset.num_classes=10",
            "dataset.name=cifar10"]  # fmt: skip


def budget_overrides(args: argparse.Namespace) -> tuple[list[str], list[str], list[str]]:
    """(shared by every job, the condensation's, the evaluations') overrides."""
    if args.tiny:
        shared = ["model.width=8", "pool.size=1", "pool.epochs=1", "eval.num_models=1"]
        condense = ["iterations=2", "batch_real=4", "eval.epochs=1"]
        evaluate = ["eval.epochs=2", "eval.ncfm_epochs=2", "eval.dc_epochs=2",
                    "eval.rded_epochs=2", "whole_epochs=1"]  # fmt: skip
        return shared, condense, evaluate
    seconds = args.budget
    shared = [f"model.width={args.width}", f"eval.num_models={args.num_models}"]
    shared += [f"pool.{knob}={value}" for knob, value in
               (("size", args.pool_size), ("epochs", args.pool_epochs)) if value]  # fmt: skip
    condense = [f"batch_real={args.batch_real}", "iterations=1000000", "save_every=1000000",
                f"+trainer.max_time=00:00:{seconds // 60:02d}:{seconds % 60:02d}",
                "eval.epochs=1", "eval.num_models=1"]  # fmt: skip
    evaluate = [f"eval.epochs={args.epochs}", f"eval.ncfm_epochs={args.epochs}",
                f"eval.dc_epochs={args.epochs}", f"eval.rded_epochs={args.epochs}",
                f"whole_epochs={args.whole_epochs}"]  # fmt: skip
    return shared, condense, evaluate


def set_digest(overrides: list[str]) -> str | None:
    """A digest of the condensed set a job reads (`condensed=PATH`: its synthetic.pt, else every
    file of PATH), None for a job that reads none: an evaluation of a set condensed again, at
    another budget into the same folder, is not the old set's."""
    path = next((Path(o.split("=", 1)[1]) for o in overrides if o.startswith("condensed=")), None)
    if path is None:
        return None
    if (path / "synthetic.pt").is_file():
        path = path / "synthetic.pt"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


class ReusingFinished:
    """`run`, but a job whose folder already holds its results.json from the same module and
    overrides (or, for a job that writes none, its record) is read back instead of run again: a
    stopped board resumes where it stopped. `seconds` adds up the wall time of every job of the
    board, run now or in an earlier invocation (as its board_job.json recorded it); `cost` gives
    one job's recorded seconds and peak memory."""

    def __init__(self, run: Runner) -> None:
        self.run, self.seconds, self.jobs = run, 0.0, {}

    def __call__(self, module: str, overrides: list[str]) -> dict:
        run_dir = run_folder(overrides)
        record, results = run_dir / "board_job.json", run_dir / "results.json"
        job = {"module": module, "overrides": overrides, "reads": set_digest(overrides)}
        if record.is_file():
            done = json.loads(record.read_text())
            if {key: done.get(key) for key in job} == job and (
                results.is_file() or not done.get("results", True)
            ):
                print(f"reusing the finished job in {run_dir}", flush=True)
                self.seconds += done.get("seconds", 0.0)
                self.jobs[run_dir] = done
                return json.loads(results.read_text()) if results.is_file() else {}
        started = time.time()
        found = dict(self.run(module, overrides))
        job["seconds"] = round(time.time() - started, 1)
        job["peak_mib"] = found.pop(PEAK, None)
        job["results"] = results.is_file()
        self.seconds += job["seconds"]
        self.jobs[run_dir] = job
        record.write_text(json.dumps(job) + "\n")
        return found

    def cost(self, overrides: list[str]) -> tuple[float, float | None]:
        """(wall seconds, peak resident MiB or None where the runner did not measure it) of the
        job these overrides ran, now or in an earlier invocation."""
        job = self.jobs[run_folder(overrides)]
        return job["seconds"], job.get("peak_mib")


def score_set(
    run: Runner, condensed: Path, method: str, common: list[str], out: Path
) -> dict[str, dict]:
    """The evaluate jobs of one set: {"<protocol> <labels>": results.json}."""
    found = {}
    for protocol in dict.fromkeys(["dsa", OWN_PROTOCOL[method]]):
        soft, teacher = SOFT_LABELS.get(protocol, ("soft", []))
        for column, labels in (("hard", "hard"), ("soft", soft)):
            extra = ["scores=[lrs,ars]"] if labels == "hard" else []
            run_dir = out / f"{protocol}_{labels}"
            found[f"{protocol} {column}"] = run(
                "dmcondense.evaluate",
                [f"condensed={condensed}", *common, *teacher, f"eval.protocol={protocol}",
                 f"eval.labels={labels}", *extra, f"hydra.run.dir={run_dir}"],
            )  # fmt: skip
    return found


def board_row(
    dataset: str,
    ipc: int,
    method: str,
    found: dict[str, dict],
    label: str | None = None,
    cost: dict | None = None,
) -> dict:
    """One row: accuracies (percent) and scores (fractions) of one set, and what making it cost
    (COST; None where the board did not make it); `label` names a set made elsewhere in the
    method column."""
    own = OWN_PROTOCOL[method]

    def acc(key: str, set_name: str | None = None) -> float:
        results = found[key]["results"]
        return results[set_name or next(iter(results))]["convnet"]["mean"]

    def score(protocol: str, name: str) -> float:
        return found[f"{protocol} hard"]["scores"]["convnet"][name][name]

    return {
        "data set": dataset, "IPC": ipc, "method": label or method, "own protocol": own,
        "common hard": acc("dsa hard"), "common soft": acc("dsa soft"),
        "own hard": acc(f"{own} hard"), "own soft": acc(f"{own} soft"),
        "random common": acc("dsa hard", "random"), "random own": acc(f"{own} hard", "random"),
        "whole common": acc("dsa hard", "whole:hard"),
        "LRS common": score("dsa", "lrs"), "ARS common": score("dsa", "ars"),
        "LRS own": score(own, "lrs"), "ARS own": score(own, "ars"),
        **{key: (cost or {}).get(key) for key in (*COST, EXPERTS_COST)},
    }  # fmt: skip


def cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key.startswith(("LRS", "ARS")):
        return f"{value:.4f}"
    if key.endswith(" MiB"):
        return f"{value:.0f}"
    if key.endswith(" s"):
        return f"{value:.1f}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def table(rows: list[dict], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    return lines + ["| " + " | ".join(marked(k, row) for k in keys) + " |" for row in rows]


def marked(key: str, row: dict) -> str:
    """The cell, marked after an experts figure that is the experts job's own (JOB_OWN)."""
    own = key.startswith("experts ") and row[key] is not None
    return cell(key, row[key]) + (job_own_mark(row) if own else "")


COST_NOTE = (
    "What each set cost: the iterations its condensation made, its seconds (the fit, which the "
    "budget bounds) and the train job's peak resident memory; for MTT and DATM, the seconds "
    "(all experts' summed) and peak resident memory of making the experts they match, as their "
    "store recorded it, whether the experts job made them now or found them made earlier, "
    "outside the budget (made once per data set and method, shown in each row that matches "
    "them); - where the board did not make it."
)


def markdown(rows: list[dict], skipped: list[str], note: str) -> str:
    lines = [note, ""]
    if rows:
        lines += table(rows, [key for key in rows[0] if key not in (*COST, EXPERTS_COST)])
        lines += ["", COST_NOTE, "", *table(rows, ["data set", "IPC", "method", *COST])]
        if any(row.get(EXPERTS_COST) == JOB_OWN for row in rows):
            lines += ["", JOB_OWN_NOTE]
        shown = dict.fromkeys(row["method"].split(" ")[0] for row in rows)
        notes = [f"- {method}: {OWN_LABELS[method]}" for method in shown if method in OWN_LABELS]
        lines += ["", *notes] if notes else []
    lines += [f"- not run: {reason}" for reason in skipped]
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    """Per (data set, IPC): accuracies (one bar group a method) and the scores beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(dict.fromkeys((r["data set"], r["IPC"]) for r in rows))
    fig, axes = plt.subplots(len(cells), 2, figsize=(13, 3.6 * len(cells)), squeeze=False)
    for (dataset, ipc), (left, right) in zip(cells, axes, strict=True):
        here = [r for r in rows if (r["data set"], r["IPC"]) == (dataset, ipc)]
        for panel, keys, unit in ((left, [*COLUMNS, "random common"], "accuracy %"),
                                  (right, ["LRS common", "ARS common", "LRS own", "ARS own"],
                                   "score (0-1)")):  # fmt: skip
            width = 0.8 / len(keys)
            for k, key in enumerate(keys):
                xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(here))]
                panel.bar(xs, [r[key] for r in here], width, label=key)
            panel.set_xticks(range(len(here)), [f"{r['method']}\n({r['own protocol']})"
                                                for r in here])  # fmt: skip
            panel.set_ylabel(unit)
            panel.set_title(f"{dataset}, IPC {ipc}")
            panel.legend(fontsize=7, ncol=len(keys), loc="upper center")
        left.set_ylim(0, 115)  # room for the legend above the bars
        right.set_ylim(0, 1.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_board(
    args: argparse.Namespace,
    rows: list[dict],
    skipped: list[str],
    job_seconds: float,
    final: bool = False,
) -> None:
    """board.md, board.csv, board.png and board.json under --out, with the rows so far."""
    minutes = job_seconds / 60
    budget = "tiny smoke budget" if args.tiny else (
        f"{args.budget} s of condensation a set, ConvNet width {args.width}, batch_real "
        f"{args.batch_real}; {args.num_models} networks x {args.epochs} evaluation epochs, "
        f"whole data {args.whole_epochs} epochs"
        + (f"; pool {args.pool_size or 'default'} networks x {args.pool_epochs or 'default'} "
           "epochs" if args.pool_size or args.pool_epochs else "")
        + (f"; experts {args.experts_size or 'default'} x {args.experts_epochs or 'default'} "
           "epochs" if args.experts_size or args.experts_epochs else ""))  # fmt: skip
    note = (f"Accuracies in percent (last epoch, mean over networks); LRS and ARS as fractions "
            f"(DD-Ranking's formulas on fractional accuracies); {budget}; {minutes:.0f} min "
            f"of jobs in all, earlier invocations' included.")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "board.md").write_text(markdown(rows, skipped, note))
    if rows:
        with open(args.out / "board.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        if final or not args.tiny:
            figure(rows, args.out / "board.png")
    (args.out / "board.json").write_text(json.dumps({"rows": rows, "skipped": skipped}) + "\n")
    if final:
        print(markdown(rows, skipped, note))


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist_sample", "cifar10"])
    parser.add_argument("--ipcs", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--condensed", nargs="*", default=[], metavar="METHOD=PATH",
                        help="score these sets instead (one data set and IPC)")  # fmt: skip
    parser.add_argument("--outside", nargs="*", default=[], metavar="METHOD=PATH[;KEY=VALUE]",
                        help="also score sets made elsewhere, in rows beside ours")  # fmt: skip
    parser.add_argument("--budget", type=int, default=60, help="condensation seconds a set")
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=300, help="evaluation epochs")
    parser.add_argument("--num-models", type=int, default=3)
    parser.add_argument("--whole-epochs", type=int, default=5)
    parser.add_argument("--pool-size", type=int, help="NCFM's pool and the teacher's; default: "
                        "the data set's (mnist_sample 4, else the authors' 20)")  # fmt: skip
    parser.add_argument("--pool-epochs", type=int, help="epochs of each pool network; default: "
                        "the data set's (mnist_sample 2, else the authors' 60)")  # fmt: skip
    parser.add_argument("--experts-size", type=int, help="MTT's and DATM's experts (each "
                        "method its own); default: the data set's (mnist_sample 4, else "
                        "100)")  # fmt: skip
    parser.add_argument("--experts-epochs", type=int, help="epochs of each expert, at least "
                        f"{MIN_EXPERT_EPOCHS}; default: the data set's (mnist_sample 4, else "
                        "50)")  # fmt: skip
    parser.add_argument("--tiny", action="store_true", help="the suite's smoke run")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--data", type=Path, default=Path("/tmp/dmcondense-cifar10"))
    parser.add_argument("--out", type=Path, default=REPO / "lightning_logs" / "leaderboard")
    args = parser.parse_args(argv)
    if args.experts_epochs is not None and args.experts_epochs < MIN_EXPERT_EPOCHS:
        parser.error(f"--experts-epochs {args.experts_epochs}: MTT's and DATM's start window on "
                     f"the board reaches expert epoch {MIN_EXPERT_EPOCHS}; give "
                     f"{MIN_EXPERT_EPOCHS} or more")  # fmt: skip
    for item in args.outside:
        method = item.split("=", 1)[0]
        if "=" not in item or method not in OWN_PROTOCOL:
            parser.error(
                f"--outside {item}: give METHOD=PATH with METHOD one of {', '.join(METHODS)}"
            )
    return args


def outside_sets(items: list[str]) -> list[tuple[str, Path, list[str]]]:
    """--outside METHOD=PATH[;KEY=VALUE...] -> (method, path, evaluate overrides)."""
    found = []
    for item in items:
        method, rest = item.split("=", 1)
        path, *extra = rest.split(";")
        found.append((method, Path(path), [f"condensed_name={method}", *extra]))
    return found


def trajectory_overrides(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(the experts' budget and folder, shared by the experts job and the condensation; what
    the condensation of MTT and DATM adds at the board's size)."""
    root = args.out / "experts"
    if args.tiny:
        return experts_overrides(1, MIN_EXPERT_EPOCHS, root), ["method.syn_steps=2"]
    return experts_overrides(args.experts_size, args.experts_epochs, root), []


def condense(
    run: ReusingFinished,
    args: argparse.Namespace,
    dataset: str,
    ipc: int,
    method: str,
    common: list[str],
    condense_only: list[str],
    run_dir: Path,
) -> dict:
    """Condense one set into `run_dir` (`common`: the data set's, the budget's and the stores'
    overrides; `condense_only`: the condensation's), after the experts job for MTT and DATM
    (made once per data set and method, then read back); the set's COST cells and, for MTT and
    DATM, where the experts cells come from (EXPERTS_COST)."""
    matched, experts_job, made = [], None, {}
    if uses_experts(method):
        experts, trajectory = trajectory_overrides(args)
        matched = [*experts, *trajectory]
        experts_job = [*common, f"method={method}", *experts,
                       f"hydra.run.dir={args.out / f'{dataset}_experts_{method}'}"]  # fmt: skip
        made = run(EXPERTS_MODULE, experts_job)
    train = [*common, *condense_only, f"method={method}", f"ipc={ipc}",
             *CONDENSE_EXTRA.get(method, []), *matched, f"hydra.run.dir={run_dir}"]  # fmt: skip
    results = run("dmcondense.train", train)
    cost = {"steps": results.get("steps"), "condense s": results.get("condense_seconds"),
            "condense MiB": run.cost(train)[1]}  # fmt: skip
    if experts_job is None:
        return {**cost, "experts s": None, "experts MiB": None, EXPERTS_COST: None}
    return {**cost, **experts_cost(made, run.cost(experts_job))}


def main(argv: list[str] | None = None, run: Runner = run_in_child) -> list[dict]:
    args = parse(argv)
    run = ReusingFinished(run)
    shared, condense_only, evaluate = budget_overrides(args)
    stores = [f"pool.root={args.out / 'pools'}", "pool.build=auto",
              f"eval.whole_root={args.out / 'whole'}"]  # fmt: skip
    given = dict(item.split("=", 1) for item in args.condensed)
    rows, skipped = [], []
    for dataset in args.datasets:
        data = dataset_overrides(dataset, args)
        if isinstance(data, str):
            skipped.append(f"{dataset}: {data}")
            print(f"skipping {dataset}: {data}", flush=True)
            continue
        for ipc in args.ipcs:
            for method in args.methods:
                cell = args.out / f"{dataset}_ipc{ipc}_{method}"
                condensed = Path(given[method]) if method in given else cell / "condense"
                cost = None
                if method not in given:
                    cost = condense(run, args, dataset, ipc, method, [*data, *shared, *stores],
                                    condense_only, condensed)  # fmt: skip
                found = score_set(run, condensed, method, [*data, *shared, *stores, *evaluate],
                                  cell)  # fmt: skip
                rows.append(board_row(dataset, ipc, method, found, cost=cost))
                write_board(args, rows, skipped, run.seconds)  # a stopped board keeps its rows
        for n, (method, path, extra) in enumerate(outside_sets(args.outside)):
            found = score_set(run, path, method, [*data, *shared, *stores, *evaluate, *extra],
                              args.out / f"{dataset}_outside{n}_{method}")  # fmt: skip
            ipc = found["dsa hard"]["ipc"]
            rows.append(board_row(dataset, ipc, method, found, f"{method} ({path.name})"))
            write_board(args, rows, skipped, run.seconds)
    write_board(args, rows, skipped, run.seconds, final=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
