"""Errors raised by :mod:`detect`.

One root, so a caller can catch everything the detection core raises::

    DetectError
    ├── ConfigError          a setting is missing, of the wrong type or out of range (also a ValueError)
    │   └── PolicyError      an access-model policy is not valid TOML or breaks a rule of its schema
    ├── StateError           a snapshot cannot be decoded or belongs to an incompatible version
    └── VerdictError         feedback names an unknown verdict (also a ValueError)

The detection core does no I/O, so nothing here wraps an ``OSError``: reading a policy file is
the shell's job (``vaultwatch.settings.load_policy``), which reports its own errors.
"""

from __future__ import annotations

__all__ = ["DetectError", "ConfigError", "PolicyError", "StateError", "VerdictError"]


class DetectError(Exception):
    """Root of every error raised by the detection core."""


class ConfigError(DetectError, ValueError):
    """A detection setting is invalid."""


class PolicyError(ConfigError):
    """An access-model policy is invalid; the message names its source, the entry and the fault."""


class StateError(DetectError):
    """Engine state could not be restored."""


class VerdictError(DetectError, ValueError):
    """An analyst verdict is not one of ``false_positive`` or ``true_positive``."""
