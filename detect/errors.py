"""Errors raised by :mod:`detect`.

One root, so a caller can catch everything the detection core raises::

    DetectError
    ├── ConfigError      a configuration value is missing, of the wrong type or out of range
    ├── StateError       a snapshot cannot be decoded or belongs to an incompatible version
    └── VerdictError     feedback refers to an unknown verdict
"""

from __future__ import annotations

__all__ = ["DetectError", "ConfigError", "StateError", "VerdictError"]


class DetectError(Exception):
    """Root of every error raised by the detection core."""


class ConfigError(DetectError, ValueError):
    """A detection setting is invalid."""


class StateError(DetectError):
    """Engine state could not be restored."""


class VerdictError(DetectError, ValueError):
    """An analyst verdict is not one of ``false_positive`` or ``true_positive``."""
