"""The alert store's value types and their mapping to and from table rows.

Query and result types (:class:`AlertQuery`, :class:`AlertPage`, :class:`AlertDetail`, ...), the
lifecycle rules (:data:`TRANSITIONS`, :data:`VERDICTS`), the pure merge of a re-emitted alert into
the stored one (:func:`merge_occurrences`), and the row mapping the store's queries share
(:func:`alert_row`, :func:`alert_of`, :func:`outbox_item_of`, the keyset cursor). Nothing here
touches a database connection; :mod:`alerts.transaction` and :mod:`alerts.store` do.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec

from alerts.errors import StoreError
from alerts.outbox import OutboxItem
from detect.alert import MAX_EVENT_IDS, SEVERITIES, STATUSES, Alert, decode_alert, encode_alert, severity_rank

__all__ = [
    "JSON",
    "SORT_KEYS",
    "SYSTEM_ACTOR",
    "TRANSITIONS",
    "VERDICTS",
    "AddResult",
    "AlertDetail",
    "AlertPage",
    "AlertQuery",
    "NflogEntry",
    "OutboxEntry",
    "PRIORITY_COLUMNS",
    "QueueSummary",
    "SortKey",
    "StatusChange",
    "VerdictRecord",
    "alert_of",
    "alert_row",
    "decode_cursor",
    "encode_cursor",
    "merge_occurrences",
    "outbox_item_of",
    "search_text_of",
    "to_epoch",
]

#: Allowed lifecycle moves. Closed states can only be reopened; a re-opened alert starts over.
TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "open": frozenset({"acknowledged", "resolved", "false_positive", "suppressed"}),
    "acknowledged": frozenset({"open", "resolved", "false_positive", "suppressed"}),
    "resolved": frozenset({"open"}),
    "false_positive": frozenset({"open"}),
    "suppressed": frozenset({"open"}),
}
VERDICTS: Final = ("true_positive", "false_positive", "benign")
#: ``priority`` is the triage order: severity, then score (risk), then last activity.
SORT_KEYS: Final = ("priority", "last_seen", "first_seen", "score", "severity", "count")
SortKey = Literal["priority", "last_seen", "first_seen", "score", "severity", "count"]
#: The columns ``priority`` orders by, most significant first.
PRIORITY_COLUMNS: Final = ("severity_rank", "score", "last_seen")
SYSTEM_ACTOR: Final = "vaultwatch"

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


class QueueSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The queue at a glance: open alerts per severity and the oldest one nobody acknowledged.

    ``oldest_open_at`` is when the store received that alert (epoch seconds): its age is how long
    it has waited for an analyst, whatever the event time of the entries behind it.
    """

    open_by_severity: dict[str, int]
    oldest_open: Alert | None = None
    oldest_open_at: float | None = None


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


def search_text_of(alert: Alert) -> str:
    return "\n".join((alert.title, *alert.paths)).lower()


def alert_row(alert: Alert, now: float) -> dict[str, Any]:
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
        "search_text": search_text_of(alert),
        "first_seen": to_epoch(alert.first_seen),
        "last_seen": to_epoch(alert.last_seen),
        "count": alert.count,
        "alert_json": encode_alert(alert).decode(),
        "created_at": now,
        "updated_at": now,
    }


def alert_of(row: Any) -> Alert:
    alert = decode_alert(row.alert_json)
    if alert.status != row.status:  # the column is authoritative
        alert = msgspec.structs.replace(alert, status=row.status)
    return alert


#: The one JSON encoder of the store (payloads, matchers, cursors).
JSON: Final = msgspec.json.Encoder()


def encode_cursor(sort: str, descending: bool, value: Any, alert_id: str) -> str:
    raw = JSON.encode([sort, descending, value, alert_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, descending: bool) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        c_sort, c_desc, value, alert_id = msgspec.json.decode(raw)
    except (ValueError, TypeError, msgspec.DecodeError) as exc:
        raise StoreError("invalid cursor") from exc
    if c_sort != sort or c_desc != descending or not isinstance(alert_id, str):
        raise StoreError("cursor belongs to a query with another sort order")
    return value, alert_id


def outbox_item_of(row: Any) -> OutboxItem:
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
