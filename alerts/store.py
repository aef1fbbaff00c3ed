"""The durable alert store: alerts, lifecycle, silences, verdicts, notification log and the outbox.

One :class:`Store` speaks to SQLite (the default: one file, WAL mode, a busy timeout, foreign keys
on, every write transaction taken with ``BEGIN IMMEDIATE`` so concurrent writers queue instead of
failing) or PostgreSQL (``postgresql+psycopg://...``; several workers may share it: alert inserts
use ``INSERT ... ON CONFLICT`` and outbox claims use ``FOR UPDATE SKIP LOCKED``).

Everything that must change together is done through one unit of work::

    with store.transaction() as tx:
        tx.add_alerts(alerts)
        tx.enqueue(outbox_entries, now=now)
        tx.save_checkpoint("engine", blob)
        tx.save_offsets("vaultwatch", {("vault-audit", 0): 1234})

The :class:`Store` methods of the same names each run in a transaction of their own. The store
implements :class:`alerts.outbox.Outbox` (``claim_due``, ``mark_delivered``, ``mark_retry``,
``mark_failed``, ``disable_endpoint``, ``depth``, ``oldest_pending_age``). Times are epoch seconds.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

from alerts import schema as t
from alerts.errors import AlertNotFound, InvalidTransition, MigrationError, StoreError
from alerts.outbox import Outbox, OutboxItem
from alerts.silence import Matcher, Silence, labels_of, parse_matchers
from detect.alert import MAX_EVENT_IDS, SEVERITIES, STATUSES, Alert, decode_alert, encode_alert, severity_rank

__all__ = [
    "DEFAULT_URL",
    "VERSION_TABLE",
    "TRANSITIONS",
    "VERDICTS",
    "SORT_KEYS",
    "Store",
    "Transaction",
    "AddResult",
    "AlertQuery",
    "AlertPage",
    "AlertDetail",
    "StatusChange",
    "VerdictRecord",
    "OutboxEntry",
    "NflogEntry",
    "merge_occurrences",
    "to_epoch",
]

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "sqlite:///vaultwatch.db"
MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S: Final = 30.0
#: Alembic's bookkeeping table, named so other users of the same database schema do not clash.
VERSION_TABLE: Final = "alerts_alembic_version"

#: Allowed lifecycle moves. Closed states can only be reopened; a re-opened alert starts over.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "open": frozenset({"acknowledged", "resolved", "false_positive", "suppressed"}),
    "acknowledged": frozenset({"open", "resolved", "false_positive", "suppressed"}),
    "resolved": frozenset({"open"}),
    "false_positive": frozenset({"open"}),
    "suppressed": frozenset({"open"}),
}
VERDICTS: Final = ("true_positive", "false_positive", "benign")
SORT_KEYS: Final = ("last_seen", "first_seen", "score", "severity", "count")
SortKey = Literal["last_seen", "first_seen", "score", "severity", "count"]
SYSTEM_ACTOR: Final = "vaultwatch"

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Value types


class AddResult(msgspec.Struct, frozen=True):
    """What :meth:`Transaction.add_alerts` did: ids inserted new, ids merged into an existing row."""

    inserted: tuple[str, ...] = ()
    merged: tuple[str, ...] = ()


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    """One row of an alert's status history (``from_status`` is None for the creation row)."""

    alert_id: str
    from_status: str | None
    to_status: str
    actor: str
    comment: str
    at: float


class VerdictRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An analyst's verdict on an alert, with the fields the detection engine learns from."""

    id: int
    alert_id: str
    detector: str
    identity_key: str
    dedup_key: str
    verdict: str
    actor: str
    comment: str
    at: float


class AlertDetail(msgspec.Struct, frozen=True, kw_only=True):
    """One alert with its status history and verdicts, oldest first."""

    alert: Alert
    history: tuple[StatusChange, ...]
    verdicts: tuple[VerdictRecord, ...]


class AlertQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Filters, sort and page for :meth:`Store.list_alerts` (empty tuple / None = no filter).

    ``since``/``until`` select alerts active in the window (``last_seen >= since`` and
    ``first_seen < until``); ``text`` is a case-insensitive substring of the title or a path.
    ``cursor`` is the opaque ``next_cursor`` of the previous page of the same query.
    """

    status: tuple[str, ...] = ()
    severity: tuple[str, ...] = ()
    min_severity: str | None = None
    detector: tuple[str, ...] = ()
    identity: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None
    sort: SortKey = "last_seen"
    descending: bool = True
    limit: int = 50
    cursor: str | None = None


class AlertPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of alerts, the total matching the filters, and the cursor of the next page."""

    items: tuple[Alert, ...]
    total: int
    next_cursor: str | None


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A notification to enqueue: one per (notification, receiver integration)."""

    receiver: str
    channel: str
    endpoint: str
    message_id: str
    payload: dict[str, Any]


class NflogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """Notification log row, as Alertmanager's nflog: what a (group, receiver, integration) last got."""

    group_key: str
    receiver: str
    integration: str
    content_hash: str
    firing_ids: tuple[str, ...]
    sent_at: float
    sequence: int


