"""Entry point: architecture search with a condensed set as the proxy (the DM paper's application).

    python -m dmcondense.nas condensed=RUN_DIR_OR_FILE [space.sample=K] [proxies=[condensed,random]]
    python -m dmcondense.nas nas_experiment=mnist_sample condensed=RUN_DIR_OR_FILE

Every candidate ConvNet of `space` trains on each proxy set and on the whole training split
(cached per data set, space and budget); prints each proxy's Spearman and Kendall correlation
with whole-data accuracy and writes nas.json, nas.csv and nas.png into the run folder.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dmcondense.cli import CONF_DIR, USER_ERRORS, refuse_run, run_entry_point


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="nas")
def hydra_main(cfg: DictConfig) -> None:
    from dmcondense.jobs.checks import check_nas_config  # light: answers before torch loads

    try:
        check_nas_config(cfg)
        from dmcondense.jobs.nas import run

        run(cfg)
    except USER_ERRORS as error:
        refuse_run(error)


def main() -> None:
    run_entry_point(hydra_main, config_name="nas")


if __name__ == "__main__":
    main()
