"""Entry point: score a saved synthetic set, or a coreset baseline, under one protocol.

    python -m dmcondense.evaluate condensed=RUN_DIR_OR_FILE [eval.models=[convnet,mlp]]
    python -m dmcondense.evaluate condensed=images_best.pt condensed_pixels=normalised
    python -m dmcondense.evaluate baseline=herding dataset=cifar10 ipc=10

`condensed=` also reads sets made by other tools (image folders, MTT/DATM tensor files, the DC
repository's res_*.pt: condensed_format, docs/howto/outside-sets.md), without running their code.
Prints a table of test accuracy (mean and std over every network of every experiment) per
architecture and writes results.json and results.csv into the run folder.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dmcondense.cli import CONF_DIR, USER_ERRORS, refuse_run, run_entry_point


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    from dmcondense.jobs.checks import check_evaluate_config  # light: answers before torch loads

    try:
        check_evaluate_config(cfg)
        from dmcondense.jobs.evaluate import run

        run(cfg)
    except USER_ERRORS as error:
        refuse_run(error)


def main() -> None:
    run_entry_point(hydra_main, config_name="evaluate")


if __name__ == "__main__":
    main()
