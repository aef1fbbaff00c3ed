"""Notification channels: one module per integration, all behind the :class:`Channel` Protocol.

``send(payload, message_id=...) -> Delivery(ok, retryable, reason, retry_after, disable)``; see
:mod:`alerts.channels.base`. :func:`build_channels` turns a validated configuration into
channels keyed by outbox endpoint.
"""

from alerts.channels.base import Channel, Delivery
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
    "PagerDutyChannel",
    "SlackChannel",
    "SyslogChannel",
    "TeamsChannel",
    "TokenBucket",
    "WebhookChannel",
    "build_channels",
    "endpoint_key",
    "load_config",
]
