"""MTT's (and DATM's) seconds per iteration and memory, ours against the authors' code, in one
run.

    python benchmarks/mtt_step_time.py --official /path/to/mtt-distillation --ipc 10 \
        --steps 6 --width 32 --experts-size 4 --experts-epochs 4 --syn-steps 10 \
        --expert-epochs 2 --max-start-epoch 2 --threads 1 --rounds 2

`--method datm` (default mtt) measures DATM the same way against their distill/DATM.py
(--official: a checkout of NUS-HPC-AI-Lab/DATM), on the experts of `--expert-recipe` (gsam:
their buffer_FTD.py's), with DATM's own flags (--lr-y, --threshold, --initial-max-start-epoch,
...) given to both sides as parity.py gives them. Their DATM loop makes `steps` updates where
their MTT loop makes `steps + 1`; ours makes `steps` either way.

The budget flags are benchmarks/parity.py's (same defaults, same experts, same data, same thread
count: OMP_NUM_THREADS, MKL_NUM_THREADS and, their side, torch.set_num_threads), and so are both
runs: ours is the train job through benchmarks/clocked_train.py, theirs their script through
benchmarks/parity_official.py (parity_datm.py for DATM). The sides alternate, ours first,
`--rounds` times, so a change of the machine's load falls on both. Each iteration is timed from
the end of the one before, in wall and in process CPU seconds; each side's first iteration
(start-up, first-use costs) is left out. parity.py's seconds per step divide a whole fit (ours)
or loop (theirs) by its updates, start-up included, in wall time only: on a shared machine that
measures the neighbours as much as the code. Memory: the growth of the process's peak resident
set over the loop (ours from the fit's start, theirs from before their first update, after their
replay buffer is loaded and, DATM, their soft labels are initialised).

Printed: each round's medians, then each side's median over all its iterations, its least CPU
time an iteration (the least disturbed by the neighbours), and the ratios ours / theirs of each.
`--memory checkpoint` runs ours with method.memory=checkpoint (theirs has only the plain
unroll).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import parity  # noqa: E402

CLOCKED = HERE / "clocked_train.py"


def ours(args, overrides: list[str], run_dir: Path, env: dict, memory: str) -> dict:
    """Our train job under the clock; its timing.json as {wall, cpu, rss_growth_mib}."""
    command = [
        sys.executable, str(CLOCKED), *overrides, f"method.memory={memory}",
        f"seed={args.seed}", "eval.num_models=1", "eval.epochs=1", "logger=csv",
        "save_every=1000000", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    parity.run(command, env, run_dir.with_suffix(".log"))
    timing = json.loads((run_dir / "timing.json").read_text())
    return {
        "wall": timing["iteration_seconds"],
        "cpu": timing["iteration_cpu_seconds"],
        "rss_growth_mib": timing["rss_after_fit_mib"] - timing["rss_before_fit_mib"],
    }


def theirs(args, copy: Path, data: Path, out: Path, env: dict, experts: Path) -> dict:
    """Their script through the adapter; its timing JSON as {wall, cpu, rss_growth_mib}."""
    parity.condense_theirs(args, copy, data, out, args.seed, env, None, experts)
    timing = json.loads(out.with_suffix(".json").read_text())
    return {
        "wall": timing["iteration_seconds"],
        "cpu": timing["iteration_cpu_seconds"],
        "rss_growth_mib": timing["rss_after_loop_mib"] - timing["rss_before_loop_mib"],
    }


FIGURES = ("wall", "cpu", "cpu_min")  # medians of both clocks; the least-disturbed CPU time


def summary(rounds: dict[str, list[dict]]) -> dict:
    """Each side's median seconds an iteration (wall, cpu) and its smallest CPU seconds
    (cpu_min: contention for the cores and their caches inflates CPU time too, never deflates
    it) over all its rounds, its largest memory growth, and the ratios ours / theirs."""
    sides = {}
    for side, runs in rounds.items():
        cpu = [s for run in runs for s in run["cpu"]]
        sides[side] = {
            "wall": statistics.median([s for run in runs for s in run["wall"]]),
            "cpu": statistics.median(cpu),
            "cpu_min": min(cpu),
            "rss_growth_mib": max(run["rss_growth_mib"] for run in runs),
        }
    ratios = {key: sides["ours"][key] / sides["theirs"][key] for key in FIGURES}
    return {"sides": sides, "ratio": ratios}


def main(argv: list[str] | None = None) -> dict:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--method", choices=("mtt", "datm"), default="mtt")
    extra.add_argument("--rounds", type=int, default=2, help="ours, theirs: this many times")
    extra.add_argument("--memory", choices=("unroll", "checkpoint"), default="unroll",
                       help="ours: method.memory")  # fmt: skip
    known, rest = extra.parse_known_args(argv)
    args = parity.parse_args(["--method", known.method, *rest])
    if known.rounds < 1 or args.steps < 3:
        raise parity.UsageError("--rounds must be 1 or more and --steps 3 or more")
    problem = parity.missing_files(args.official, args.method)
    if problem:
        raise parity.UsageError(problem)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix=f"dmcondense-{args.method}-time-"))
    scratch = scratch.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / "official"
    parity.prepare_copy(args.official, copy, args.method)
    overrides = parity.dataset_overrides(args.dataset, args.data_cache)
    overrides += parity.budget_overrides(args)
    env = parity.subprocess_env(args.threads)
    experts = parity.make_experts(overrides, scratch / "experts", env)
    data = scratch / "real_data.pt"
    rounds: dict[str, list[dict]] = {"ours": [], "theirs": []}
    for r in range(known.rounds):
        run_dir = scratch / f"ours_{r}"
        rounds["ours"].append(ours(args, overrides, run_dir, env, known.memory))
        if not data.is_file():
            parity.save_real_data(run_dir / "synthetic.pt", data)
        rounds["theirs"].append(theirs(args, copy, data, scratch / f"theirs_{r}.pt", env, experts))
        for side in ("ours", "theirs"):
            run = rounds[side][-1]
            print(f"round {r} {side:6}: median {statistics.median(run['wall']):.3f} s wall, "
                  f"{statistics.median(run['cpu']):.3f} s CPU an iteration over "
                  f"{len(run['wall'])}; peak RSS +{run['rss_growth_mib']:.0f} MiB over the loop",
                  flush=True)  # fmt: skip
    result = summary(rounds)
    budget = (f", {parity.parity_datm.budget_tokens(args)[1]}" if args.method == "datm"
              else f", syn_steps {args.syn_steps}")  # fmt: skip
    print(f"{args.method.upper()} {args.dataset} IPC {args.ipc}, width {args.width}{budget}, "
          f"{args.threads} thread(s), ours method.memory={known.memory}, {known.rounds} "
          f"round(s) of {args.steps} steps, first iteration of each run left out")  # fmt: skip
    for side, figures in result["sides"].items():
        print(
            f"  {side:6} median {figures['wall']:.3f} s wall, {figures['cpu']:.3f} s CPU; "
            f"least {figures['cpu_min']:.3f} s CPU an iteration; "
            f"peak RSS +{figures['rss_growth_mib']:.0f} MiB"
        )
    ratio = result["ratio"]
    print(
        f"  ours / theirs: wall {ratio['wall']:.3f}, CPU {ratio['cpu']:.3f}, "
        f"least CPU {ratio['cpu_min']:.3f}"
    )
    return result | {"rounds": rounds}


if __name__ == "__main__":
    try:
        main()
    except parity.UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
