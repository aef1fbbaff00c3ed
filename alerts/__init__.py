"""Alerts: the durable store, routing and silences, and delivery through the notification channels.

Data flows one way: :class:`Store` keeps the alerts ``detect`` produced (the contract is
:mod:`detect.alert`); :class:`Router` groups, silences, inhibits and dedups them and writes
notifications to the outbox in the store; :class:`DeliveryWorker` claims outbox items and sends
them through the channels (:mod:`alerts.channels`) built from configuration by
:func:`build_channels`, resolving secret references with :class:`SecretResolver` and checking
every destination with the SSRF :class:`Guard`. Every error raised on purpose derives from
:class:`AlertsError` (the tree is drawn in :mod:`alerts.errors`).

Modules, lowest first (each imports only those above it; :mod:`detect.alert` is the one outside
module used)::

    errors, schema, outbox, silence, secrets, ssrf, retry
    records → transaction → store → route            the store and routing
    channels/_http → channels/base → channels/<kind> → channels/config
    deliver                                           the worker over outbox and channels

Submodule imports (``from alerts.store import Store``) keep working; this module re-exports
the names the service, the API and the tools use.
"""

from __future__ import annotations

from alerts.channels import Channel, ChannelsConfig, Delivery, build_channels, load_config
from alerts.deliver import DeliveryStats, DeliveryWorker
from alerts.errors import (
    AlertNotFound,
    AlertsError,
    BlockedDestination,
    ChannelConfigError,
    DeliveryError,
    InvalidTransition,
    MigrationError,
    RouteConfigError,
    SecretError,
    SilenceError,
    StoreError,
)
from alerts.outbox import Outbox, OutboxItem
from alerts.retry import DEFAULT_SCHEDULE, RetryPolicy
from alerts.route import Notification, Router, RouterConfig
from alerts.secrets import Secret, SecretResolver
from alerts.silence import Matcher, Silence, labels_of, parse_matcher, parse_matchers
from alerts.ssrf import Guard
from alerts.store import (
    AlertDetail,
    AlertPage,
    AlertQuery,
    OutboxEntry,
    Store,
    Transaction,
    VerdictRecord,
    to_epoch,
)

__all__ = [
    "DEFAULT_SCHEDULE",
    "AlertDetail",
    "AlertNotFound",
    "AlertPage",
    "AlertQuery",
    "AlertsError",
    "BlockedDestination",
    "Channel",
    "ChannelConfigError",
    "ChannelsConfig",
    "Delivery",
    "DeliveryError",
    "DeliveryStats",
    "DeliveryWorker",
    "Guard",
    "InvalidTransition",
    "Matcher",
    "MigrationError",
    "Notification",
    "Outbox",
    "OutboxEntry",
    "OutboxItem",
    "RetryPolicy",
    "RouteConfigError",
    "Router",
    "RouterConfig",
    "Secret",
    "SecretError",
    "SecretResolver",
    "Silence",
    "SilenceError",
    "Store",
    "StoreError",
    "Transaction",
    "VerdictRecord",
    "build_channels",
    "labels_of",
    "load_config",
    "parse_matcher",
    "parse_matchers",
    "to_epoch",
]
