"""MTT and DATM on the CPU benchmarks (leaderboard.py, compare_methods.py): the settings that fit
experts of a few epochs, and the experts job that makes those experts once per data set and
recipe (MTT's SGD, DATM's GSAM) before the first condensation that matches them.

The experts are part of the method's cost: the benchmarks run the experts job on its own and
show what making the experts cost (their seconds summed and peak memory, as the experts job's
results.json reports their store's records, whether the job made them now or found them made)
beside the condensation's, outside the condensation's budget (`experts_cost`).
"""

from __future__ import annotations

# The start window of MTT's CIFAR-10 IPC 1 setting (the paper's table: a target 2 expert epochs
# on from a start epoch below 2), which experts of 3 or more epochs hold; DATM takes it from its
# first iteration (no widening, as its own CIFAR-10 IPC 1 config). Neither reads a real batch
# while condensing, so both keep their own batch_real of 1 whatever the benchmark's is.
WINDOW = ["method.expert_epochs=2", "method.max_start_epoch=2"]
METHOD_OVERRIDES = {
    "mtt": [*WINDOW, "batch_real=1"],
    "datm": [*WINDOW, "method.initial_max_start_epoch=null", "batch_real=1"],
}
MIN_EXPERT_EPOCHS = 3  # the window's reach: a start epoch up to 1, plus 2
EXPERTS_MODULE = "dmcondense.experts"


def uses_experts(method: str) -> bool:
    return method in METHOD_OVERRIDES


def experts_overrides(size: int | None, epochs: int | None, root: object) -> list[str]:
    """The experts' budget (None: the data set's, mnist_sample 4 x 4, else MTT's 100 x 50) and
    the folder their keyed stores live under; the same for the experts job and the condensation,
    so the condensation finds the experts the job made."""
    given = [f"experts.{knob}={value}" for knob, value in (("size", size), ("epochs", epochs))
             if value is not None]  # fmt: skip
    return [*given, f"experts.root={root}"]


# Where a row's experts figures come from: MADE, the store's record of making the experts;
# JOB_OWN, the experts job's own seconds and peak, where there is no record of the making (a
# store made before records were kept): a job that found the experts made only checked them.
EXPERTS_COST = "experts cost"
MADE, JOB_OWN = "making record", "experts job's own"
JOB_OWN_MARK = "*"
JOB_OWN_NOTE = (
    f"{JOB_OWN_MARK} No record of what making these experts cost (their store was made before "
    "such records were kept, or the experts job ran before it wrote one): the figures are the "
    "experts job's own seconds and peak memory; where it found the experts made, it checked "
    "them and did not make them, so the figures are not the making's."
)


def experts_cost(made: dict, measured: tuple[float, float | None]) -> dict:
    """{"experts s", "experts MiB", EXPERTS_COST} from the experts job's results.json `made`:
    what making the experts cost, as their store recorded it; where there is no record (a store
    made before records were kept, or a job that wrote no results.json), the job's own
    `measured` (seconds, peak MiB), marked JOB_OWN."""
    if made.get("making_seconds") is not None:
        return {"experts s": made["making_seconds"], "experts MiB": made["making_peak_mib"],
                EXPERTS_COST: MADE}  # fmt: skip
    seconds, peak = measured
    return {"experts s": seconds, "experts MiB": peak, EXPERTS_COST: JOB_OWN}


def job_own_mark(row: dict) -> str:
    """JOB_OWN_MARK after a row's experts figures where they are the experts job's own."""
    return JOB_OWN_MARK if row.get(EXPERTS_COST) == JOB_OWN else ""
