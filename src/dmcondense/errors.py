"""One-line errors for the command line: what is wrong and what to fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A user-facing configuration problem; the entry points print it as one line."""


def require_positive(**values: int) -> None:
    for key, value in values.items():
        if value is None or int(value) < 1:
            raise ConfigError(
                f"{key} must be a positive integer, got {value}; set {key}=N with N >= 1"
            )


class DmcondenseWarning(UserWarning):
    """A notice for the user (a skipped file, a fallback); the entry points print it as
    `warning: <message>`, once, and count what goes past the first few."""


class NonFiniteLossError(RuntimeError):
    """The loss or the synthetic images stopped being finite; the last good set is kept."""
