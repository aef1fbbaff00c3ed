"""The shell's errors: one root, :class:`VaultwatchError`, so a caller can catch everything the
application shell raises on purpose with one ``except``.

The tree (the packages below the shell have roots of their own: ``ingest.errors.IngestError``,
``detect.errors.DetectError`` and ``alerts.errors.AlertsError``)::

    VaultwatchError
    ├── ConfigError        the configuration is invalid (vaultwatch.settings); lists (key, problem)
    ├── ArchiveError       the event archive could not be written, read or pruned
    │                      (vaultwatch.service.archive)
    ├── AuthError          a credential is missing, malformed, expired or wrong (vaultwatch.api.auth)
    ├── ReportError        a report could not be generated: missing archive, unreadable check file,
    │                      bad period (vaultwatch.report.generate)
    ├── VaultClientError   a Vault API call or login failed (vaultwatch.vault.client); also a RuntimeError
    ├── PolicyParseError   a Vault HCL policy could not be read (vaultwatch.vault.policy_hcl);
    │                      also a ValueError
    ├── UsageError         a command-line option is missing or inconsistent (vaultwatch.cli.check);
    │                      also a ValueError, which ``vaultwatch check`` catches with its other input errors
    ├── TrafficError       the demo's traffic could not be driven (vaultwatch.demo.traffic);
    │                      also a RuntimeError
    ├── ServerError        a demo server (OpenBao, the broker) did not start or stop
    │                      (vaultwatch.demo.servers); also a RuntimeError
    ├── DriverError        a generated organisation's request failed, or its server is sealed
    │                      (vaultwatch.demo.org_driver); also a RuntimeError
    └── JoinStalled        a worker's Kafka consumer has been joining its group far longer than a
                           join may take (vaultwatch.service.worker); also an ingest SourceError

``ConfigError`` and ``ArchiveError`` are defined here; the others live beside the code that raises
them and derive from :class:`VaultwatchError`. ``tests/test_error_trees.py`` checks that this
drawing matches the classes.

``DemoStopped`` (vaultwatch.demo.stack) stays outside the tree: it is the stop signal of the
demo's traffic thread, not an error.

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
