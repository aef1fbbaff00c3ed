"""Alert routing and notification, modelled on Alertmanager's dispatcher and notify pipeline.

Alerts enter with :meth:`Router.ingest`. The routing tree (matchers on ``detector``,
``severity``, ``identity`` and labels; first matching child wins unless ``continue``) picks the
routes; each route groups alerts by its ``group_by`` labels into aggregation groups. On
:meth:`Router.tick`, every group that is due runs the pipeline, per receiver integration:

    inhibit → silence → group wait / group interval → dedup against the notification log → enqueue

with Alertmanager's timer semantics: a new group waits ``group_wait`` before its first
notification (so a burst becomes one message), later changes go out at most every
``group_interval``, and an unchanged group is re-sent after ``repeat_interval``. The
notification log lives in the store (like Alertmanager's nflog), so a restarted router does not
re-notify what was already sent; the outbox rows and the log rows are written in one transaction.
Delivery and its retries belong to :mod:`alerts.deliver`.

The router holds no clock: every call takes ``now`` (epoch seconds), so replays and tests run
with compressed timers. Alerts leave their groups when their stored status is no longer ``open``
or when they were last seen more than ``resolve_timeout`` ago. Only firing notifications are
sent (no "resolved" messages); the payload is ``{"group_key", "receiver", "status": "firing",
"alerts": [alert/v1 dicts, most severe first]}``.

Configuration is plain data, e.g. from TOML::

    {"receivers": [{"name": "soc", "integrations": [{"channel": "webhook"}]},
                   {"name": "pager", "integrations": [{"channel": "pagerduty", "name": "0"}]}],
     "route": {"receiver": "soc", "group_by": ["identity", "detector"],
               "group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h",
               "routes": [{"matchers": ["severity=critical"], "receiver": "pager", "continue": True}]},
     "inhibit_rules": None,   # None: a critical alert mutes lower ones of the same identity
     "resolve_timeout": "1h"}

Typical use in the service, in the same unit of work as the alerts and the consumer offsets::

    router = Router(config, store); router.recover(now)
    with store.transaction() as tx:
        tx.add_alerts(alerts); router.ingest(alerts, now); router.tick(now, tx=tx)
        tx.save_offsets(group, offsets)
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import msgspec
import sqlalchemy as sa

from alerts import schema as t
from alerts.errors import RouteConfigError, SilenceError
from alerts.silence import Matcher, Silence, labels_of, matches_all, parse_matchers
from alerts.store import NflogEntry, OutboxEntry, Transaction, to_epoch
from detect.alert import SEVERITIES, Alert, severity_rank

__all__ = [
    "DEFAULT_GROUP_BY",
    "DEFAULT_INHIBIT_RULES",
    "Integration",
    "Receiver",
    "Route",
    "InhibitRule",
    "RouterConfig",
    "Notification",
    "Router",
    "RouterStore",
    "parse_duration",
]

log = logging.getLogger(__name__)

DEFAULT_GROUP_BY: Final = ("identity", "detector")
# Alertmanager's defaults.
DEFAULT_GROUP_WAIT: Final = 30.0
DEFAULT_GROUP_INTERVAL: Final = 300.0
DEFAULT_REPEAT_INTERVAL: Final = 4 * 3600.0
DEFAULT_RESOLVE_TIMEOUT: Final = 3600.0

Duration = float | str
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Duration) -> float:
    """Seconds from a number or text such as ``"30s"``, ``"5m"``, ``"4h"`` (must be positive)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        found = _DURATION.match(str(value))
        if not found:
            raise RouteConfigError(f"invalid duration {value!r}: use seconds or e.g. 30s, 5m, 4h")
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if seconds <= 0:
        raise RouteConfigError(f"duration must be positive, got {value!r}")
    return seconds


# --------------------------------------------------------------------------------------------
# Configuration (plain data; build from a dict with RouterConfig.from_dict)


