"""Entry point: class-incremental learning with a condensed memory (the DM paper's
continual-learning experiment), condensing each step's new classes itself.

    python -m dmcondense.continual                                  # mnist_sample, 5 steps
    python -m dmcondense.continual continual_experiment=mnist_sample memory=dm,random,herding
    python -m dmcondense.continual continual_experiment=cifar100_steps5   # the paper's (GPU)
    python -m dmcondense.continual hydra.run.dir=<folder> resume=last     # after a kill

`memory=a,b,c` is one run over several memory methods (one learner each, one continual.png),
not a sweep: the comma list is read as the list `memory=[a,b,c]`. The logic lives in
dmcondense/jobs/continual/.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from dmcondense.cli import CONF_DIR, USER_ERRORS, refuse_run, run_entry_point

CONFIG_NAME = "continual"


def memory_as_list(argv: list[str]) -> list[str]:
    """The command line with `memory=a,b` written as the list `memory=[a,b]` (Hydra would
    otherwise ask whether a comma list is a sweep)."""
    rewritten = []
    for word in argv:
        key, sep, value = word.partition("=")
        if sep and key == "memory" and "," in value and not value.startswith(("[", "'", '"')):
            word = f"memory=[{value}]"
        rewritten.append(word)
    return rewritten


def method_configs(overrides: list[str], methods: list[str]) -> dict[str, DictConfig]:
    """For each condensing memory method, the run's config composed with method=<name>: that
    method's preset under the same command line, as `train` would compose it."""
    from hydra import compose

    return {
        name: compose(config_name=CONFIG_NAME, overrides=[*overrides, f"method={name}"])
        for name in methods
    }


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=CONFIG_NAME)
def hydra_main(cfg: DictConfig) -> None:
    # Light imports first: a bad value answers before torch loads.
    from hydra.core.hydra_config import HydraConfig

    from dmcondense.jobs.checks import (
        SELECTIONS,
        check_config,
        check_continual_config,
        memory_methods,
    )

    try:
        check_config(cfg)
        check_continual_config(cfg)
        condensing = [m for m in memory_methods(cfg) if m not in SELECTIONS]
        configs = method_configs(list(HydraConfig.get().overrides.task), condensing)
        for config in configs.values():
            check_config(config)
        from dmcondense.jobs.continual import run

        run(cfg, configs)
    except USER_ERRORS as error:
        refuse_run(error)


def main() -> None:
    sys.argv[1:] = memory_as_list(sys.argv[1:])
    run_entry_point(hydra_main, config_name=CONFIG_NAME)


if __name__ == "__main__":
    main()