# --------------------------------------------------------------------------------------------
# Pure helpers


def to_epoch(value: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp (naive times are taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"invalid RFC 3339 timestamp {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _union(first: Sequence[str], second: Sequence[str], cap: int) -> tuple[str, ...]:
    seen = dict.fromkeys(first)
    for item in second:
        if len(seen) >= cap:
            break
        seen.setdefault(item)
    return tuple(seen)[:cap]


def merge_occurrences(stored: Alert, incoming: Alert) -> Alert:
    """Fold a re-emitted alert into the stored one, idempotently.

    Identity, status, title and scoring stay as stored; occurrence data merges: ``count`` is the
    max, ``first_seen``/``last_seen`` widen, and event ids, source addresses and paths are unions
    (event ids capped at :data:`MAX_EVENT_IDS`). Merging the same input twice changes nothing.
    """
    first = stored.first_seen
    if to_epoch(incoming.first_seen) < to_epoch(stored.first_seen):
        first = incoming.first_seen
    last = stored.last_seen
    if to_epoch(incoming.last_seen) > to_epoch(stored.last_seen):
        last = incoming.last_seen
    return msgspec.structs.replace(
        stored,
        count=max(stored.count, incoming.count),
        first_seen=first,
        last_seen=last,
        event_ids=_union(stored.event_ids, incoming.event_ids, MAX_EVENT_IDS),
        source_addresses=_union(stored.source_addresses, incoming.source_addresses, MAX_EVENT_IDS),
        paths=_union(stored.paths, incoming.paths, MAX_EVENT_IDS),
    )


def _search_text(alert: Alert) -> str:
    return "\n".join((alert.title, *alert.paths)).lower()


def _alert_row(alert: Alert, now: float) -> dict[str, Any]:
    if alert.severity not in SEVERITIES:
        raise StoreError(f"alert {alert.id}: unknown severity {alert.severity!r}")
    if alert.status not in STATUSES:
        raise StoreError(f"alert {alert.id}: unknown status {alert.status!r}")
    return {
        "id": alert.id,
        "detector": alert.detector,
        "severity": alert.severity,
        "severity_rank": severity_rank(alert.severity),
        "score": alert.score,
        "identity_key": alert.identity.key,
        "dedup_key": alert.dedup_key,
        "status": alert.status,
        "title": alert.title,
        "search_text": _search_text(alert),
        "first_seen": to_epoch(alert.first_seen),
        "last_seen": to_epoch(alert.last_seen),
        "count": alert.count,
        "alert_json": encode_alert(alert).decode(),
        "created_at": now,
        "updated_at": now,
    }


def _alert_of(row: Any) -> Alert:
    alert = decode_alert(row.alert_json)
    if alert.status != row.status:  # the column is authoritative
        alert = msgspec.structs.replace(alert, status=row.status)
    return alert


_json = msgspec.json.Encoder()


def _encode_cursor(sort: str, descending: bool, value: Any, alert_id: str) -> str:
    raw = _json.encode([sort, descending, value, alert_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str, descending: bool) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        c_sort, c_desc, value, alert_id = msgspec.json.decode(raw)
    except (ValueError, TypeError, msgspec.DecodeError) as exc:
        raise StoreError("invalid cursor") from exc
    if c_sort != sort or c_desc != descending or not isinstance(alert_id, str):
        raise StoreError("cursor belongs to a query with another sort order")
    return value, alert_id


# --------------------------------------------------------------------------------------------
# The unit of work


class Transaction:
    """All store operations inside one database transaction (see :meth:`Store.transaction`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name

    # -- dialect seams ------------------------------------------------------------------------

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return pg_dialect.insert(table)
        if self.dialect == "sqlite":
            return sqlite_dialect.insert(table)
        raise StoreError(f"unsupported database dialect {self.dialect!r}")

    def _upsert(self, table: sa.Table, rows: list[dict[str, Any]], keys: Sequence[str]) -> None:
        if not rows:
            return
        stmt = self._insert(table)
        update = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
        self.conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=update), rows)

    def _lock(self, query: sa.Select[Any], *, skip_locked: bool = False) -> sa.Select[Any]:
        # SQLite serialises writers with BEGIN IMMEDIATE; PostgreSQL needs row locks.
        if self.dialect == "postgresql":
            return query.with_for_update(skip_locked=skip_locked)
        return query

    # -- alerts -------------------------------------------------------------------------------

    def add_alerts(self, alerts: Iterable[Alert], *, now: float | None = None) -> AddResult:
        """Insert new alerts; fold repeats into the stored row (see :func:`merge_occurrences`).

        Never fails on a duplicate: a concurrent insert of the same id on another connection waits
        on the unique index, then merges. Rows are written in id order so two writers of
        overlapping batches cannot deadlock.
        """
        stamp = time.time() if now is None else now
        batch: dict[str, Alert] = {}
        for alert in alerts:
            if len(alert.event_ids) > MAX_EVENT_IDS:
                alert = msgspec.structs.replace(alert, event_ids=alert.event_ids[:MAX_EVENT_IDS])
            prior = batch.get(alert.id)
            batch[alert.id] = alert if prior is None else merge_occurrences(prior, alert)
        if not batch:
            return AddResult()
        ids = sorted(batch)
        rows = [_alert_row(batch[i], stamp) for i in ids]  # validates everything before writing
        stmt = self._insert(t.alerts).on_conflict_do_nothing(index_elements=["id"]).returning(t.alerts.c.id)
        inserted = {r.id for r in self.conn.execute(stmt, rows)}
        merged: list[str] = []
        rest = [i for i in ids if i not in inserted]
        if rest:
            query = self._lock(sa.select(t.alerts).where(t.alerts.c.id.in_(rest)).order_by(t.alerts.c.id))
            for row in self.conn.execute(query).all():
                stored = _alert_of(row)
                combined = merge_occurrences(stored, batch[row.id])
                if combined != stored:
                    self.conn.execute(
                        t.alerts.update()
                        .where(t.alerts.c.id == row.id)
                        .values(
                            count=combined.count,
                            first_seen=to_epoch(combined.first_seen),
                            last_seen=to_epoch(combined.last_seen),
                            search_text=_search_text(combined),
                            alert_json=encode_alert(combined).decode(),
                            updated_at=stamp,
                        )
                    )
                    batch[row.id] = combined
                merged.append(row.id)
        events = [{"alert_id": i, "request_id": e} for i in ids for e in batch[i].event_ids[:MAX_EVENT_IDS]]
        if events:
            self.conn.execute(self._insert(t.alert_events).on_conflict_do_nothing(), events)
        if inserted:
            self.conn.execute(
                t.status_history.insert(),
                [
                    {
                        "alert_id": i,
                        "from_status": None,
                        "to_status": batch[i].status,
                        "actor": SYSTEM_ACTOR,
                        "comment": "created",
                        "at": stamp,
                    }
                    for i in sorted(inserted)
                ],
            )
        return AddResult(inserted=tuple(sorted(inserted)), merged=tuple(merged))

    def get_alert(self, alert_id: str) -> Alert:
        """The alert with this id (raises :class:`AlertNotFound`)."""
        row = self.conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id)).first()
        if row is None:
            raise AlertNotFound(f"no alert {alert_id!r}")
        return _alert_of(row)

    def transition(
        self, alert_id: str, to: str, actor: str, comment: str = "", *, now: float | None = None
    ) -> Alert:
        """Move an alert to status ``to`` if :data:`TRANSITIONS` allows it, recording history."""
        stamp = time.time() if now is None else now
        if to not in STATUSES:
            raise InvalidTransition(f"unknown status {to!r}; use one of {', '.join(STATUSES)}")
        row = self.conn.execute(self._lock(sa.select(t.alerts).where(t.alerts.c.id == alert_id))).first()
        if row is None:
            raise AlertNotFound(f"no alert {alert_id!r}")
        current = row.status
        if to not in TRANSITIONS[current]:
            raise InvalidTransition(f"alert {alert_id}: cannot move from {current} to {to}")
        alert = msgspec.structs.replace(_alert_of(row), status=to)
        self.conn.execute(
            t.alerts.update()
            .where(t.alerts.c.id == alert_id)
            .values(status=to, alert_json=encode_alert(alert).decode(), updated_at=stamp)
        )
        self.conn.execute(
            t.status_history.insert().values(
                alert_id=alert_id, from_status=current, to_status=to, actor=actor, comment=comment, at=stamp
            )
        )
        log.info("alert %s: %s -> %s by %s", alert_id, current, to, actor)
        return alert

    def record_verdict(
        self, alert_id: str, verdict: str, actor: str, comment: str = "", *, now: float | None = None
    ) -> int:
        """Record an analyst's verdict (one of :data:`VERDICTS`); returns the verdict id."""
        if verdict not in VERDICTS:
            raise StoreError(f"unknown verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
        self.get_alert(alert_id)
        stamp = time.time() if now is None else now
        result = self.conn.execute(
            t.verdicts.insert()
            .values(alert_id=alert_id, verdict=verdict, actor=actor, comment=comment, at=stamp)
            .returning(t.verdicts.c.id)
        )
        return int(result.scalar_one())

    # -- silences -----------------------------------------------------------------------------

    def create_silence(
        self,
        matchers: Iterable[str | Mapping[str, Any] | Matcher],
        *,
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str = "",
        now: float | None = None,
    ) -> Silence:
        """Store a new silence (validated: at least one non-empty matcher, ends after it starts)."""
        silence = Silence(
            id=uuid.uuid4().hex,
            matchers=parse_matchers(matchers),
            starts_at=starts_at,
            ends_at=ends_at,
            created_by=created_by,
            comment=comment,
            created_at=time.time() if now is None else now,
        )
        self.conn.execute(
            t.silences.insert().values(
                id=silence.id,
                matchers=_json.encode(silence.matchers).decode(),
                starts_at=silence.starts_at,
                ends_at=silence.ends_at,
                created_by=silence.created_by,
                comment=silence.comment,
                expired=False,
                created_at=silence.created_at,
            )
        )
        log.info(
            "silence %s created by %s: %s", silence.id, created_by, ", ".join(map(str, silence.matchers))
        )
        return silence

    def expire_silence(self, silence_id: str, *, now: float | None = None) -> None:
        """Expire a silence now; its alerts notify again at their group's next flush."""
        result = self.conn.execute(
            t.silences.update().where(t.silences.c.id == silence_id).values(expired=True)
        )
        if result.rowcount == 0:
            raise AlertNotFound(f"no silence {silence_id!r}")
        log.info("silence %s expired", silence_id)

    def list_silences(self, *, active_at: float | None = None) -> list[Silence]:
        """All silences, newest first; with ``active_at``, only those active at that time."""
        query = sa.select(t.silences).order_by(t.silences.c.created_at.desc(), t.silences.c.id)
        if active_at is not None:
            query = query.where(
                t.silences.c.expired.is_(False),
                t.silences.c.starts_at <= active_at,
                t.silences.c.ends_at > active_at,
            )
        out = []
        for row in self.conn.execute(query):
            out.append(
                Silence(
                    id=row.id,
                    matchers=msgspec.json.decode(row.matchers, type=tuple[Matcher, ...]),
                    starts_at=row.starts_at,
                    ends_at=row.ends_at,
                    created_by=row.created_by,
                    comment=row.comment,
                    expired=bool(row.expired),
                    created_at=row.created_at,
                )
            )
        return out

    # -- notification log ---------------------------------------------------------------------

    def nflog_get(self, group_key: str, receiver: str, integration: str) -> NflogEntry | None:
        """The last notification a (group, receiver, integration) got, if any."""
        return self.nflog_entries([group_key]).get((group_key, receiver, integration))

    def nflog_entries(self, group_keys: Iterable[str]) -> dict[tuple[str, str, str], NflogEntry]:
        """Notification-log rows of these groups, keyed by (group key, receiver, integration)."""
        n = t.notification_log
        keys = sorted(set(group_keys))
        out: dict[tuple[str, str, str], NflogEntry] = {}
        for start in range(0, len(keys), 500):
            for row in self.conn.execute(sa.select(n).where(n.c.group_key.in_(keys[start : start + 500]))):
                out[(row.group_key, row.receiver, row.integration)] = NflogEntry(
                    group_key=row.group_key,
                    receiver=row.receiver,
                    integration=row.integration,
                    content_hash=row.content_hash,
                    firing_ids=tuple(msgspec.json.decode(row.firing_ids, type=list[str])),
                    sent_at=row.sent_at,
                    sequence=row.sequence,
                )
        return out

    def nflog_record(self, *entries: NflogEntry) -> None:
        """Record that notifications were sent (each replaces the previous row of its key)."""
        rows = []
        for entry in entries:
            row = msgspec.to_builtins(entry)
            row["firing_ids"] = _json.encode(list(entry.firing_ids)).decode()
            rows.append(row)
        self._upsert(t.notification_log, rows, ("group_key", "receiver", "integration"))

    # -- outbox -------------------------------------------------------------------------------

    def enqueue(self, entries: Iterable[OutboxEntry], *, now: float | None = None) -> int:
        """Add outbox items (due at once); a repeated ``message_id`` is ignored. Returns rows added."""
        stamp = time.time() if now is None else now
        rows = [
            {
                "receiver": e.receiver,
                "channel": e.channel,
                "endpoint": e.endpoint,
                "message_id": e.message_id,
                "payload": _json.encode(e.payload).decode(),
                "attempts": 0,
                "state": "pending",
                "created_at": stamp,
                "next_attempt_at": stamp,
                "lease_until": 0.0,
                "updated_at": stamp,
                "last_reason": None,
            }
            for e in entries
        ]
        if not rows:
            return 0
        stmt = self._insert(t.outbox).on_conflict_do_nothing(index_elements=["message_id"])
        stmt = stmt.returning(t.outbox.c.id)
        return len(self.conn.execute(stmt, rows).all())

    def claim_due(self, now: float, *, limit: int = 100, lease_seconds: float = 60.0) -> list[OutboxItem]:
        """Lease the head item of every endpoint that is due and not leased, oldest first.

        Only the oldest pending item of an endpoint can be claimed, so an endpoint's items are
        delivered in creation order even across retries; an item whose lease ran out (its worker
        died) is claimable again. ``attempts`` counts finished attempts.
        """
        o = t.outbox
        heads = sa.select(sa.func.min(o.c.id)).where(o.c.state == "pending").group_by(o.c.endpoint)
        query = (
            sa.select(o)
            .where(o.c.id.in_(heads), o.c.next_attempt_at <= now, o.c.lease_until <= now)
            .order_by(o.c.id)
            .limit(limit)
        )
        rows = self.conn.execute(self._lock(query, skip_locked=True)).all()
        if not rows:
            return []
        self.conn.execute(
            o.update()
            .where(o.c.id.in_([r.id for r in rows]))
            .values(lease_until=now + lease_seconds, updated_at=now)
        )
        return [_outbox_item(r) for r in rows]

    def _finish(self, item_id: int, now: float, values: dict[str, Any]) -> None:
        o = t.outbox
        result = self.conn.execute(
            o.update()
            .where(o.c.id == item_id)
            .values(attempts=o.c.attempts + 1, lease_until=0.0, updated_at=now, **values)
        )
        if result.rowcount == 0:
            raise StoreError(f"no outbox item {item_id}")

    def mark_delivered(self, item_id: int, now: float, reason: str = "ok") -> None:
        """The item was delivered; the endpoint's next item becomes claimable."""
        self._finish(item_id, now, {"state": "delivered", "last_reason": reason})

    def mark_retry(self, item_id: int, now: float, next_attempt_at: float, reason: str) -> None:
        """The attempt failed but may succeed later: hold the endpoint until ``next_attempt_at``."""
        self._finish(item_id, now, {"next_attempt_at": next_attempt_at, "last_reason": reason})

    def mark_failed(self, item_id: int, now: float, reason: str) -> None:
        """Give up on the item: it stays visible as ``failed`` and the endpoint moves on."""
        self._finish(item_id, now, {"state": "failed", "last_reason": reason})
        log.warning("outbox item %d failed: %s", item_id, reason)

    def disable_endpoint(self, endpoint: str, now: float, reason: str) -> None:
        """The endpoint is gone (HTTP 410): its pending items end ``disabled``."""
        o = t.outbox
        result = self.conn.execute(
            o.update()
            .where(o.c.endpoint == endpoint, o.c.state == "pending")
            .values(state="disabled", last_reason=reason, lease_until=0.0, updated_at=now)
        )
        log.warning("endpoint %s disabled (%s); %d pending items dropped", endpoint, reason, result.rowcount)

    def depth(self) -> int:
        """Number of pending outbox items."""
        o = t.outbox
        return int(self.conn.execute(sa.select(sa.func.count()).where(o.c.state == "pending")).scalar_one())

    def oldest_pending_age(self, now: float) -> float | None:
        """Seconds since the oldest pending item was created, or None when nothing is pending."""
        o = t.outbox
        oldest = self.conn.execute(sa.select(sa.func.min(o.c.created_at)).where(o.c.state == "pending"))
        value = oldest.scalar_one()
        return None if value is None else max(0.0, now - float(value))

    def outbox_items(self, *, state: str | None = None, endpoint: str | None = None) -> list[OutboxItem]:
        """Outbox items in creation order, optionally filtered (for the API and tests)."""
        o = t.outbox
        query = sa.select(o).order_by(o.c.id)
        if state is not None:
            query = query.where(o.c.state == state)
        if endpoint is not None:
            query = query.where(o.c.endpoint == endpoint)
        return [_outbox_item(r) for r in self.conn.execute(query)]

    # -- checkpoints and consumer offsets -----------------------------------------------------

    def save_checkpoint(self, key: str, blob: bytes, *, now: float | None = None) -> None:
        """Store an opaque snapshot (e.g. the engine's baselines) under ``key``."""
        stamp = time.time() if now is None else now
        self._upsert(t.checkpoints, [{"key": key, "blob": bytes(blob), "updated_at": stamp}], ("key",))

    def load_checkpoint(self, key: str) -> bytes | None:
        """The snapshot saved under ``key``, or None."""
        row = self.conn.execute(sa.select(t.checkpoints.c.blob).where(t.checkpoints.c.key == key)).first()
        return None if row is None else bytes(row.blob)

    def save_offsets(
        self, group: str, offsets: Mapping[tuple[str, int], int], *, now: float | None = None
    ) -> None:
        """Store consumer offsets (the next offset to read) per (topic, partition) for a group."""
        stamp = time.time() if now is None else now
        rows = [
            {"group_id": group, "topic": topic, "partition": part, "offset": off, "updated_at": stamp}
            for (topic, part), off in sorted(offsets.items())
        ]
        self._upsert(t.consumer_offsets, rows, ("group_id", "topic", "partition"))

    def load_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """The stored offsets of a consumer group."""
        c = t.consumer_offsets
        rows = self.conn.execute(sa.select(c.c.topic, c.c.partition, c.c.offset).where(c.c.group_id == group))
        return {(r.topic, int(r.partition)): int(r.offset) for r in rows}


def _outbox_item(row: Any) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        receiver=row.receiver,
        channel=row.channel,
        endpoint=row.endpoint,
        message_id=row.message_id,
        payload=msgspec.json.decode(row.payload),
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        state=row.state,
        last_reason=row.last_reason,
    )


# --------------------------------------------------------------------------------------------
# The store


def _normalise_url(url: str) -> str:
    # A bare postgresql:// would pick psycopg2, which is not a dependency.
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


_READ_ONLY: Final = "vaultwatch.read_only"
_ALEMBIC_LOCK: Final = threading.Lock()
_MIGRATION_LOCK: Final = 0x7661756C7477  # an arbitrary constant shared by every vaultwatch worker
_RETRIES: Final = 3
_RETRY_SQLSTATES: Final = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def _retryable(exc: BaseException | None) -> bool:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES


def _db_error(exc: sa.exc.SQLAlchemyError) -> StoreError:
    # Only the driver's first line: SQLAlchemy's full text carries statement parameters.
    orig = getattr(exc, "orig", None)
    detail = str(orig).splitlines()[0] if orig is not None and str(orig) else type(exc).__name__
    return StoreError(f"database error ({type(exc).__name__}): {detail}")


class Store:
    """The alert store over SQLite or PostgreSQL (see the module docstring).

    ``Store(url)`` connects lazily; call :meth:`migrate` once to create or upgrade the schema.
    Use it as a context manager or call :meth:`close` to release the connection pool.
    """

    def __init__(self, url: str = DEFAULT_URL, *, echo: bool = False) -> None:
        self._engine = _make_engine(_normalise_url(url), echo=echo)
        self.dialect = self._engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({self._engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for read-only reporting queries)."""
        return self._engine

    def migrate(self) -> str:
        """Bring the schema to the newest Alembic revision; returns that revision id."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["version_table"] = VERSION_TABLE
        try:
            # Alembic keeps its migration context in module globals: one run per process at a time.
            with _ALEMBIC_LOCK, self._engine.begin() as conn:
                if self.dialect == "postgresql":
                    # Workers starting together: one migrates, the others wait and find it done.
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
            with self._engine.connect() as conn:
                context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
                revision = context.get_current_revision()
        except sa.exc.SQLAlchemyError as exc:
            raise MigrationError(f"migration failed: {_db_error(exc)}") from exc
        log.info("alert store schema at revision %s", revision)
        return revision or ""

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[Transaction]:
        """A unit of work: everything done through the yielded object commits or rolls back together.

        ``read_only`` lets SQLite readers start without the write lock, so the API never queues
        behind the pipeline (WAL readers see the last commit).
        """
        try:
            with self._engine.connect() as conn:
                conn.info[_READ_ONLY] = read_only
                with conn.begin():
                    yield Transaction(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise _db_error(exc) from exc

    def _run(self, fn: Callable[[Transaction], _T], *, read_only: bool = False) -> _T:
        # PostgreSQL may pick this transaction as a deadlock or serialisation victim under
        # concurrent writers; the whole unit of work is replayable, so try it again.
        for attempt in range(1, _RETRIES + 1):
            try:
                with self.transaction(read_only=read_only) as tx:
                    return fn(tx)
            except StoreError as exc:
                if attempt == _RETRIES or not _retryable(exc.__cause__):
                    raise
                log.info("transaction retried after %s (attempt %d)", type(exc.__cause__).__name__, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- alerts -------------------------------------------------------------------------------

    def add_alerts(
        self, alerts: Iterable[Alert], *, conn: Transaction | None = None, now: float | None = None
    ) -> AddResult:
        """See :meth:`Transaction.add_alerts`; with ``conn``, runs inside that unit of work."""
        if conn is not None:
            return conn.add_alerts(alerts, now=now)
        items = list(alerts)
        return self._run(lambda tx: tx.add_alerts(items, now=now))

    def transition(
        self, alert_id: str, to: str, actor: str, comment: str = "", *, now: float | None = None
    ) -> Alert:
        """See :meth:`Transaction.transition`."""
        return self._run(lambda tx: tx.transition(alert_id, to, actor, comment, now=now))

    def record_verdict(
        self, alert_id: str, verdict: str, actor: str, comment: str = "", *, now: float | None = None
    ) -> int:
        """See :meth:`Transaction.record_verdict`."""
        return self._run(lambda tx: tx.record_verdict(alert_id, verdict, actor, comment, now=now))

    def verdicts_since(self, since: float) -> list[VerdictRecord]:
        """Verdicts recorded at or after ``since``, oldest first, with the alert's detector and identity."""
        v, a = t.verdicts, t.alerts
        query = (
            sa.select(v, a.c.detector, a.c.identity_key, a.c.dedup_key)
            .join(a, a.c.id == v.c.alert_id)
            .where(v.c.at >= since)
            .order_by(v.c.at, v.c.id)
        )
        with self.transaction(read_only=True) as tx:
            return [
                VerdictRecord(
                    id=r.id,
                    alert_id=r.alert_id,
                    detector=r.detector,
                    identity_key=r.identity_key,
                    dedup_key=r.dedup_key,
                    verdict=r.verdict,
                    actor=r.actor,
                    comment=r.comment,
                    at=r.at,
                )
                for r in tx.conn.execute(query)
            ]

    def get_alert(self, alert_id: str) -> AlertDetail:
        """One alert with its history and verdicts (raises :class:`AlertNotFound`)."""
        h, v, a = t.status_history, t.verdicts, t.alerts
        with self.transaction(read_only=True) as tx:
            alert = tx.get_alert(alert_id)
            history = tuple(
                StatusChange(
                    alert_id=r.alert_id,
                    from_status=r.from_status,
                    to_status=r.to_status,
                    actor=r.actor,
                    comment=r.comment,
                    at=r.at,
                )
                for r in tx.conn.execute(sa.select(h).where(h.c.alert_id == alert_id).order_by(h.c.id))
            )
            verdict_rows = tx.conn.execute(
                sa.select(v, a.c.detector, a.c.identity_key, a.c.dedup_key)
                .join(a, a.c.id == v.c.alert_id)
                .where(v.c.alert_id == alert_id)
                .order_by(v.c.id)
            )
            verdicts = tuple(
                VerdictRecord(
                    id=r.id,
                    alert_id=r.alert_id,
                    detector=r.detector,
                    identity_key=r.identity_key,
                    dedup_key=r.dedup_key,
                    verdict=r.verdict,
                    actor=r.actor,
                    comment=r.comment,
                    at=r.at,
                )
                for r in verdict_rows
            )
        return AlertDetail(alert=alert, history=history, verdicts=verdicts)

    def event_alerts(self, request_id: str) -> list[str]:
        """Ids of the alerts an audit entry (Vault ``request.id``) contributed to."""
        e = t.alert_events
        with self.transaction(read_only=True) as tx:
            rows = tx.conn.execute(sa.select(e.c.alert_id).where(e.c.request_id == request_id))
            return sorted(r.alert_id for r in rows)

    def list_alerts(self, query: AlertQuery | None = None) -> AlertPage:
        """Filter, sort and page alerts with a keyset cursor (stable under concurrent inserts)."""
        q = query or AlertQuery()
        if q.sort not in SORT_KEYS:
            raise StoreError(f"unknown sort key {q.sort!r}; use one of {', '.join(SORT_KEYS)}")
        if not 1 <= q.limit <= 1000:
            raise StoreError("limit must be between 1 and 1000")
        a = t.alerts
        conds: list[sa.ColumnElement[bool]] = []
        if q.status:
            conds.append(a.c.status.in_(q.status))
        if q.severity:
            conds.append(a.c.severity.in_(q.severity))
        if q.min_severity is not None:
            conds.append(a.c.severity_rank >= severity_rank(q.min_severity))
        if q.detector:
            conds.append(a.c.detector.in_(q.detector))
        if q.identity is not None:
            conds.append(a.c.identity_key == q.identity)
        if q.since is not None:
            conds.append(a.c.last_seen >= q.since)
        if q.until is not None:
            conds.append(a.c.first_seen < q.until)
        if q.text:
            needle = q.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(a.c.search_text.like(f"%{needle}%", escape="\\"))
        column = a.c.severity_rank if q.sort == "severity" else a.c[q.sort]
        page = sa.select(a).where(*conds)
        if q.cursor:
            value, last_id = _decode_cursor(q.cursor, q.sort, q.descending)
            if q.descending:
                page = page.where(sa.or_(column < value, sa.and_(column == value, a.c.id < last_id)))
            else:
                page = page.where(sa.or_(column > value, sa.and_(column == value, a.c.id > last_id)))
        order = (column.desc(), a.c.id.desc()) if q.descending else (column.asc(), a.c.id.asc())
        page = page.order_by(*order).limit(q.limit + 1)
        with self.transaction(read_only=True) as tx:
            total = int(tx.conn.execute(sa.select(sa.func.count()).select_from(a).where(*conds)).scalar_one())
            rows = tx.conn.execute(page).all()
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        cursor = None
        if more and rows:
            last = rows[-1]
            key = last.severity_rank if q.sort == "severity" else getattr(last, q.sort)
            cursor = _encode_cursor(q.sort, q.descending, key, last.id)
        return AlertPage(items=tuple(_alert_of(r) for r in rows), total=total, next_cursor=cursor)

    def active_alerts(self, statuses: Sequence[str] = ("open",)) -> list[Alert]:
        """Every alert in one of ``statuses`` (the router rebuilds its groups from these)."""
        a = t.alerts
        with self.transaction(read_only=True) as tx:
            rows = tx.conn.execute(sa.select(a).where(a.c.status.in_(statuses)).order_by(a.c.id))
            return [_alert_of(r) for r in rows]

    # -- silences -----------------------------------------------------------------------------

    def create_silence(
        self,
        matchers: Iterable[str | Mapping[str, Any] | Matcher],
        *,
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str = "",
        now: float | None = None,
    ) -> Silence:
        """See :meth:`Transaction.create_silence`."""
        specs = list(matchers)
        return self._run(
            lambda tx: tx.create_silence(
                specs, starts_at=starts_at, ends_at=ends_at, created_by=created_by, comment=comment, now=now
            )
        )

    def expire_silence(self, silence_id: str, *, now: float | None = None) -> None:
        """See :meth:`Transaction.expire_silence`."""
        self._run(lambda tx: tx.expire_silence(silence_id, now=now))

    def list_silences(self, *, active_at: float | None = None) -> list[Silence]:
        """See :meth:`Transaction.list_silences`."""
        return self._run(lambda tx: tx.list_silences(active_at=active_at), read_only=True)

    def silenced_by(self, alert: Alert, now: float) -> list[str]:
        """Ids of the silences muting ``alert`` at ``now``."""
        labels = labels_of(alert)
        return [s.id for s in self.list_silences(active_at=now) if s.mutes(labels, now)]

    def is_silenced(self, alert: Alert, now: float) -> bool:
        """Whether an active silence mutes ``alert`` at ``now``."""
        return bool(self.silenced_by(alert, now))

    # -- outbox (implements alerts.outbox.Outbox) ---------------------------------------------

    def enqueue(self, entries: Iterable[OutboxEntry], *, now: float | None = None) -> int:
        """See :meth:`Transaction.enqueue`."""
        items = list(entries)
        return self._run(lambda tx: tx.enqueue(items, now=now))

    def claim_due(self, now: float, *, limit: int = 100, lease_seconds: float = 60.0) -> list[OutboxItem]:
        """See :meth:`Transaction.claim_due`."""
        return self._run(lambda tx: tx.claim_due(now, limit=limit, lease_seconds=lease_seconds))

    def mark_delivered(self, item_id: int, now: float, reason: str = "ok") -> None:
        """See :meth:`Transaction.mark_delivered`."""
        self._run(lambda tx: tx.mark_delivered(item_id, now, reason))

    def mark_retry(self, item_id: int, now: float, next_attempt_at: float, reason: str) -> None:
        """See :meth:`Transaction.mark_retry`."""
        self._run(lambda tx: tx.mark_retry(item_id, now, next_attempt_at, reason))

    def mark_failed(self, item_id: int, now: float, reason: str) -> None:
        """See :meth:`Transaction.mark_failed`."""
        self._run(lambda tx: tx.mark_failed(item_id, now, reason))

    def disable_endpoint(self, endpoint: str, now: float, reason: str) -> None:
        """See :meth:`Transaction.disable_endpoint`."""
        self._run(lambda tx: tx.disable_endpoint(endpoint, now, reason))

    def depth(self) -> int:
        """See :meth:`Transaction.depth`."""
        return self._run(lambda tx: tx.depth(), read_only=True)

    def oldest_pending_age(self, now: float) -> float | None:
        """See :meth:`Transaction.oldest_pending_age`."""
        return self._run(lambda tx: tx.oldest_pending_age(now), read_only=True)

    def outbox_items(self, *, state: str | None = None, endpoint: str | None = None) -> list[OutboxItem]:
        """See :meth:`Transaction.outbox_items`."""
        return self._run(lambda tx: tx.outbox_items(state=state, endpoint=endpoint), read_only=True)

    # -- checkpoints and offsets --------------------------------------------------------------

    def save_checkpoint(self, key: str, blob: bytes, *, now: float | None = None) -> None:
        """See :meth:`Transaction.save_checkpoint`."""
        self._run(lambda tx: tx.save_checkpoint(key, blob, now=now))

    def load_checkpoint(self, key: str) -> bytes | None:
        """See :meth:`Transaction.load_checkpoint`."""
        return self._run(lambda tx: tx.load_checkpoint(key), read_only=True)

    def save_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """See :meth:`Transaction.save_offsets`."""
        self._run(lambda tx: tx.save_offsets(group, offsets))

    def load_offsets(self, group: str) -> dict[tuple[str, int], int]:
        """See :meth:`Transaction.load_offsets`."""
        return self._run(lambda tx: tx.load_offsets(group), read_only=True)


def _make_engine(url: str, *, echo: bool) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError("invalid database URL") from exc
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed, echo=echo, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from the sqlite3 module so BEGIN IMMEDIATE below is
            # the only BEGIN: writers then queue on the busy timeout instead of failing to upgrade
            # a read lock mid-transaction.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # The flag is one-shot so a later plain engine.begin() on this pooled connection writes.
            conn.exec_driver_sql("BEGIN" if conn.info.pop(_READ_ONLY, False) else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql":
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
    raise StoreError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql")


if TYPE_CHECKING:

    def _store_is_an_outbox(store: Store, tx: Transaction) -> tuple[Outbox, Outbox]:
        # mypy proves both satisfy the delivery seam exactly.
        return store, tx
