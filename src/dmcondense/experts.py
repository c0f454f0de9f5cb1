"""Entry point: train expert trajectories on the real training set (every parameter kept after
every epoch), for the methods that match training trajectories (method=mtt).

    python -m dmcondense.experts dataset=cifar10 dataset.zca=true experts.size=100 trainer=gpu
    python -m dmcondense.experts          # the MNIST sample, CPU (4 experts x 4 epochs)

A second run with the same settings reuses the experts; a stopped one resumes with its first
missing expert. The last line names the experts' folder.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dmcondense.cli import CONF_DIR, USER_ERRORS, refuse_run, run_entry_point


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="experts")
def hydra_main(cfg: DictConfig) -> None:
    try:
        from dmcondense.jobs.experts import run

        run(cfg)
    except USER_ERRORS as error:
        refuse_run(error)


def main() -> None:
    run_entry_point(hydra_main, config_name="experts")


if __name__ == "__main__":
    main()
