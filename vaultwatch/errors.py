"""The shell's errors: one root, :class:`VaultwatchError`, so a caller can catch everything the
application shell raises on purpose with one ``except``.

The tree (the packages below the shell have roots of their own: ``IngestError``,
``DetectError``, ``DeliveryError``)::

    VaultwatchError
    ├── ConfigError        the configuration is invalid (vaultwatch.settings); lists (key, problem)
    └── ArchiveError       the event archive could not be written, read or pruned
                           (vaultwatch.service.archive)

Messages name keys, files and causes, never a configured or secret value. Third-party
exceptions are wrapped where they cross into the shell (``raise ArchiveError(...) from exc``).
"""

from __future__ import annotations

__all__ = ["ArchiveError", "ConfigError", "VaultwatchError"]


class VaultwatchError(Exception):
    """Root of every error the application shell raises on purpose."""


class ConfigError(VaultwatchError):
    """The configuration is invalid. ``problems`` holds ``(key, what is wrong)`` pairs.

    The message names keys and files, never a configured value.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  {k or '(file)'}: {msg}" for k, msg in problems)
        super().__init__(f"invalid configuration{where}:\n{lines}")


class ArchiveError(VaultwatchError):
    """The archive could not be written, read or pruned (the cause is chained)."""
