"""dmcondense: dataset condensation by Distribution Matching."""

__version__ = "0.1.0"
