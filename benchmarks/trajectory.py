"""MTT and DATM on the CPU benchmarks (leaderboard.py, compare_methods.py): the settings that fit
experts of a few epochs, and the experts job that makes those experts once per data set and
recipe (MTT's SGD, DATM's GSAM) before the first condensation that matches them.

The experts are part of the method's cost: the benchmarks run the experts job on its own and
show its seconds and peak memory beside the condensation's, outside the condensation's budget.
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
