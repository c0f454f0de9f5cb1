"""Entry point: condense a data set with a method (`method=dm` by default), then score it.

    python -m dmcondense.train                       # built-in MNIST sample, CPU-sized
    python -m dmcondense.train dataset=cifar10 ipc=10 trainer=gpu
    python -m dmcondense.train -m ipc=1,10,50        # a sweep, one folder per run

The command line is checked before anything heavy is imported, so a typo answers at once.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dmcondense.cli import CONF_DIR, USER_ERRORS, refuse_run, run_entry_point


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from dmcondense.jobs.checks import check_config  # light: answers before torch loads

    try:
        check_config(cfg)
        from dmcondense.jobs.train import run

        run(cfg)
    except USER_ERRORS as error:
        refuse_run(error)


def main() -> None:
    run_entry_point(hydra_main)


if __name__ == "__main__":
    main()
