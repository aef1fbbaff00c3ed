"""Notification channels: one module per integration, all behind the :class:`Channel` Protocol.

``send(payload, message_id=...) -> Delivery(ok, retryable, reason, retry_after, disable)``; see
:mod:`alerts.channels.base`. :func:`build_channels` turns a validated configuration into
channels keyed by outbox endpoint.

Inside the package, lowest first: ``_http`` (status classifier, ``Retry-After``, transport error
names; imports nothing of ``alerts``) → ``base`` (the seam and the guarded HTTP poster) → one
module per integration → ``config`` (validation and :func:`build_channels`). Channel errors are
:class:`alerts.errors.ChannelConfigError`, :class:`~alerts.errors.SecretError` and
:class:`~alerts.errors.BlockedDestination`.
"""

from alerts.channels._http import Verdict, classify_status, describe_exception, parse_retry_after
from alerts.channels.base import Channel, Delivery, HttpPoster
from alerts.channels.config import ChannelsConfig, build_channels, endpoint_key, load_config
from alerts.channels.email import EmailChannel
from alerts.channels.pagerduty import PagerDutyChannel, TokenBucket
from alerts.channels.slack import SlackChannel
from alerts.channels.syslog import SyslogChannel
from alerts.channels.teams import TeamsChannel
from alerts.channels.webhook import WebhookChannel

__all__ = [
    "Channel",
    "ChannelsConfig",
    "Delivery",
    "EmailChannel",
    "HttpPoster",
    "PagerDutyChannel",
    "SlackChannel",
    "SyslogChannel",
    "TeamsChannel",
    "TokenBucket",
    "Verdict",
    "WebhookChannel",
    "build_channels",
    "classify_status",
    "describe_exception",
    "endpoint_key",
    "load_config",
    "parse_retry_after",
]