class Integration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One way of notifying a receiver: a channel type and which of the receiver's channels of
    that type to use. ``name`` is the channel's index in the channel configuration (``"0"`` for
    the first), so the outbox ``endpoint`` ``receiver/channel/name`` is the delivery side's
    :func:`alerts.channels.config.endpoint_key`."""

    channel: str
    name: str = "0"
    #: Also notify when an alert of the group is acknowledged, resolved or marked a false
    #: positive (like Alertmanager's ``send_resolved``). None: on for PagerDuty, whose incidents
    #: follow the alert's status, off for the others.
    send_status: bool | None = None

    @property
    def sends_status(self) -> bool:
        return self.send_status if self.send_status is not None else self.channel == "pagerduty"

    @property
    def key(self) -> str:
        """``channel/name``: the integration's key in the notification log."""
        return f"{self.channel}/{self.name}"


class Receiver(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A named notification target with its integrations (an empty list notifies nobody)."""

    name: str
    integrations: tuple[Integration, ...] = ()


class Route(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A node of the routing tree; unset fields inherit from the parent route."""

    receiver: str | None = None
    matchers: tuple[str, ...] = ()
    group_by: tuple[str, ...] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = msgspec.field(default=False, name="continue")
    routes: tuple[Route, ...] = ()


class InhibitRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Mute alerts matching ``target_matchers`` while an alert matching ``source_matchers`` fires
    with the same values for every label in ``equal``."""

    source_matchers: tuple[str, ...]
    target_matchers: tuple[str, ...]
    equal: tuple[str, ...] = ("identity",)


#: A critical alert for an identity mutes that identity's lower-severity alerts.
DEFAULT_INHIBIT_RULES: Final = (
    InhibitRule(
        source_matchers=("severity=critical",),
        target_matchers=(f"severity=~{'|'.join(s for s in SEVERITIES if s != 'critical')}",),
        equal=("identity",),
    ),
)


class RouterConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole routing configuration; ``inhibit_rules=None`` means :data:`DEFAULT_INHIBIT_RULES`."""

    receivers: tuple[Receiver, ...]
    route: Route
    inhibit_rules: tuple[InhibitRule, ...] | None = None
    resolve_timeout: Duration = DEFAULT_RESOLVE_TIMEOUT

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterConfig:
        """Validate plain data (e.g. from TOML) into a config (raises :class:`RouteConfigError`)."""
        try:
            return msgspec.convert(dict(data), cls)
        except msgspec.ValidationError as exc:
            raise RouteConfigError(f"invalid routing config: {exc}") from exc


# --------------------------------------------------------------------------------------------
# The resolved tree


@dataclass(frozen=True)
class _Node:
    key: str
    matchers: tuple[Matcher, ...]
    receiver: Receiver
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    continue_: bool
    children: tuple[_Node, ...]

    def match(self, labels: Mapping[str, str]) -> list[_Node]:
        # Alertmanager's walk: depth first, the first matching child wins unless it says
        # ``continue``; a node none of whose children match takes the alert itself.
        if not matches_all(self.matchers, labels):
            return []
        found: list[_Node] = []
        for child in self.children:
            hits = child.match(labels)
            found.extend(hits)
            if hits and not child.continue_:
                break
        return found or [self]


def _build(route: Route, parent: _Node | None, key: str, receivers: Mapping[str, Receiver]) -> _Node:
    name = route.receiver or (parent.receiver.name if parent else None)
    if name is None:
        raise RouteConfigError("the root route needs a receiver")
    if name not in receivers:
        raise RouteConfigError(f"route {key} names unknown receiver {name!r}")
    try:
        matchers = parse_matchers(route.matchers)
    except SilenceError as exc:
        raise RouteConfigError(f"route {key}: {exc}") from exc
    group_by = (
        route.group_by if route.group_by is not None else (parent.group_by if parent else DEFAULT_GROUP_BY)
    )
    if "..." in group_by and len(group_by) > 1:
        raise RouteConfigError(f"route {key}: group_by '...' must stand alone")

    def timer(own: Duration | None, inherited: float | None, default: float) -> float:
        if own is not None:
            return parse_duration(own)
        return inherited if inherited is not None else default

    node = _Node(
        key=key,
        matchers=matchers,
        receiver=receivers[name],
        group_by=tuple(group_by),
        group_wait=timer(route.group_wait, parent.group_wait if parent else None, DEFAULT_GROUP_WAIT),
        group_interval=timer(
            route.group_interval, parent.group_interval if parent else None, DEFAULT_GROUP_INTERVAL
        ),
        repeat_interval=timer(
            route.repeat_interval, parent.repeat_interval if parent else None, DEFAULT_REPEAT_INTERVAL
        ),
        continue_=route.continue_,
        children=(),
    )
    children = tuple(
        _build(child, node, f"{key}/{i}{{{','.join(child.matchers)}}}", receivers)
        for i, child in enumerate(route.routes)
    )
    return _Node(**{**node.__dict__, "children": children})


@dataclass(frozen=True)
class _Inhibitor:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Runtime


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    """One message for one receiver integration, as enqueued in the outbox."""

    group_key: str
    receiver: str
    integration: Integration
    endpoint: str
    message_id: str
    content_hash: str
    sequence: int
    alerts: tuple[Alert, ...]
    status: str = "firing"  # "changed": alerts whose status moved on (each carries its own)

    def payload(self) -> dict[str, Any]:
        """The outbox payload: ``{"group_key", "receiver", "status", "alerts": [alert/v1 dicts]}``."""
        return {
            "group_key": self.group_key,
            "receiver": self.receiver,
            "status": self.status,
            "alerts": [a.to_dict() for a in self.alerts],
        }

    def to_outbox(self) -> OutboxEntry:
        """The outbox row carrying this notification."""
        return OutboxEntry(
            receiver=self.receiver,
            channel=self.integration.channel,
            endpoint=self.endpoint,
            message_id=self.message_id,
            payload=self.payload(),
        )


class RouterStore(Protocol):
    """What the router needs from the store: a unit of work (see :class:`alerts.store.Store`)."""

    def transaction(self) -> AbstractContextManager[Transaction]: ...


@dataclass
class _Group:
    key: str
    node: _Node
    labels: dict[str, str]
    next_flush: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    #: Alerts acknowledged out of the group, followed until they resolve (for status followers).
    followed: dict[str, Alert] = field(default_factory=dict)


def _content_hash(alert_ids: Sequence[str]) -> str:
    return hashlib.sha256("\x1f".join(sorted(alert_ids)).encode()).hexdigest()


def _message_id(group_key: str, receiver: str, integration: str, content_hash: str, sequence: int) -> str:
    raw = "\x1f".join((group_key, receiver, integration, content_hash, str(sequence)))
    return "vwn_" + hashlib.sha256(raw.encode()).hexdigest()[:40]


class Router:
    """Groups, inhibits, silences and dedups alerts into outbox notifications (see module doc)."""

    def __init__(self, config: RouterConfig | Mapping[str, Any], store: RouterStore) -> None:
        cfg = config if isinstance(config, RouterConfig) else RouterConfig.from_dict(config)
        receivers: dict[str, Receiver] = {}
        for receiver in cfg.receivers:
            if receiver.name in receivers:
                raise RouteConfigError(f"receiver {receiver.name!r} is defined twice")
            receivers[receiver.name] = receiver
        if cfg.route.matchers:
            raise RouteConfigError("the root route matches every alert; it takes no matchers")
        self.tree = _build(cfg.route, None, "{}", receivers)
        rules = DEFAULT_INHIBIT_RULES if cfg.inhibit_rules is None else cfg.inhibit_rules
        try:
            self.inhibitors = tuple(
                _Inhibitor(parse_matchers(r.source_matchers), parse_matchers(r.target_matchers), r.equal)
                for r in rules
            )
        except SilenceError as exc:
            raise RouteConfigError(f"invalid inhibit rule: {exc}") from exc
        self.resolve_timeout = parse_duration(cfg.resolve_timeout)
        self.store = store
        self._groups: dict[str, _Group] = {}

    # -- input --------------------------------------------------------------------------------

    def ingest(self, alerts: Iterable[Alert], now: float) -> None:
        """Put alerts into their aggregation groups; an alert no longer ``open`` leaves them."""
        for alert in alerts:
            if alert.status != "open":
                self._drop(alert.id)
                continue
            labels = labels_of(alert)
            for node in self.tree.match(labels):
                if node.group_by == ("...",):
                    group_labels = dict(sorted(labels.items()))
                else:
                    group_labels = {k: labels.get(k, "") for k in node.group_by}
                key = node.key + ":{" + ",".join(f"{k}={v!r}" for k, v in group_labels.items()) + "}"
                group = self._groups.get(key)
                if group is None:
                    group = _Group(key=key, node=node, labels=group_labels, next_flush=now + node.group_wait)
                    self._groups[key] = group
                    log.debug("new aggregation group %s", key)
                group.alerts[alert.id] = alert

    def recover(self, now: float) -> int:
        """Rebuild the groups from the store's open alerts after a restart; returns how many.

        The notification log makes this safe: alerts already notified are not sent again until
        their repeat interval, counted from the original send.
        """
        with self.store.transaction() as tx:
            a = t.alerts
            query = sa.select(a.c.alert_json).where(a.c.status == "open").order_by(a.c.id)
            alerts = [
                msgspec.structs.replace(msgspec.json.decode(r.alert_json, type=Alert), status="open")
                for r in tx.conn.execute(query)
            ]
        self.ingest(alerts, now)
        return len(alerts)

    def _drop(self, alert_id: str) -> None:
        for group in self._groups.values():
            group.alerts.pop(alert_id, None)

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group key → alert ids (for inspection and tests)."""
        return {k: sorted(g.alerts) for k, g in self._groups.items()}

    # -- the pipeline -------------------------------------------------------------------------

    def tick(self, now: float, *, tx: Transaction | None = None) -> list[Notification]:
        """Flush every due group; enqueue and log its notifications; return them.

        With ``tx`` the outbox and notification-log rows join that unit of work (so they commit
        with the alerts and consumer offsets); otherwise the router opens its own.
        """
        if tx is not None:
            return self._tick(now, tx)
        with self.store.transaction() as own:
            return self._tick(now, own)

    def _tick(self, now: float, tx: Transaction) -> list[Notification]:
        if not any(g.next_flush <= now for g in self._groups.values()):
            return []
        changed = self._refresh(now, tx)
        firing = {a.id: a for g in self._groups.values() for a in g.alerts.values()}
        inhibited = self._inhibited(firing.values())
        silences = tx.list_silences(active_at=now)
        due = sorted(k for k, g in self._groups.items() if g.next_flush <= now)
        sent = tx.nflog_entries(due)
        records: list[NflogEntry] = []
        out: list[Notification] = []
        for key in due:
            group = self._groups[key]
            group.next_flush = now + group.node.group_interval
            if not group.alerts and not group.followed:
                del self._groups[key]
                continue
            # Most severe first: channels that show only the top few alerts show these.
            muted = inhibited | {i for i, a in group.alerts.items() if _silenced(a, silences, now)}
            visible = sorted(
                (a for a in group.alerts.values() if a.id not in muted),
                key=lambda a: (-severity_rank(a.severity), -a.score, a.id),
            )
            out.extend(self._notify(group, visible, now, sent, records))
        out.extend(self._status_changes(changed))
        if out:
            tx.nflog_record(*records)
            tx.enqueue([n.to_outbox() for n in out], now=now)
            log.info("enqueued %d notifications", len(out))
        return out

    def _refresh(self, now: float, tx: Transaction) -> list[tuple[_Group, Alert]]:
        # The store is the authority: statuses change through the API (acknowledge, resolve) and
        # repeats of an alert merge there (count, last seen, event ids), so notifications carry
        # the stored version. Alerts the store does not hold stay as ingested.
        ids = sorted({i for g in self._groups.values() for i in (*g.alerts, *g.followed)})
        stored: dict[str, Alert] = {}
        a = t.alerts
        for chunk in range(0, len(ids), 500):
            rows = tx.conn.execute(
                sa.select(a.c.id, a.c.status, a.c.alert_json).where(a.c.id.in_(ids[chunk : chunk + 500]))
            )
            for r in rows:
                alert = msgspec.json.decode(r.alert_json, type=Alert)
                stored[r.id] = msgspec.structs.replace(alert, status=r.status)
        changed: list[tuple[_Group, Alert]] = []
        for group in self._groups.values():
            for alert_id, alert in list(group.alerts.items()):
                current = stored.get(alert_id, alert)
                stale = now - to_epoch(current.last_seen) > self.resolve_timeout
                if stale or current.status != "open":
                    del group.alerts[alert_id]
                    if current.status != "open":
                        changed.append((group, current))
                        if current.status == "acknowledged":
                            group.followed[alert_id] = current
                else:
                    group.alerts[alert_id] = current
            for alert_id, seen in list(group.followed.items()):
                now_stored = stored.get(alert_id)
                if now_stored is None or now_stored.status == seen.status:
                    continue
                changed.append((group, now_stored))
                if now_stored.status == "acknowledged":
                    group.followed[alert_id] = now_stored
                else:  # resolved, false positive, suppressed, or reopened: no longer followed
                    del group.followed[alert_id]
        return changed

    @staticmethod
    def _status_changes(changed: list[tuple[_Group, Alert]]) -> Iterator[Notification]:
        """One notification per alert whose status moved on, to integrations that follow status.

        The message id names the alert and its new status, so a restart or a repeated tick
        enqueues it once (the outbox ignores a repeated id)."""
        for group, alert in changed:
            receiver = group.node.receiver
            for integration in receiver.integrations:
                if not integration.sends_status:
                    continue
                content = _content_hash([f"{alert.id}:{alert.status}"])
                yield Notification(
                    group_key=group.key,
                    receiver=receiver.name,
                    integration=integration,
                    endpoint=f"{receiver.name}/{integration.key}",
                    message_id=_message_id(group.key, receiver.name, integration.key, content, 0),
                    content_hash=content,
                    sequence=0,
                    alerts=(alert,),
                    status="changed",
                )

    def _inhibited(self, alerts: Iterable[Alert]) -> set[str]:
        labelled = [(a.id, labels_of(a)) for a in alerts]
        muted: set[str] = set()
        for rule in self.inhibitors:
            sources: set[tuple[str, ...]] = set()
            source_ids: dict[tuple[str, ...], set[str]] = {}
            for alert_id, labels in labelled:
                if matches_all(rule.source, labels):
                    equal = tuple(labels.get(k, "") for k in rule.equal)
                    sources.add(equal)
                    source_ids.setdefault(equal, set()).add(alert_id)
            if not sources:
                continue
            for alert_id, labels in labelled:
                if not matches_all(rule.target, labels):
                    continue
                equal = tuple(labels.get(k, "") for k in rule.equal)
                if equal not in sources:
                    continue
                # An alert matching both sides cannot inhibit itself (Alertmanager's rule).
                if matches_all(rule.source, labels) and source_ids[equal] == {alert_id}:
                    continue
                muted.add(alert_id)
        return muted

    def _notify(
        self,
        group: _Group,
        visible: list[Alert],
        now: float,
        sent: Mapping[tuple[str, str, str], NflogEntry],
        records: list[NflogEntry],
    ) -> Iterator[Notification]:
        if not visible:
            return
        ids = [a.id for a in visible]
        content = _content_hash(ids)
        receiver = group.node.receiver
        for integration in receiver.integrations:
            entry = sent.get((group.key, receiver.name, integration.key))
            if not _needs_update(entry, ids, now, group.node.repeat_interval):
                continue
            sequence = (entry.sequence if entry else 0) + 1
            records.append(
                NflogEntry(
                    group_key=group.key,
                    receiver=receiver.name,
                    integration=integration.key,
                    content_hash=content,
                    firing_ids=tuple(ids),
                    sent_at=now,
                    sequence=sequence,
                )
            )
            yield Notification(
                group_key=group.key,
                receiver=receiver.name,
                integration=integration,
                endpoint=f"{receiver.name}/{integration.key}",
                message_id=_message_id(group.key, receiver.name, integration.key, content, sequence),
                content_hash=content,
                sequence=sequence,
                alerts=tuple(visible),
            )


def _silenced(alert: Alert, silences: Sequence[Silence], now: float) -> bool:
    if not silences:
        return False
    labels = labels_of(alert)
    return any(s.mutes(labels, now) for s in silences)


def _needs_update(
    entry: NflogEntry | None, firing: Sequence[str], now: float, repeat_interval: float
) -> bool:
    # Alertmanager's DedupStage: notify on anything new, otherwise only once the repeat
    # interval has passed since the last send.
    if entry is None:
        return True
    if not set(firing) <= set(entry.firing_ids):
        return True
    return entry.sent_at <= now - repeat_interval
