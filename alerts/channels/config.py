"""Validated channel configuration and building channels from it.

The configuration is plain data (a parsed TOML document, see ``examples/channels.toml``)::

    [delivery]            attempt timeout, retry schedule, UI base URL, SSRF switches
    [[receivers]]         name = "soc"
    [[receivers.webhook]] url = "file:/run/secrets/soc_url", signing_secrets = ["env:SOC_WHSEC"]
    [[receivers.slack]] / [[receivers.pagerduty]] / [[receivers.teams]] /
    [[receivers.email]] / [[receivers.syslog]]

Every secret (URLs of Slack/Teams/webhooks, signing secrets, routing keys, SMTP passwords) is a
reference (``env:``, ``file:``, ``vault:``) resolved by :class:`alerts.secrets.SecretResolver`;
a literal value is refused, and the error never quotes it. Channels are keyed by
:func:`endpoint_key` (``receiver/kind/index``, or ``receiver/kind/name`` for a channel with a
``name``), the key the router writes into each outbox item's ``endpoint``.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from alerts.channels.base import Channel
from alerts.channels.email import EmailChannel
from alerts.channels.pagerduty import DEFAULT_EVENTS_URL, PagerDutyChannel, TokenBucket
from alerts.channels.slack import SlackChannel
from alerts.channels.syslog import SyslogChannel
from alerts.channels.teams import TeamsChannel
from alerts.channels.webhook import WebhookChannel
from alerts.errors import ChannelConfigError
from alerts.retry import DEFAULT_SCHEDULE, RetryPolicy
from alerts.secrets import SecretResolver
from alerts.ssrf import Guard

__all__ = [
    "ChannelsConfig",
    "DeliverySettings",
    "EmailConfig",
    "PagerDutyConfig",
    "ReceiverConfig",
    "SlackConfig",
    "SyslogConfig",
    "TeamsConfig",
    "WebhookConfig",
    "build_channels",
    "endpoint_key",
    "load_config",
]

_SECRET_PREFIXES = ("env:", "file:", "vault:")


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class DeliverySettings(_Base):
    attempt_timeout: float = 10.0
    lease_seconds: float = 60.0
    schedule: list[float] = msgspec.field(default_factory=lambda: list(DEFAULT_SCHEDULE))
    jitter: float = 0.1
    cap: float = 36000.0
    ui_base_url: str = "http://127.0.0.1:8080"
    allow_loopback: bool = False
    ca_file: str | None = None  # trust this CA bundle instead of the system store


class WebhookConfig(_Base):
    url: str
    signing_secrets: list[str]
    body: Literal["group", "alert"] = "group"
    name: str | None = None


class SlackConfig(_Base):
    url: str
    name: str | None = None


class TeamsConfig(_Base):
    url: str
    name: str | None = None


class PagerDutyConfig(_Base):
    routing_key: str
    events_url: str = DEFAULT_EVENTS_URL
    events_per_minute: float = 100.0
    burst: float = 20.0
    name: str | None = None


class EmailConfig(_Base):
    host: str
    sender: str
    to: list[str]
    port: int = 587
    security: Literal["starttls", "tls", "plain"] = "starttls"
    username: str | None = None
    password: str | None = None
    subject_prefix: str = "[vaultwatch]"
    name: str | None = None


class SyslogConfig(_Base):
    host: str
    port: int = 6514
    transport: Literal["udp", "tcp", "tls"] = "tls"
    facility: int = 13
    app_name: str = "vaultwatch"
    ca_file: str | None = None
    name: str | None = None


class ReceiverConfig(_Base):
    name: str
    webhook: list[WebhookConfig] = []
    slack: list[SlackConfig] = []
    pagerduty: list[PagerDutyConfig] = []
    teams: list[TeamsConfig] = []
    email: list[EmailConfig] = []
    syslog: list[SyslogConfig] = []


class ChannelsConfig(_Base):
    delivery: DeliverySettings = msgspec.field(default_factory=DeliverySettings)
    receivers: list[ReceiverConfig] = []

    def retry_policy(self) -> RetryPolicy:
        """The configured retry schedule."""
        d = self.delivery
        return RetryPolicy(schedule=tuple(d.schedule), jitter=d.jitter, cap=d.cap)


def endpoint_key(receiver: str, kind: str, index: int | str) -> str:
    """The outbox ``endpoint`` of a receiver's integration of ``kind``: ``index`` is the
    integration's position among the receiver's ``kind`` entries, or its configured name."""
    return f"{receiver}/{kind}/{index}"


def _key(receiver: str, kind: str, index: int, cfg: Any) -> str:
    # every channel config has an optional ``name`` that replaces the index in its endpoint
    name: str | None = cfg.name
    return endpoint_key(receiver, kind, name if name is not None else index)


def _check_ref(value: str | None, where: str) -> None:
    if value is not None and not value.startswith(_SECRET_PREFIXES):
        raise ChannelConfigError(
            f"{where} must be a secret reference (env:NAME, file:PATH or vault:PATH#KEY)"
        )


def load_config(data: Mapping[str, Any]) -> ChannelsConfig:
    """Validate a parsed configuration document; raises :class:`ChannelConfigError`."""
    try:
        cfg = msgspec.convert(dict(data), ChannelsConfig)
    except msgspec.ValidationError as exc:
        raise ChannelConfigError(f"invalid channel configuration: {exc}") from None
    names: set[str] = set()
    for r in cfg.receivers:
        if not r.name or "/" in r.name:
            raise ChannelConfigError("receiver names must be non-empty and contain no '/'")
        if r.name in names:
            raise ChannelConfigError(f"duplicate receiver {r.name!r}")
        names.add(r.name)
        for kind in ("webhook", "slack", "pagerduty", "teams", "email", "syslog"):
            entries: list[Any] = getattr(r, kind)
            keys = [e.name if e.name is not None else str(i) for i, e in enumerate(entries)]
            if any(not k or "/" in k for k in keys) or len(set(keys)) != len(keys):
                raise ChannelConfigError(
                    f"{r.name}.{kind}: channel names must be unique, non-empty, without '/'"
                )
        for i, w in enumerate(r.webhook):
            _check_ref(w.url, f"{r.name}.webhook[{i}].url")
            if not w.signing_secrets:
                raise ChannelConfigError(f"{r.name}.webhook[{i}] needs signing_secrets")
            if len(w.signing_secrets) > 2:
                raise ChannelConfigError(
                    f"{r.name}.webhook[{i}]: at most two signing secrets (during a rotation)"
                )
            for j, s in enumerate(w.signing_secrets):
                _check_ref(s, f"{r.name}.webhook[{i}].signing_secrets[{j}]")
        for i, s_cfg in enumerate(r.slack):
            _check_ref(s_cfg.url, f"{r.name}.slack[{i}].url")
        for i, t in enumerate(r.teams):
            _check_ref(t.url, f"{r.name}.teams[{i}].url")
        for i, p in enumerate(r.pagerduty):
            _check_ref(p.routing_key, f"{r.name}.pagerduty[{i}].routing_key")
            if not 0 < p.events_per_minute <= 120:
                raise ChannelConfigError(f"{r.name}.pagerduty[{i}].events_per_minute must be within (0, 120]")
        for i, e in enumerate(r.email):
            _check_ref(e.password, f"{r.name}.email[{i}].password")
            if not e.to:
                raise ChannelConfigError(f"{r.name}.email[{i}] needs at least one recipient")
    d = cfg.delivery
    if d.attempt_timeout <= 0 or d.lease_seconds <= d.attempt_timeout:
        raise ChannelConfigError("delivery: attempt_timeout must be > 0 and lease_seconds > attempt_timeout")
    cfg.retry_policy()  # validates the schedule
    return cfg


def build_channels(
    cfg: ChannelsConfig,
    resolver: SecretResolver,
    *,
    clock: Callable[[], float] = time.time,
    guard: Guard | None = None,
) -> dict[str, Channel]:
    """Resolve secrets and build every configured channel, keyed by :func:`endpoint_key`.
    Raises :class:`ChannelConfigError`/:class:`SecretError` before anything is sent."""
    d = cfg.delivery
    if guard is None:
        try:
            ctx = ssl.create_default_context(cafile=d.ca_file) if d.ca_file else None
        except (OSError, ssl.SSLError) as exc:
            raise ChannelConfigError(f"delivery.ca_file cannot be loaded ({type(exc).__name__})") from None
        guard = Guard(allow_loopback=d.allow_loopback, tls_context=ctx)
    timeout = d.attempt_timeout
    buckets: dict[str, TokenBucket] = {}
    out: dict[str, Channel] = {}
    try:
        for r in cfg.receivers:
            for i, w in enumerate(r.webhook):
                out[_key(r.name, "webhook", i, w)] = WebhookChannel(
                    url=resolver.resolve(w.url),
                    secrets=[resolver.resolve(s) for s in w.signing_secrets],
                    guard=guard,
                    timeout=timeout,
                    body=w.body,
                    clock=clock,
                )
            for i, s in enumerate(r.slack):
                out[_key(r.name, "slack", i, s)] = SlackChannel(
                    url=resolver.resolve(s.url),
                    guard=guard,
                    ui_base_url=d.ui_base_url,
                    timeout=timeout,
                    clock=clock,
                )
            for i, t in enumerate(r.teams):
                out[_key(r.name, "teams", i, t)] = TeamsChannel(
                    url=resolver.resolve(t.url),
                    guard=guard,
                    ui_base_url=d.ui_base_url,
                    timeout=timeout,
                    clock=clock,
                )
            for i, p in enumerate(r.pagerduty):
                key = resolver.resolve(p.routing_key)
                # one bucket per routing key, shared by every channel using it
                bucket = buckets.setdefault(
                    key.reveal(), TokenBucket(rate=p.events_per_minute / 60.0, capacity=p.burst, clock=clock)
                )
                out[_key(r.name, "pagerduty", i, p)] = PagerDutyChannel(
                    routing_key=key,
                    guard=guard,
                    ui_base_url=d.ui_base_url,
                    events_url=p.events_url,
                    timeout=timeout,
                    events_per_minute=p.events_per_minute,
                    clock=clock,
                    bucket=bucket,
                )
            for i, e in enumerate(r.email):
                out[_key(r.name, "email", i, e)] = EmailChannel(
                    host=e.host,
                    port=e.port,
                    sender=e.sender,
                    recipients=e.to,
                    guard=guard,
                    ui_base_url=d.ui_base_url,
                    security=e.security,
                    username=e.username,
                    password=resolver.resolve(e.password) if e.password else None,
                    timeout=timeout,
                    subject_prefix=e.subject_prefix,
                )
            for i, y in enumerate(r.syslog):
                try:
                    sctx = ssl.create_default_context(cafile=y.ca_file) if y.ca_file else None
                except (OSError, ssl.SSLError) as exc:
                    where = f"{r.name}.syslog[{i}].ca_file"
                    raise ChannelConfigError(f"{where} cannot be loaded ({type(exc).__name__})") from None
                out[_key(r.name, "syslog", i, y)] = SyslogChannel(
                    host=y.host,
                    port=y.port,
                    guard=guard,
                    transport=y.transport,
                    timeout=timeout,
                    facility=y.facility,
                    app_name=y.app_name,
                    tls_context=sctx,
                    clock=clock,
                )
    except BaseException:
        for ch in out.values():
            ch.close()
        raise
    return out
