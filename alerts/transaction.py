"""The store's unit of work: every read and write of alerts, silences, the notification log, the
outbox, checkpoints and offsets, inside one database transaction.

A :class:`Transaction` is handed out by :meth:`alerts.store.Store.transaction`; everything done
through it commits or rolls back together. It implements :class:`alerts.outbox.Outbox`. Dialect
differences (SQLite vs PostgreSQL upserts and row locks) are confined to the three seams at the
top of the class.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection

from alerts import schema as t
from alerts.errors import AlertNotFound, InvalidTransition, StoreError
from alerts.outbox import OutboxItem
from alerts.records import (
    JSON,
    SYSTEM_ACTOR,
    TRANSITIONS,
    VERDICTS,
    AddResult,
    NflogEntry,
    OutboxEntry,
    alert_of,
    alert_row,
    merge_occurrences,
    outbox_item_of,
    search_text_of,
    to_epoch,
)
from alerts.silence import Matcher, Silence, parse_matchers
from detect.alert import MAX_EVENT_IDS, STATUSES, Alert, encode_alert

__all__ = ["Transaction"]

# The unit of work is the store's: its log lines keep the store's logger name.
log = logging.getLogger("alerts.store")


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
        rows = [alert_row(batch[i], stamp) for i in ids]  # validates everything before writing
        stmt = self._insert(t.alerts).on_conflict_do_nothing(index_elements=["id"]).returning(t.alerts.c.id)
        inserted = {r.id for r in self.conn.execute(stmt, rows)}
        merged: list[str] = []
        rest = [i for i in ids if i not in inserted]
        if rest:
            query = self._lock(sa.select(t.alerts).where(t.alerts.c.id.in_(rest)).order_by(t.alerts.c.id))
            for row in self.conn.execute(query).all():
                stored = alert_of(row)
                combined = merge_occurrences(stored, batch[row.id])
                if combined != stored:
                    self.conn.execute(
                        t.alerts.update()
                        .where(t.alerts.c.id == row.id)
                        .values(
                            count=combined.count,
                            first_seen=to_epoch(combined.first_seen),
                            last_seen=to_epoch(combined.last_seen),
                            search_text=search_text_of(combined),
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
        return alert_of(row)

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
        alert = msgspec.structs.replace(alert_of(row), status=to)
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
                matchers=JSON.encode(silence.matchers).decode(),
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
            row["firing_ids"] = JSON.encode(list(entry.firing_ids)).decode()
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
                "payload": JSON.encode(e.payload).decode(),
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
        return [outbox_item_of(r) for r in rows]

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
        return [outbox_item_of(r) for r in self.conn.execute(query)]

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
