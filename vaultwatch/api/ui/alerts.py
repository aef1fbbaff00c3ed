"""The alert queue and one alert's page, with the triage actions (status, verdict, silence).

The queue keeps its filters and sort in the query string, pages by keyset cursor and updates
live through the SSE stream (one row at a time from ``/ui/alerts/<id>/row``). One alert shows
its reasons, the identity's timeline from the archive around it, the entries that made it,
its history, and the forms to triage it; the forms answer JSON to ``Accept: application/json``
(the keyboard triage) and a 303 back to the page otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, cast
from urllib.parse import quote, urlencode

import msgspec
from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response

from alerts.errors import AlertNotFound, InvalidTransition, StoreError
from alerts.silence import labels_of
from alerts.store import SORT_KEYS, TRANSITIONS, VERDICTS, AlertQuery, SortKey, to_epoch
from detect.alert import SEVERITIES, STATUSES, Alert

from ...naming import IdentityLabel
from ..deps import Analyst, AppContext, Ctx, PagePrincipal
from ..routes.identities import label_of
from .guidance import (
    CONFIG_DETECTORS,
    AlertGroup,
    evidence_count,
    group_setup_across,
    next_steps,
    outcome_text,
)
from .pages import (
    STREAM_URL,
    UI_PREFIX,
    audit,
    baseline_summary,
    done,
    entity_names,
    env,
    epoch,
    error_page,
    fmt_dt,
    records,
    refuse,
    render_page,
    to_login,
)

__all__ = ["PAGE_SIZE", "alert_matches", "queue_query", "router"]

log = logging.getLogger(__name__)

PAGE_SIZE: Final = 50
DEFAULT_STATUSES: Final = ("open", "acknowledged")
TIMELINE_MARGIN: Final = timedelta(minutes=30)
TIMELINE_LIMIT: Final = 400
#: Entries of an alert looked up in the archive when asked to show them all (the contract's cap).
RAW_LIMIT: Final = 500
#: Requests shown from the start and from the end of an alert's evidence before "show all".
RAW_EDGE: Final = 5
#: Configuration changes of one identity read to group its initial configuration across pages.
SETUP_SCAN: Final = 500
_VERDICT_LABELS: Final = {
    "true_positive": "True positive",
    "false_positive": "False positive",
    "benign": "Benign",
}

router = APIRouter(include_in_schema=False)


def _split(values: Sequence[str]) -> tuple[str, ...]:
    out: dict[str, None] = {}
    for v in values:
        for part in v.split(","):
            if part.strip():
                out[part.strip()] = None
    return tuple(out)


def queue_query(params: Mapping[str, Sequence[str]], *, limit: int = PAGE_SIZE) -> AlertQuery:
    """The store query for the queue's URL parameters (unknown statuses and severities dropped).

    ``status`` and ``severity`` may repeat or be comma-separated; no ``status`` means open and
    acknowledged alerts, ``status=any`` every status. ``q`` is the free-text filter, ``sort`` one
    of the store's sort keys (always descending); the default, ``priority``, puts the most severe
    first, then the riskiest (score), then the most recent.
    """
    statuses = _split(params.get("status", ()))
    if not statuses:
        statuses = DEFAULT_STATUSES
    elif "any" in statuses:
        statuses = ()
    else:
        statuses = tuple(s for s in statuses if s in STATUSES) or DEFAULT_STATUSES
    severities = tuple(s for s in _split(params.get("severity", ())) if s in SEVERITIES)
    identity = (params.get("identity") or [""])[-1].strip() or None
    text = (params.get("q") or [""])[-1].strip()[:200] or None
    cursor = (params.get("cursor") or [""])[-1] or None
    sort = (params.get("sort") or ["priority"])[-1]
    return AlertQuery(
        sort=cast(SortKey, sort if sort in SORT_KEYS else "priority"),
        status=statuses,
        severity=severities,
        detector=_split(params.get("detector", ())),
        identity=identity,
        text=text,
        limit=limit,
        cursor=cursor,
    )


def alert_matches(alert: Alert, query: AlertQuery) -> bool:
    """Whether ``alert`` passes the queue filters of ``query`` (the store's semantics, in Python)."""
    if query.status and alert.status not in query.status:
        return False
    if query.severity and alert.severity not in query.severity:
        return False
    if query.detector and alert.detector not in query.detector:
        return False
    if query.identity is not None and alert.identity.key != query.identity:
        return False
    if query.text:
        needle = query.text.lower()
        return any(needle in s.lower() for s in (alert.title, *alert.paths))
    return True


def multi_params(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out


def _timeline_svg(events: list[dict[str, Any]], alert: Alert) -> dict[str, Any]:
    width = 800
    first, last = to_epoch(alert.first_seen), to_epoch(alert.last_seen)
    # Zoom to the events shown (and the alert's span), with a little air at both ends.
    lo = min([first, *(float(e["ts"]) for e in events)])
    hi = max([last, *(float(e["ts"]) for e in events)])
    pad = max((hi - lo) * 0.04, 1.0)
    start, span = lo - pad, (hi - lo) + 2 * pad

    def x(ts: float) -> float:
        return round(10 + (ts - start) / span * (width - 20), 1)

    dots = []
    for e in events:
        bad = e["outcome"] in ("error", "denied")
        dots.append(
            {
                "x": x(e["ts"]),
                "y": 15 if bad else 31,
                "hit": e["hit"],
                "colour": "#b42318" if bad else "#0b57d0",
                "label": f"{e['time']} {e['operation'] or ''} {e['path']} ({e['outcome']})",
            }
        )
    return {"width": width, "dots": dots, "alert_x1": x(first), "alert_x2": x(last)}


def alert_label(ctx: AppContext, a: Alert) -> IdentityLabel:
    """The alert's identity as a person reads it (see :func:`label_of`)."""
    summary = baseline_summary(ctx, a.identity.key)
    return label_of(
        ctx,
        a.identity.key,
        summary or {"addresses": [[x, 1] for x in a.source_addresses]},
        display_name=a.identity.display_name,
        policies=a.identity.policies,
        auth_mount=a.identity.auth_mount,
        role_name=a.identity.role_name,
    )


def _config_changes(
    ctx: AppContext, query: AlertQuery, items: Sequence[Alert]
) -> dict[str, tuple[Alert, ...]]:
    """Per identity with a configuration change on the page: all its configuration changes in the
    queue (the page's filters and order, every page), at most :data:`SETUP_SCAN` of them."""
    detectors = tuple(sorted(CONFIG_DETECTORS & set(query.detector) if query.detector else CONFIG_DETECTORS))
    out: dict[str, tuple[Alert, ...]] = {}
    for key in dict.fromkeys(a.identity.key for a in items if a.detector in detectors):
        same = msgspec.structs.replace(query, identity=key, detector=detectors, cursor=None, limit=SETUP_SCAN)
        out[key] = ctx.store.list_alerts(same).items
    return out


def _age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


@router.get(f"{UI_PREFIX}/alerts", response_class=HTMLResponse)
def queue_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """The alert queue: one page of alerts matching the URL's filters, in the chosen order (by
    default the most severe first, then the riskiest, then the most recent)."""
    if who is None:
        return to_login(request)
    started = time.perf_counter()
    params = multi_params(request)
    query = queue_query(params)
    try:
        page = ctx.store.list_alerts(query)
    except StoreError as exc:  # a stale or foreign cursor: start over
        log.info("queue query refused: %s", exc)
        query = queue_query({k: v for k, v in params.items() if k != "cursor"})
        page = ctx.store.list_alerts(query)
    # Each identity's initial configuration changes fold into one row (never a critical, a
    # refused change or anything but a configuration change: see guidance.group_setup), whole
    # even when they run over several pages (guidance.group_setup_across).
    starts: dict[str, float] = {}
    for a in page.items:
        if a.identity.key not in starts:
            first = baseline_summary(ctx, a.identity.key).get("first_seen")
            if isinstance(first, int | float):
                starts[a.identity.key] = float(first)
    rows = group_setup_across(page.items, _config_changes(ctx, query, page.items), starts)
    labels = {a.id: alert_label(ctx, a) for a in page.items}
    summary = ctx.store.queue_summary()
    oldest_age = None
    if summary.oldest_open_at is not None:
        oldest_age = _age(ctx.clock() - summary.oldest_open_at)
    keep = [(k, v) for k, vs in params.items() if k != "cursor" for v in vs]
    first_url = f"{UI_PREFIX}/alerts" + (f"?{urlencode(keep)}" if keep else "")
    next_url = None
    if page.next_cursor:
        next_url = f"{UI_PREFIX}/alerts?{urlencode([*keep, ('cursor', page.next_cursor)])}"
    return render_page(
        request,
        "queue.html",
        who,
        is_group=lambda r: isinstance(r, AlertGroup),
        evidence=evidence_count,
        nav="alerts",
        page=page,
        rows=rows,
        labels=labels,
        summary=summary,
        oldest_age=oldest_age,
        query=query,
        statuses=STATUSES,
        severities=SEVERITIES,
        sort_keys=SORT_KEYS,
        first_page=query.cursor is None,
        first_url=first_url,
        next_url=next_url,
        live=query.cursor is None,
        stream_url=STREAM_URL,
        elapsed=time.perf_counter() - started,
    )


@router.get(f"{UI_PREFIX}/alerts/{{alert_id}}/row", response_class=HTMLResponse)
def queue_row(alert_id: str, request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """One queue row for a live update, or 204 when the alert does not pass the page's filters."""
    if who is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="authentication required")
    try:
        alert = ctx.store.get_alert(alert_id).alert
    except AlertNotFound:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    if not alert_matches(alert, queue_query(multi_params(request))):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    html = env.get_template("_row.html").render(
        a=alert, base=UI_PREFIX, labels={alert.id: alert_label(ctx, alert)}, evidence=evidence_count
    )
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get(f"{UI_PREFIX}/alerts/{{alert_id}}", response_class=HTMLResponse)
def alert_page(alert_id: str, request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """One alert: reasons, the identity's timeline around it, its raw entries, triage and silence."""
    if who is None:
        return to_login(request)
    try:
        detail = ctx.store.get_alert(alert_id)
    except AlertNotFound:
        return error_page(request, who, 404, "No such alert", "The alert does not exist or was removed.")
    a = detail.alert
    first = datetime.fromtimestamp(to_epoch(a.first_seen), UTC)
    last = datetime.fromtimestamp(to_epoch(a.last_seen), UTC)
    start, end = first - TIMELINE_MARGIN, last + TIMELINE_MARGIN
    hits = set(a.event_ids)
    show_all = request.query_params.get("raw") == "all"
    timeline: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    archive = ctx.archive
    if archive is not None:
        cols = ["ts", "request_id", "type", "path", "operation", "remote_ip", "outcome"]
        try:
            # Before and from the alert separately, so a busy identity's half hour before the
            # alert cannot push the alert's own entries out of the limit.
            before = archive.query(
                identity=a.identity.key,
                start=start,
                end=first,
                limit=TIMELINE_LIMIT // 3,
                descending=True,
                columns=cols,
            )
            after = archive.query(
                identity=a.identity.key, start=first, end=end, limit=TIMELINE_LIMIT, columns=cols
            )
            rows = records(before)[::-1] + records(after)
            # One line per request: the response (it has the outcome), else the lone request.
            answered = {r["request_id"] for r in rows if r["type"] == "response"}
            for r in rows:
                if r["type"] != "response" and r["request_id"] in answered:
                    continue
                r["hit"] = r["request_id"] in hits
                r["time"] = epoch(r["ts"])
                r["outcome_text"] = outcome_text(r.get("outcome"))
                timeline.append(r)
            ids = list(a.event_ids)
            if not show_all and len(ids) > 2 * RAW_EDGE:
                ids = ids[:RAW_EDGE] + ids[-RAW_EDGE:]
            order = {rid: i for i, rid in enumerate(ids[:RAW_LIMIT])}
            entries = archive.events_by_request_ids(
                ids[:RAW_LIMIT], start=first - timedelta(minutes=5), end=end
            )
            for r in sorted(records(entries), key=lambda r: (order.get(r["request_id"], 0), r["ts"])):
                r["time"] = epoch(r["ts"])
                r["outcome_text"] = outcome_text(r.get("outcome"))
                shown = {k: v for k, v in r.items() if k not in ("time", "outcome_text")}
                r["json"] = json.dumps(shown, indent=2, sort_keys=True, default=str)
                r["tail"] = order.get(r["request_id"], 0) >= RAW_EDGE and not show_all
                raw.append(r)
        except Exception as exc:  # noqa: BLE001 - the alert page still renders without the archive
            log.warning("archive read for alert %s failed: %s", alert_id, exc)
    now = ctx.clock()
    active = ctx.store.silenced_by(a, now)
    return render_page(
        request,
        "alert.html",
        who,
        nav="alerts",
        a=a,
        history=detail.history,
        verdicts=detail.verdicts,
        timeline=timeline,
        tl_start=fmt_dt(start),
        tl_end=fmt_dt(end),
        tl_svg=_timeline_svg(timeline, a),
        archive_missing=archive is None,
        raw=raw,
        raw_all=show_all,
        raw_edge=RAW_EDGE,
        raw_hidden=max(len(a.event_ids) - 2 * RAW_EDGE, 0) if not show_all else 0,
        evidence=evidence_count(a),
        steps=next_steps(a, UI_PREFIX),
        label=alert_label(ctx, a),
        next_statuses=sorted(TRANSITIONS.get(a.status, frozenset())),
        verdict_choices=[(v, _VERDICT_LABELS.get(v, v)) for v in VERDICTS],
        active_silences=active,
        raw_limit=RAW_LIMIT,
        entity_name=entity_names(ctx, [a.identity.key]).get(a.identity.key),
    )


@router.post(f"{UI_PREFIX}/alerts/{{alert_id}}/status")
def change_status(
    alert_id: str,
    request: Request,
    ctx: Ctx,
    who: Analyst,
    to: Annotated[str, Form(max_length=32)],
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Move an alert to another status (the keyboard triage and the alert page's form)."""
    try:
        alert = ctx.store.transition(alert_id, to, who.subject, comment)
    except AlertNotFound:
        return refuse(request, who, 404, "The alert does not exist.")
    except InvalidTransition as exc:
        return refuse(request, who, 409, str(exc))
    audit(ctx, request, who, "alert.transition", alert_id, to=to, comment=comment)
    return done(
        request, f"{UI_PREFIX}/alerts/{quote(alert_id)}", "status", {"id": alert.id, "status": alert.status}
    )


@router.post(f"{UI_PREFIX}/alerts/{{alert_id}}/verdict")
def record_verdict(
    alert_id: str,
    request: Request,
    ctx: Ctx,
    who: Analyst,
    verdict: Annotated[str, Form(max_length=32)],
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Record a verdict; a false positive also closes the alert as ``false_positive``."""
    if verdict not in VERDICTS:
        return refuse(request, who, 422, f"Unknown verdict; use one of {', '.join(VERDICTS)}.")
    try:
        vid = ctx.store.record_verdict(alert_id, verdict, who.subject, comment)
        if verdict == "false_positive":
            current = ctx.store.get_alert(alert_id).alert.status
            if "false_positive" in TRANSITIONS.get(current, frozenset()):
                ctx.store.transition(alert_id, "false_positive", who.subject, comment)
    except AlertNotFound:
        return refuse(request, who, 404, "The alert does not exist.")
    audit(ctx, request, who, "alert.verdict", alert_id, verdict=verdict, comment=comment)
    return done(request, f"{UI_PREFIX}/alerts/{quote(alert_id)}", "verdict", {"id": vid, "verdict": verdict})


@router.post(f"{UI_PREFIX}/alerts/{{alert_id}}/silence")
def silence_alert(
    alert_id: str,
    request: Request,
    ctx: Ctx,
    who: Analyst,
    hours: Annotated[int, Form(ge=1, le=24 * 90)] = 24,
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Silence this alert's detector for this identity (exact matchers on both labels)."""
    try:
        alert = ctx.store.get_alert(alert_id).alert
    except AlertNotFound:
        return refuse(request, who, 404, "The alert does not exist.")
    labels = labels_of(alert)
    now = ctx.clock()
    silence = ctx.store.create_silence(
        [
            {"name": "identity", "op": "=", "value": labels["identity"]},
            {"name": "detector", "op": "=", "value": labels["detector"]},
        ],
        starts_at=now,
        ends_at=now + hours * 3600.0,
        created_by=who.subject,
        comment=comment,
        now=now,
    )
    audit(ctx, request, who, "silence.create", silence.id, alert=alert_id, hours=hours)
    return done(
        request,
        f"{UI_PREFIX}/alerts/{quote(alert_id)}",
        "silenced",
        {"id": silence.id, "ends_at": silence.ends_at},
    )
