"""dmcondense: dataset condensation by Distribution Matching and the methods after it.

    run = dmcondense.condense(dataset="mnist_sample", method="dm", ipc=10)
    scored = dmcondense.evaluate(run)
    net = dmcondense.train_on(run, model="convnet")
    dataset, meta = dmcondense.load_synthetic("lightning_logs/<run folder>")

Each is imported on first use, so `import dmcondense` stays light (no torch, no Hydra).
`dmcondense.evaluate` is also the entry point module `python -m dmcondense.evaluate`; calling it
calls the API's `evaluate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"
__all__ = ["CONF_DIR", "Run", "__version__", "condense", "evaluate", "load_synthetic", "train_on"]

# The Hydra configs that ship with the package (a link to the repository's conf/).
CONF_DIR = Path(__file__).resolve().parent / "conf"


def __getattr__(name: str) -> Any:
    if name == "load_synthetic":
        from dmcondense.io import load_synthetic

        return load_synthetic
    if name in ("condense", "train_on", "Run"):
        import dmcondense.api

        return getattr(dmcondense.api, name)
    if name == "evaluate":  # the entry point module, callable as the API's evaluate
        import dmcondense.evaluate

        return dmcondense.evaluate
    raise AttributeError(f"module 'dmcondense' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
