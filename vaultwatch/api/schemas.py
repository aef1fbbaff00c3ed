"""Request and response bodies of the API, one family per entity (pydantic, OpenAPI-documented).

``AlertPublic`` is the ``vaultwatch.alert/v1`` contract object plus API-only fields
(``assignee``); the contract fields are never renamed here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from alerts.silence import Silence
from detect.alert import Alert

__all__ = [
    "AUTH_RESPONSES",
    "ErrorBody",
    "AlertIdentityPublic",
    "ReasonPublic",
    "AlertPublic",
    "AlertList",
    "StatusChangePublic",
    "VerdictPublic",
    "EventPublic",
    "EventPage",
    "AlertDetailPublic",
    "ActionRequest",
    "AssignRequest",
    "VerdictRequest",
    "BulkActionRequest",
    "BulkResult",
    "MatcherIn",
    "SilenceCreate",
    "SilencePublic",
    "IdentityBrief",
    "IdentityList",
    "IdentityDetail",
    "LoginRequest",
    "SessionInfo",
    "TokenResponse",
    "Me",
    "ApiKeyPublic",
    "AuditEntryPublic",
    "AdminStatus",
    "alert_public",
    "silence_public",
    "silences_public",
    "iso",
    "DATETIME_MIN",
    "DATETIME_MAX",
    "SILENCE_END_MAX",
    "UtcDatetime",
    "SilenceEnd",
    "bounded_utc",
    "utc_of_epoch",
]

log = logging.getLogger(__name__)

Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "resolved", "false_positive", "suppressed"]


#: Every datetime the API accepts (query parameter or body field) lies in this window, UTC.
#: Wide enough for any audit log and any "forever"; narrow enough that every value can be
#: converted to UTC, to an epoch, to an Arrow timestamp and back, and be widened by the routes'
#: windows (a day, an hour) or shifted by any offset without leaving the calendar.
DATETIME_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
DATETIME_MAX: Final = datetime(9000, 1, 1, tzinfo=UTC)
#: The end of a silence: the same window (kept as a name of its own for its documentation).
SILENCE_END_MAX: Final = DATETIME_MAX


def _window_text(high: datetime) -> str:
    return f"between 1970-01-01T00:00:00Z and {high.year:04d}-01-01T00:00:00Z"


_RANGE_TEXT: Final = _window_text(DATETIME_MAX)


def bounded_utc(value: datetime, name: str = "datetime", *, high: datetime = DATETIME_MAX) -> datetime:
    """``value`` in UTC (naive means UTC); ``ValueError`` naming the window when outside
    ``DATETIME_MIN`` (inclusive) .. ``high`` (exclusive).

    The calendar's edges (year 1, year 9999 with an offset) are refused here, before any
    conversion that could overflow.
    """
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        inside = DATETIME_MIN <= aware < high
        utc = aware.astimezone(UTC) if inside else None
    except (OverflowError, ValueError):
        utc = None
    if utc is None:
        raise ValueError(f"{name} must be {_window_text(high)}")
    return utc


def _bounded(value: datetime) -> datetime:
    return bounded_utc(value, "the date and time")


def _bounded_end(value: datetime) -> datetime:
    return bounded_utc(value, "the end", high=SILENCE_END_MAX)


#: A datetime parameter or field: RFC 3339, naive means UTC, within ``DATETIME_MIN``..``DATETIME_MAX``
#: (422 otherwise). Validated values are timezone-aware UTC.
UtcDatetime = Annotated[
    datetime,
    AfterValidator(_bounded),
    Field(description=f"RFC 3339 date and time (no offset means UTC), {_RANGE_TEXT}"),
]
#: The end of a silence: like :data:`UtcDatetime`, up to ``SILENCE_END_MAX``.
SilenceEnd = Annotated[
    datetime,
    AfterValidator(_bounded_end),
    Field(description=f"RFC 3339 date and time (no offset means UTC), {_window_text(SILENCE_END_MAX)}"),
]


def utc_of_epoch(ts: float) -> datetime:
    """The UTC datetime of an epoch, clamped to the calendar (a stored value from before these
    bounds still renders instead of failing the whole page); ``ValueError`` for NaN."""
    if math.isnan(ts):
        raise ValueError("timestamp is NaN")
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, ValueError, OSError):
        clamped = datetime.max if ts > 0 else datetime.min
        log.warning("timestamp %r is outside the calendar: shown as %s", ts, clamped.isoformat())
        return clamped.replace(tzinfo=UTC)


def iso(ts: float) -> str:
    """RFC 3339 UTC for an epoch (clamped to the calendar, see :func:`utc_of_epoch`)."""
    return utc_of_epoch(ts).isoformat().replace("+00:00", "Z")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error: a short message and the request id to quote in a report."""

    detail: Any
    request_id: str | None = None


#: Responses every authenticated route can give.
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no or invalid credentials"},
    403: {"model": ErrorBody, "description": "role too low, or missing CSRF token on a session"},
    429: {"model": ErrorBody, "description": "rate limit exceeded"},
}


class AlertIdentityPublic(BaseModel):
    key: str
    entity_id: str | None = None
    display_name: str | None = None
    auth_mount: str | None = None
    policies: list[str] = []
    #: The AppRole role a token was issued for (AppRole clients share the display name ``approle``).
    role_name: str | None = None


class ReasonPublic(BaseModel):
    feature: str
    observed: str
    baseline: str
    weight: float


