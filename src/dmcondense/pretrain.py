"""Entry point: train a pool of networks on the real training set (each kept at its initial and
trained weights), for methods that match with pretrained networks (method=ncfm).

    python -m dmcondense.pretrain dataset=cifar10 pool.size=20 pool.epochs=60 trainer=gpu
    python -m dmcondense.pretrain          # the MNIST sample, CPU (4 networks x 2 epochs)

A second run with the same settings reuses the pool; a stopped one resumes with its first
missing network. The last line names the pool's folder.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dmcondense.cli import CONF_DIR, USER_ERRORS, refuse_run, run_entry_point


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="pretrain")
def hydra_main(cfg: DictConfig) -> None:
    try:
        from dmcondense.jobs.pretrain import run

        run(cfg)
    except USER_ERRORS as error:
        refuse_run(error)


def main() -> None:
    run_entry_point(hydra_main, config_name="pretrain")


if __name__ == "__main__":
    main()
