"""The single exception tree of the ``alerts`` package.

Every error raised on purpose by the alert store, routing, silences and delivery derives from
:class:`AlertsError`, so a caller can catch the whole package with one ``except``. Errors from
SQLAlchemy, Alembic and the database drivers are wrapped at the boundary (``raise ... from exc``);
messages never carry secret values (webhook URLs, tokens, passwords).

::

    AlertsError
     ├── StoreError                 the alert store failed or was misused
     │    ├── AlertNotFound         no alert (or silence) with that id
     │    ├── InvalidTransition     a lifecycle move the state machine forbids
     │    └── MigrationError        the schema could not be brought to the current revision
     ├── RouteConfigError           the routing configuration is invalid
     ├── SilenceError               a silence or matcher is invalid
     └── DeliveryError              delivery and channel failures
          ├── ChannelConfigError    a channel or delivery configuration is invalid
          ├── SecretError           a secret could not be loaded (names the source, never the value)
          └── BlockedDestination    the SSRF guard refused a destination

``ChannelConfigError`` is deliberately not called ``ConfigError``: ``detect.errors.ConfigError`` and
``vaultwatch.errors.ConfigError`` are different classes, and one name for three meanings misleads.
"""

from __future__ import annotations

__all__ = [
    "AlertsError",
    "StoreError",
    "AlertNotFound",
    "InvalidTransition",
    "MigrationError",
    "RouteConfigError",
    "SilenceError",
    "DeliveryError",
    "ChannelConfigError",
    "SecretError",
    "BlockedDestination",
]


class AlertsError(Exception):
    """Root of every error the ``alerts`` package raises on purpose."""


class StoreError(AlertsError):
    """The alert store failed (database unreachable, constraint broken) or was misused."""


class AlertNotFound(StoreError):
    """No alert or silence with the given id."""


class InvalidTransition(StoreError):
    """The requested status change is not allowed from the alert's current status."""


class MigrationError(StoreError):
    """Applying the Alembic migrations failed."""


class RouteConfigError(AlertsError):
    """The routing tree, receivers or inhibit rules are invalid."""


class SilenceError(AlertsError):
    """A silence or one of its matchers is invalid (bad operator, bad regex, empty window)."""


class DeliveryError(AlertsError):
    """Root of delivery and channel errors."""


class ChannelConfigError(DeliveryError):
    """A channel or delivery configuration is invalid (never quotes a secret value)."""


class SecretError(DeliveryError):
    """A secret could not be loaded. The message names where it was looked for, never a value."""


class BlockedDestination(DeliveryError):
    """The SSRF guard refused a URL or host (scheme, or an address in a blocked range)."""