class AlertPublic(BaseModel):
    """The ``vaultwatch.alert/v1`` object, plus the current assignee."""

    schema_: str = Field(alias="schema", serialization_alias="schema")
    id: str
    detector: str
    title: str
    severity: Severity
    score: int
    identity: AlertIdentityPublic
    first_seen: str
    last_seen: str
    count: int
    event_ids: list[str]
    source_addresses: list[str]
    paths: list[str]
    explanation: list[ReasonPublic]
    dedup_key: str
    status: Status
    labels: dict[str, str] = {}
    assignee: str | None = None

    model_config = ConfigDict(populate_by_name=True)


def alert_public(alert: Alert, assignee: str | None = None) -> AlertPublic:
    """The response model of a stored alert."""
    data = alert.to_dict()
    data["assignee"] = assignee
    return AlertPublic.model_validate(data)


class AlertList(BaseModel):
    items: list[AlertPublic]
    total: int = Field(description="alerts matching the filters (all pages)")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last")
    counts: dict[str, int] = Field(default={}, description="matching alerts per status")


class StatusChangePublic(BaseModel):
    from_status: str | None
    to_status: str
    actor: str
    comment: str
    at: str


class VerdictPublic(BaseModel):
    id: int
    verdict: str
    actor: str
    comment: str
    at: str


class EventPublic(BaseModel):
    """One archived audit entry, reduced to what triage needs (no token HMACs, no data)."""

    time: str
    request_id: str | None
    type: str
    identity_key: str
    display_name: str | None
    role_name: str | None = Field(description="AppRole role; null for other identities and older entries")
    path: str
    operation: str | None
    mount_point: str | None
    remote_ip: str | None
    outcome: str
    error: str | None


class EventPage(BaseModel):
    items: list[EventPublic]
    offset: int
    limit: int
    next_offset: int | None


class AlertDetailPublic(BaseModel):
    alert: AlertPublic
    timeline: list[StatusChangePublic]
    verdicts: list[VerdictPublic]
    events: list[EventPublic] = Field(description="the archived entries behind event_ids, oldest first")
    events_available: bool = Field(description="false when no event archive is configured")


class ActionRequest(_Body):
    comment: str = Field(default="", max_length=2000)


class AssignRequest(_Body):
    assignee: str = Field(max_length=256, description="user to assign; empty to unassign")
    comment: str = Field(default="", max_length=2000)


class VerdictRequest(_Body):
    verdict: Literal["true_positive", "false_positive", "benign"]
    comment: str = Field(default="", max_length=2000)


class BulkActionRequest(_Body):
    ids: list[str] = Field(min_length=1, max_length=500)
    action: Literal["ack", "resolve", "false_positive", "reopen"]
    comment: str = Field(default="", max_length=2000)
    confirm: Literal[True] = Field(description="must be true: bulk actions are never implicit")


class BulkResult(BaseModel):
    changed: list[str]
    failed: dict[str, str]


class MatcherIn(_Body):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str = Field(max_length=1024)


class SilenceCreate(_Body):
    matchers: list[MatcherIn] = Field(min_length=1, max_length=20)
    starts_at: UtcDatetime | None = Field(default=None, description=f"default: now; {_RANGE_TEXT}")
    ends_at: SilenceEnd = Field(description=f"after starts_at; {_window_text(SILENCE_END_MAX)}")
    comment: str = Field(default="", max_length=2000)


class SilencePublic(BaseModel):
    id: str
    matchers: list[MatcherIn]
    starts_at: str
    ends_at: str
    created_by: str
    comment: str
    expired: bool
    active: bool
    created_at: str


def silence_public(s: Silence, now: float) -> SilencePublic:
    """The response model of a silence."""
    return SilencePublic(
        id=s.id,
        matchers=[MatcherIn(name=m.name, op=m.op, value=m.value) for m in s.matchers],
        starts_at=iso(s.starts_at),
        ends_at=iso(s.ends_at),
        created_by=s.created_by,
        comment=s.comment,
        expired=s.expired,
        active=s.is_active(now),
        created_at=iso(s.created_at),
    )


def silences_public(silences: Iterable[Silence], now: float) -> tuple[list[SilencePublic], list[str]]:
    """The response models of ``silences`` and the ids of those that cannot be shown.

    A stored row that does not render (written by an older version, or by hand) is logged and
    left out, never fatal to the list: everyone else's silences stay visible.
    """
    out: list[SilencePublic] = []
    skipped: list[str] = []
    for s in silences:
        try:
            out.append(silence_public(s, now))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            log.warning("silence %s cannot be shown: %s", s.id, type(exc).__name__)
            skipped.append(s.id)
    return out, skipped


class IdentityBrief(BaseModel):
    key: str
    group: str | None = None
    risk: float
    last_seen: str | None
    events: int
    learning: bool
    peers: list[str] = Field(description="other identities of the same peer group")


class IdentityList(BaseModel):
    items: list[IdentityBrief]
    total: int


class IdentityDetail(BaseModel):
    key: str
    summary: dict[str, Any] = Field(description="baseline: top templates, mounts, addresses, heatmap, rate")
    peers: list[str]
    alerts: list[AlertPublic]


class LoginRequest(_Body):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class SessionInfo(BaseModel):
    subject: str
    role: str
    csrf_token: str
    expires_in: int


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class Me(BaseModel):
    subject: str
    role: str
    method: str
    csrf_token: str | None = None


class ApiKeyPublic(BaseModel):
    """An API key's metadata; the hash and the key itself are never returned."""

    id: str
    role: str
    not_after: str | None
    expired: bool
    comment: str


class AuditEntryPublic(BaseModel):
    id: int
    at: str
    actor: str
    role: str
    method: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]
    request_id: str


class AdminStatus(BaseModel):
    channels: list[str]
    routes: list[str]
    outbox_depth: int
    outbox_oldest_pending_seconds: float | None
    outbox_failed: int
    api_keys: int
    jwt_kids: list[str]
