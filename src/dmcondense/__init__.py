"""dmcondense: dataset condensation by Distribution Matching.

    dataset, meta = dmcondense.load_synthetic("lightning_logs/<run folder>")

`load_synthetic` is imported on first use, so `import dmcondense` stays light (no torch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"
__all__ = ["CONF_DIR", "__version__", "load_synthetic"]

# The Hydra configs that ship with the package (a link to the repository's conf/).
CONF_DIR = Path(__file__).resolve().parent / "conf"


def __getattr__(name: str) -> Any:
    if name == "load_synthetic":
        from dmcondense.io import load_synthetic

        return load_synthetic
    raise AttributeError(f"module 'dmcondense' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
