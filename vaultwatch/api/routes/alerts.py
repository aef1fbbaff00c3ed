"""Alerts: list (filters, sorting, cursor pages, counts), detail (timeline, raw entries), triage.

Triage actions (``ack``, ``resolve``, ``false-positive``, ``reopen``, ``assign``, ``verdict``)
need the ``analyst`` role and are recorded in the API audit trail. A false positive also
records the ``false_positive`` verdict in the same transaction, which the worker feeds back to
detection. Bulk actions require ``"confirm": true``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec
from fastapi import APIRouter, HTTPException, Path, Query, Request

from alerts.errors import AlertNotFound, AlertsError, InvalidTransition
from alerts.store import AlertQuery, SortKey, to_epoch
from detect.alert import Alert

from ..deps import Analyst, AppContext, Ctx, Viewer, epoch_of, request_id_of
from ..schemas import (
    AUTH_RESPONSES,
    ActionRequest,
    AlertDetailPublic,
    AlertList,
    AlertPublic,
    AssignRequest,
    BulkActionRequest,
    BulkResult,
    ErrorBody,
    StatusChangePublic,
    UtcDatetime,
    VerdictPublic,
    VerdictRequest,
    alert_public,
    iso,
)
from .events import event_models

__all__ = ["router", "MAX_PAGE_SIZE"]

log = logging.getLogger(__name__)

MAX_PAGE_SIZE: Final = 200
_ACTIONS: Final = {
    "ack": "acknowledged",
    "resolve": "resolved",
    "false_positive": "false_positive",
    "reopen": "open",
}
_EVENT_WINDOW: Final = timedelta(hours=1)

router = APIRouter(prefix="/alerts", tags=["alerts"], responses=AUTH_RESPONSES)

AlertId = Annotated[str, Path(min_length=1, max_length=128, description="the alert's id")]
Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "resolved", "false_positive", "suppressed"]


def _public(ctx: AppContext, alerts: list[Alert]) -> list[AlertPublic]:
    assignees = ctx.audit.assignees([a.id for a in alerts])
    return [alert_public(a, assignees.get(a.id)) for a in alerts]


@router.get("", summary="List alerts", response_model=AlertList, responses={400: {}})
def list_alerts(
    ctx: Ctx,
    who: Viewer,
    status: Annotated[list[Status] | None, Query(description="any of these statuses")] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    min_severity: Severity | None = None,
    detector: Annotated[list[str] | None, Query(max_length=20)] = None,
    identity: Annotated[str | None, Query(max_length=512)] = None,
    since: Annotated[UtcDatetime | None, Query(description="last seen at or after")] = None,
    until: Annotated[UtcDatetime | None, Query(description="first seen before")] = None,
    q: Annotated[str | None, Query(max_length=256, description="free text (title, identity, paths)")] = None,
    sort: Annotated[
        SortKey, Query(description="priority = severity, then score, then most recent (the queue's order)")
    ] = "priority",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> AlertList:
    """One page of alerts matching every filter, with the total and per-status counts."""
    base = AlertQuery(
        severity=tuple(severity or ()),
        min_severity=min_severity,
        detector=tuple(detector or ()),
        identity=identity,
        since=epoch_of(since, "since"),
        until=epoch_of(until, "until"),
        text=q or None,
        sort=sort,
        descending=order == "desc",
        limit=min(limit, ctx.limits.max_page_size),
        cursor=cursor or None,
    )
    page = ctx.store.list_alerts(msgspec.structs.replace(base, status=tuple(status or ())))
    counts = {}
    for st in ("open", "acknowledged", "resolved", "false_positive", "suppressed"):
        counts[st] = ctx.store.list_alerts(
            msgspec.structs.replace(base, status=(st,), limit=1, cursor=None)
        ).total
    return AlertList(
        items=_public(ctx, list(page.items)), total=page.total, next_cursor=page.next_cursor, counts=counts
    )


@router.get(
    "/{alert_id}",
    summary="One alert with its timeline and raw entries",
    response_model=AlertDetailPublic,
    responses={404: {"model": ErrorBody}},
)
def get_alert(ctx: Ctx, who: Viewer, alert_id: AlertId) -> AlertDetailPublic:
    """The alert, its status history, verdicts and the archived entries behind ``event_ids``."""
    detail = ctx.store.get_alert(alert_id)
    alert = detail.alert
    events = []
    if ctx.archive is not None and alert.event_ids:
        start = datetime.fromtimestamp(to_epoch(alert.first_seen)).astimezone() - _EVENT_WINDOW
        end = datetime.fromtimestamp(to_epoch(alert.last_seen)).astimezone() + _EVENT_WINDOW
        try:
            frame = ctx.archive.events_by_request_ids(list(alert.event_ids), start=start, end=end)
            events = event_models(frame)
        except Exception as exc:  # noqa: BLE001 - the alert is still worth showing without them
            log.warning("alert %s: archive read failed: %s", alert_id, type(exc).__name__)
    return AlertDetailPublic(
        alert=_public(ctx, [alert])[0],
        timeline=[
            StatusChangePublic(
                from_status=h.from_status,
                to_status=h.to_status,
                actor=h.actor,
                comment=h.comment,
                at=iso(h.at),
            )
            for h in detail.history
        ],
        verdicts=[
            VerdictPublic(id=v.id, verdict=v.verdict, actor=v.actor, comment=v.comment, at=iso(v.at))
            for v in detail.verdicts
        ],
        events=events,
        events_available=ctx.archive is not None,
    )


def _transition(ctx: AppContext, alert_id: str, action: str, actor: str, comment: str) -> Alert:
    to = _ACTIONS[action]
    with ctx.store.transaction() as tx:
        alert = tx.transition(alert_id, to, actor, comment, now=ctx.clock())
        if action == "false_positive":
            tx.record_verdict(alert_id, "false_positive", actor, comment, now=ctx.clock())
    return alert


def _act(
    ctx: AppContext, request: Request, who: Any, alert_id: str, action: str, comment: str
) -> AlertPublic:
    try:
        alert = _transition(ctx, alert_id, action, who.subject, comment)
    except AlertsError as exc:
        _record(ctx, request, who, f"alert.{action}", alert_id, type(exc).__name__, {"comment": comment})
        raise
    _record(
        ctx, request, who, f"alert.{action}", alert_id, "ok", {"comment": comment, "status": alert.status}
    )
    return _public(ctx, [alert])[0]


def _record(
    ctx: AppContext,
    request: Request,
    who: Any,
    action: str,
    target: str,
    outcome: str,
    detail: dict[str, Any],
) -> None:
    ctx.audit.record(
        actor=who.subject,
        role=who.role,
        method=who.method,
        action=action,
        target=target,
        outcome=outcome,
        request_id=request_id_of(request),
        detail=detail,
    )


_ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {},
    409: {"description": "not allowed from its status"},
}


@router.post(
    "/{alert_id}/ack", summary="Acknowledge", response_model=AlertPublic, responses=_ACTION_RESPONSES
)
def ack(ctx: Ctx, who: Analyst, request: Request, alert_id: AlertId, body: ActionRequest) -> AlertPublic:
    """Move the alert to ``acknowledged``."""
    return _act(ctx, request, who, alert_id, "ack", body.comment)


@router.post(
    "/{alert_id}/resolve", summary="Resolve", response_model=AlertPublic, responses=_ACTION_RESPONSES
)
def resolve(ctx: Ctx, who: Analyst, request: Request, alert_id: AlertId, body: ActionRequest) -> AlertPublic:
    """Move the alert to ``resolved``."""
    return _act(ctx, request, who, alert_id, "resolve", body.comment)


@router.post(
    "/{alert_id}/false-positive",
    summary="Mark as false positive (records the verdict)",
    response_model=AlertPublic,
    responses=_ACTION_RESPONSES,
)
def false_positive(
    ctx: Ctx, who: Analyst, request: Request, alert_id: AlertId, body: ActionRequest
) -> AlertPublic:
    """Move the alert to ``false_positive`` and record that verdict for detection feedback."""
    return _act(ctx, request, who, alert_id, "false_positive", body.comment)


@router.post("/{alert_id}/reopen", summary="Reopen", response_model=AlertPublic, responses=_ACTION_RESPONSES)
def reopen(ctx: Ctx, who: Analyst, request: Request, alert_id: AlertId, body: ActionRequest) -> AlertPublic:
    """Move the alert back to ``open``."""
    return _act(ctx, request, who, alert_id, "reopen", body.comment)


@router.post(
    "/{alert_id}/assign", summary="Assign to an analyst", response_model=AlertPublic, responses={404: {}}
)
def assign(ctx: Ctx, who: Analyst, request: Request, alert_id: AlertId, body: AssignRequest) -> AlertPublic:
    """Set the assignee (empty to unassign)."""
    alert = ctx.store.get_alert(alert_id).alert
    ctx.audit.assign(alert_id, body.assignee.strip(), who.subject)
    _record(
        ctx,
        request,
        who,
        "alert.assign",
        alert_id,
        "ok",
        {"assignee": body.assignee, "comment": body.comment},
    )
    return _public(ctx, [alert])[0]


@router.post(
    "/{alert_id}/verdict", summary="Record a verdict", response_model=VerdictPublic, responses={404: {}}
)
def verdict(
    ctx: Ctx, who: Analyst, request: Request, alert_id: AlertId, body: VerdictRequest
) -> VerdictPublic:
    """Record ``true_positive``, ``false_positive`` or ``benign``; the worker feeds it back."""
    now = ctx.clock()
    vid = ctx.store.record_verdict(alert_id, body.verdict, who.subject, body.comment, now=now)
    _record(
        ctx, request, who, "alert.verdict", alert_id, "ok", {"verdict": body.verdict, "comment": body.comment}
    )
    return VerdictPublic(id=vid, verdict=body.verdict, actor=who.subject, comment=body.comment, at=iso(now))


@router.post(
    "/bulk", summary="Apply one action to many alerts", response_model=BulkResult, responses={400: {}}
)
def bulk(ctx: Ctx, who: Analyst, request: Request, body: BulkActionRequest) -> BulkResult:
    """Each alert is moved on its own; failures are reported per id. Needs ``confirm: true``."""
    if body.confirm is not True:
        raise HTTPException(400, 'bulk actions need "confirm": true')
    changed: list[str] = []
    failed: dict[str, str] = {}
    for aid in dict.fromkeys(body.ids):
        try:
            _transition(ctx, aid, body.action, who.subject, body.comment)
            changed.append(aid)
        except AlertNotFound:
            failed[aid] = "not found"
        except InvalidTransition:
            failed[aid] = "not allowed from its status"
    _record(
        ctx,
        request,
        who,
        f"alert.bulk.{body.action}",
        ",".join(changed)[:2000],
        "ok" if not failed else "partial",
        {"ids": list(body.ids), "changed": len(changed), "failed": failed, "comment": body.comment},
    )
    return BulkResult(changed=changed, failed=failed)
