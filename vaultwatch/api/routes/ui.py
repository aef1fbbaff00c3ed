"""The analysts' web UI: server-rendered pages over the alert store, the event archive and baselines.

Pages live under ``/ui`` (``/`` redirects to the queue): the alert queue (filters and sort in the
query string, keyset pagination, keyboard triage and live rows through the SSE stream), one
alert (actual vs typical, the identity's timeline from the archive, the entries that made it,
triage, verdict and a one-click silence), identities with their baselines (hour-of-week heatmap,
top paths, addresses, rate, peers, alert history), silences (list, create, expire), exposure
scope (who read secrets under a path; for analysts, every request made with a leaked token,
posted in a form body), the stored audit review reports, and, for admins, channel delivery
status from the store's outbox. The login page posts to ``POST /api/v1/auth/login``. With a
Vault client, ``entity:<id>`` identities show their entity's name next to the id.

Pages authenticate like the JSON API (session cookie, bearer token, API key or SSO header); an
anonymous or expired caller is sent to the login page. Every form carries the session's CSRF
value and the state-changing routes use the API's ``Analyst`` dependency, which checks it; they
answer JSON to ``Accept: application/json`` (the keyboard triage) and a 303 back to the page
otherwise. The templates are autoescaped Jinja2; ``static/app.js`` is the only script (plain
``fetch`` and ``EventSource``, no build step), and every page works without it.

Baselines come from the object ``create_app`` puts in ``ctx.extra["baselines"]`` (by default
the streaming workers' engine checkpoints), anything with ``identities()`` and
``identity_summary(key)``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Protocol, cast
from urllib.parse import quote, urlencode

import jinja2
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from alerts import schema as t
from alerts.errors import AlertNotFound, InvalidTransition, SilenceError, StoreError
from alerts.silence import labels_of
from alerts.store import SORT_KEYS, TRANSITIONS, VERDICTS, AlertQuery, SortKey, to_epoch
from detect.alert import SEVERITIES, STATUSES, Alert

from ..auth import SESSION_COOKIE, AuthError, Principal, csrf_token_of, role_at_least
from ..deps import Analyst, AppContext, Ctx, request_id_of

__all__ = ["router", "UI_PREFIX", "Baselines", "heatmap", "activity", "queue_query", "alert_matches"]

log = logging.getLogger(__name__)

UI_PREFIX: Final = "/ui"
LOGIN_ACTION: Final = "/api/v1/auth/login"
LOGOUT_ACTION: Final = "/api/v1/auth/logout"
STREAM_URL: Final = "/api/v1/stream"
PAGE_SIZE: Final = 50
DEFAULT_STATUSES: Final = ("open", "acknowledged")
TIMELINE_MARGIN: Final = timedelta(minutes=30)
TIMELINE_LIMIT: Final = 400
RAW_LIMIT: Final = 100
SILENCE_HOURS: Final = (1, 24, 168)
ACTIVITY_HOURS: Final = 48
DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_UI_DIR: Final = Path(__file__).resolve().parent.parent / "ui"
_STATIC_TYPES: Final = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_VERDICT_LABELS: Final = {
    "true_positive": "True positive",
    "false_positive": "False positive",
    "benign": "Benign",
}
# Fixed messages a redirect may name; the query string never carries free text into the page.
_FLASH: Final = {
    "status": "Status changed.",
    "verdict": "Verdict recorded.",
    "silenced": "Silence created: this detector no longer notifies for this identity.",
    "expired": "Silence expired.",
    "created": "Silence created.",
}


class Baselines(Protocol):
    """What the identity pages read: the identity keys with a baseline, and one's summary."""

    def identities(self) -> list[str]: ...

    def identity_summary(self, key: str) -> dict[str, Any]: ...


# -- rendering ----------------------------------------------------------------------------------


def _fmt_dt(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(value: str) -> str:
    """An RFC 3339 timestamp as compact UTC text (the raw value when it does not parse)."""
    try:
        return _fmt_dt(datetime.fromtimestamp(to_epoch(value), UTC))
    except StoreError:
        return value


def _epoch(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return _fmt_dt(datetime.fromtimestamp(value, UTC))


def _hours(value: int) -> str:
    if value % 168 == 0:
        n, unit = value // 168, "week"
    elif value % 24 == 0:
        n, unit = value // 24, "day"
    else:
        n, unit = value, "hour"
    return f"{n} {unit}" + ("" if n == 1 else "s")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_UI_DIR / "templates")),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["epoch"] = _epoch
    env.filters["hours"] = _hours
    return env


_env = _environment()


def _page(
    request: Request, template: str, principal: Principal | None, *, status_code: int = 200, **values: Any
) -> HTMLResponse:
    flash = _FLASH.get(request.query_params.get("done", ""))
    context = {
        "base": UI_PREFIX,
        "user": {"name": principal.subject, "role": principal.role} if principal else None,
        "csrf_token": csrf_token_of(principal),
        "logout_action": LOGOUT_ACTION if principal and principal.method == "session" else None,
        "can_triage": bool(principal and role_at_least(principal.role, "analyst")),
        "is_admin": bool(principal and role_at_least(principal.role, "admin")),
        "silence_hours": SILENCE_HOURS,
        "flash": flash,
        "flash_kind": "ok",
        **values,
    }
    html = _env.get_template(template).render(context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def _error_page(
    request: Request, principal: Principal | None, code: int, title: str, message: str
) -> Response:
    return _page(request, "error.html", principal, status_code=code, title=title, message=message)


def _page_principal(request: Request, ctx: Ctx) -> Principal | None:
    """The caller of a page, or None (anonymous or a stale session): pages then go to the login."""
    peer = request.client.host if request.client else None
    try:
        return ctx.authn.authenticate(
            authorization=request.headers.get("authorization"),
            api_key=request.headers.get("x-api-key"),
            session=request.cookies.get(SESSION_COOKIE),
            peer=peer,
            headers=request.headers,
        )
    except AuthError as exc:
        log.info("UI page refused a credential from %s: %s", peer, exc)
        return None


PagePrincipal = Annotated[Principal | None, Depends(_page_principal)]


def _to_login(request: Request) -> RedirectResponse:
    # A refused form login comes back to its ``next`` page with ``error=login``: show it there.
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "error"]
    target = request.url.path + (f"?{urlencode(items)}" if items else "")
    params = {"next": target}
    if "error" in request.query_params:
        params["error"] = "login"
    return RedirectResponse(f"{UI_PREFIX}/login?{urlencode(params)}", status.HTTP_303_SEE_OTHER)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _audit(
    ctx: AppContext, request: Request, who: Principal, action: str, target: str, **detail: Any
) -> None:
    try:
        ctx.audit.record(
            actor=who.subject,
            role=who.role,
            method=who.method,
            action=action,
            target=target,
            outcome="ok",
            request_id=request_id_of(request),
            detail=detail,
        )
    except sa.exc.SQLAlchemyError as exc:  # the action happened; a missing trail row is logged
        log.warning("API audit entry for %s on %s not written: %s", action, target, type(exc).__name__)


# -- pure helpers -------------------------------------------------------------------------------


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
    of the store's sort keys (always descending: newest, highest, most severe first).
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
    sort = (params.get("sort") or ["last_seen"])[-1]
    return AlertQuery(
        sort=cast(SortKey, sort if sort in SORT_KEYS else "last_seen"),
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


def _multi(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out


def heatmap(values: Sequence[float]) -> dict[str, Any]:
    """The 7x24 hour-of-week grid (Monday 00:00 UTC first) with a fill colour per cell.

    Intensity is the square root of the share of the busiest hour, so quiet but regular hours
    stay visible next to a peak; empty hours are a pale grey.
    """
    cells = [float(v) if math.isfinite(v) and v > 0 else 0.0 for v in list(values)[:168]]
    cells += [0.0] * (168 - len(cells))
    peak = max(cells)
    rows = []
    for day in range(7):
        row = []
        for hour in range(24):
            v = cells[day * 24 + hour]
            if v <= 0 or peak <= 0:
                fill = "#eef1f5"
            else:
                k = math.sqrt(v / peak)
                # From a light blue to the accent blue (#0b57d0).
                r, g, b = (int(round(a + (z - a) * k)) for a, z in ((219, 11), (231, 87), (251, 208)))
                fill = f"#{r:02x}{g:02x}{b:02x}"
            row.append({"hour": hour, "value": round(v, 2), "fill": fill})
        rows.append({"name": DAYS[day], "index": day, "cells": row})
    top = max(range(168), key=lambda i: cells[i])
    label = f"{DAYS[top // 24]} {top % 24:02d}:00" if peak > 0 else "no activity learned"
    return {"rows": rows, "peak": peak, "peak_label": label}


def activity(timestamps: Sequence[float], end: float, hours: int = ACTIVITY_HOURS) -> dict[str, Any]:
    """Requests per hour for the ``hours`` hours before ``end`` (epoch seconds), as SVG bars.

    ``end`` is rounded up to a whole hour; each bar carries its height (0-60 px, scaled to the
    busiest hour), its count and a label for the tooltip.
    """
    stop = math.ceil(end / 3600) * 3600
    start = stop - hours * 3600
    counts = [0] * hours
    for ts in timestamps:
        if start <= ts < stop:
            counts[int((ts - start) // 3600)] += 1
    peak = max(counts) if counts else 0
    bars = []
    for i, n in enumerate(counts):
        h = 0.0 if peak == 0 else max(1.5, round(60 * n / peak, 1)) if n else 0.0
        label = f"{_epoch(start + i * 3600)}: {n} request" + ("" if n == 1 else "s")
        bars.append({"x": 4 + i * 12, "h": h, "y": 64 - h, "count": n, "label": label})
    return {"bars": bars, "peak": peak, "total": sum(counts), "start": _epoch(start), "end": _epoch(stop)}


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


def _records(df: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = df.to_dict("records")
    for r in rows:
        for k, v in list(r.items()):
            if hasattr(v, "tolist"):
                r[k] = v.tolist()
            elif isinstance(v, float) and math.isnan(v):
                r[k] = None
    return rows


# -- pages --------------------------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=RedirectResponse)
def root() -> RedirectResponse:
    """The web UI's front page is the alert queue."""
    return RedirectResponse(f"{UI_PREFIX}/alerts", status.HTTP_303_SEE_OTHER)


@router.get(f"{UI_PREFIX}/static/{{name}}")
def static_file(name: str) -> Response:
    """The UI's stylesheet and script (served from the package, cacheable for an hour)."""
    path = _UI_DIR / "static" / name
    kind = _STATIC_TYPES.get(path.suffix)
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="not found")
    return Response(path.read_bytes(), media_type=kind, headers={"Cache-Control": "public, max-age=3600"})


@router.get(f"{UI_PREFIX}/login", response_class=HTMLResponse)
def login_page(request: Request, who: PagePrincipal, next: str = f"{UI_PREFIX}/alerts") -> Response:
    """The sign-in form; it posts to the API's login endpoint, which sets the session cookie."""
    target = next if next.startswith("/") and not next.startswith("//") else f"{UI_PREFIX}/alerts"
    if who is not None:
        return RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    error = "Wrong username or password." if request.query_params.get("error") else None
    return _page(request, "login.html", None, login_action=LOGIN_ACTION, next_url=target, error=error)


@router.get(f"{UI_PREFIX}/alerts", response_class=HTMLResponse)
def queue_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """The alert queue: one page of alerts matching the URL's filters, newest activity first."""
    if who is None:
        return _to_login(request)
    started = time.perf_counter()
    params = _multi(request)
    query = queue_query(params)
    try:
        page = ctx.store.list_alerts(query)
    except StoreError as exc:  # a stale or foreign cursor: start over
        log.info("queue query refused: %s", exc)
        query = queue_query({k: v for k, v in params.items() if k != "cursor"})
        page = ctx.store.list_alerts(query)
    keep = [(k, v) for k, vs in params.items() if k != "cursor" for v in vs]
    first_url = f"{UI_PREFIX}/alerts" + (f"?{urlencode(keep)}" if keep else "")
    next_url = None
    if page.next_cursor:
        next_url = f"{UI_PREFIX}/alerts?{urlencode([*keep, ('cursor', page.next_cursor)])}"
    return _page(
        request,
        "queue.html",
        who,
        nav="alerts",
        page=page,
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
    if not alert_matches(alert, queue_query(_multi(request))):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    html = _env.get_template("_row.html").render(a=alert, base=UI_PREFIX)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@router.get(f"{UI_PREFIX}/alerts/{{alert_id}}", response_class=HTMLResponse)
def alert_page(alert_id: str, request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """One alert: reasons, the identity's timeline around it, its raw entries, triage and silence."""
    if who is None:
        return _to_login(request)
    try:
        detail = ctx.store.get_alert(alert_id)
    except AlertNotFound:
        return _error_page(request, who, 404, "No such alert", "The alert does not exist or was removed.")
    a = detail.alert
    first = datetime.fromtimestamp(to_epoch(a.first_seen), UTC)
    last = datetime.fromtimestamp(to_epoch(a.last_seen), UTC)
    start, end = first - TIMELINE_MARGIN, last + TIMELINE_MARGIN
    hits = set(a.event_ids)
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
            rows = _records(before)[::-1] + _records(after)
            # One line per request: the response (it has the outcome), else the lone request.
            answered = {r["request_id"] for r in rows if r["type"] == "response"}
            for r in rows:
                if r["type"] != "response" and r["request_id"] in answered:
                    continue
                r["hit"] = r["request_id"] in hits
                r["time"] = _epoch(r["ts"])
                timeline.append(r)
            ids = list(a.event_ids[:RAW_LIMIT])
            entries = archive.events_by_request_ids(ids, start=first - timedelta(minutes=5), end=end)
            for r in _records(entries):
                r["time"] = _epoch(r["ts"])
                shown = {k: v for k, v in r.items() if k != "time"}
                r["json"] = json.dumps(shown, indent=2, sort_keys=True, default=str)
                raw.append(r)
        except Exception as exc:  # noqa: BLE001 - the alert page still renders without the archive
            log.warning("archive read for alert %s failed: %s", alert_id, exc)
    now = ctx.clock()
    active = ctx.store.silenced_by(a, now)
    return _page(
        request,
        "alert.html",
        who,
        nav="alerts",
        a=a,
        history=detail.history,
        verdicts=detail.verdicts,
        timeline=timeline,
        tl_start=_fmt_dt(start),
        tl_end=_fmt_dt(end),
        tl_svg=_timeline_svg(timeline, a),
        archive_missing=archive is None,
        raw=raw,
        next_statuses=sorted(TRANSITIONS.get(a.status, frozenset())),
        verdict_choices=[(v, _VERDICT_LABELS.get(v, v)) for v in VERDICTS],
        active_silences=active,
        raw_limit=RAW_LIMIT,
        entity_name=_entity_names(ctx, [a.identity.key]).get(a.identity.key),
    )


def _baselines(ctx: AppContext) -> Baselines | None:
    source = ctx.extra.get("baselines")
    return source if source is not None else None


@router.get(f"{UI_PREFIX}/identities", response_class=HTMLResponse)
def identities_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """Identities with a baseline, riskiest then most recently active first (at most 500)."""
    if who is None:
        return _to_login(request)
    source = _baselines(ctx)
    summaries = []
    if source is not None:
        for key in source.identities()[:5000]:
            s = source.identity_summary(key)
            if s:
                summaries.append(s)
        summaries.sort(key=lambda s: (-float(s.get("risk") or 0), -float(s.get("last_active") or 0)))
    return _page(
        request,
        "identities.html",
        who,
        nav="identities",
        identities=summaries[:500],
        names=_entity_names(ctx, [str(s.get("key", "")) for s in summaries[:500]]),
        engine_available=source is not None,
    )


@router.get(f"{UI_PREFIX}/identities/{{key:path}}", response_class=HTMLResponse)
def identity_page(key: str, request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """One identity: its learned baseline as charts, its peers and its alert history."""
    if who is None:
        return _to_login(request)
    source = _baselines(ctx)
    summary = source.identity_summary(key) if source is not None else {}
    peers: list[str] = []
    if summary and source is not None and summary.get("group"):
        for other in source.identities()[:5000]:
            if other != key and source.identity_summary(other).get("group") == summary["group"]:
                peers.append(other)
                if len(peers) >= 25:
                    break
    alerts = ctx.store.list_alerts(AlertQuery(identity=key, limit=20))
    rate = None
    if summary and ctx.archive is not None:
        # The archive's last two days of this identity, ending at its last activity (event time,
        # so a replayed log draws the same chart as a lived one).
        end = float(summary.get("last_active") or ctx.clock())
        try:
            df = ctx.archive.query(
                identity=key,
                start=datetime.fromtimestamp(end - ACTIVITY_HOURS * 3600 - 3600, UTC),
                end=datetime.fromtimestamp(end + 3600, UTC),
                columns=["ts", "request_id"],
                limit=500_000,
            )
            firsts = df.drop_duplicates("request_id")["ts"].tolist() if len(df) else []
            rate = activity([float(x) for x in firsts], end)
        except Exception as exc:  # noqa: BLE001 - the page renders without the chart
            log.warning("archive read for identity %s failed: %s", key, exc)
    return _page(
        request,
        "identity.html",
        who,
        nav="identities",
        key=key,
        entity_name=_entity_names(ctx, [key]).get(key),
        summary=summary,
        heat=heatmap(summary.get("hour_of_week", [])) if summary else None,
        rate=rate,
        peers=peers,
        alerts=alerts.items,
        alerts_total=alerts.total,
        engine_available=source is not None,
    )


@router.get(f"{UI_PREFIX}/silences", response_class=HTMLResponse)
def silences_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """Every silence, newest first, with its state now; analysts can expire active ones."""
    if who is None:
        return _to_login(request)
    now = ctx.clock()
    rows = []
    for s in ctx.store.list_silences():
        if s.expired:
            state = "expired"
        elif now < s.starts_at:
            state = "pending"
        elif now >= s.ends_at:
            state = "ended"
        else:
            state = "active"
        rows.append(
            {
                "id": s.id,
                "matchers": [str(m) for m in s.matchers],
                "state": state,
                "starts_at": s.starts_at,
                "ends_at": s.ends_at,
                "created_by": s.created_by,
                "comment": s.comment,
            }
        )
    return _page(request, "silences.html", who, nav="silences", silences=rows)


def _describe(table: Any, field: str) -> list[tuple[str, str]]:
    if not isinstance(table, Mapping):
        return []
    out = []
    for name, spec in table.items():
        kind = spec.get(field) if isinstance(spec, Mapping) else None
        out.append((str(name), str(kind or "")))
    return sorted(out)


@router.get(f"{UI_PREFIX}/channels", response_class=HTMLResponse)
def channels_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """Configured channels and routes, delivery counts per endpoint and the latest deliveries."""
    if who is None:
        return _to_login(request)
    if not role_at_least(who.role, "admin"):
        return _error_page(request, who, 403, "Admins only", "Channel and route status is shown to admins.")
    o = t.outbox
    counts = (
        sa.select(o.c.receiver, o.c.channel, o.c.endpoint, o.c.state, sa.func.count().label("n"))
        .group_by(o.c.receiver, o.c.channel, o.c.endpoint, o.c.state)
        .order_by(o.c.receiver, o.c.endpoint)
    )
    recent_q = sa.select(
        o.c.receiver, o.c.channel, o.c.state, o.c.attempts, o.c.updated_at, o.c.last_reason
    ).order_by(o.c.updated_at.desc(), o.c.id.desc())
    endpoints: dict[tuple[str, str, str], dict[str, Any]] = {}
    with ctx.store.transaction(read_only=True) as tx:
        for r in tx.conn.execute(counts):
            e = endpoints.setdefault(
                (r.receiver, r.channel, r.endpoint),
                {"receiver": r.receiver, "channel": r.channel, "endpoint": r.endpoint}
                | dict.fromkeys(("pending", "delivered", "failed", "disabled"), 0),
            )
            e[r.state] = e.get(r.state, 0) + int(r.n)
        recent = [dict(r._mapping) for r in tx.conn.execute(recent_q.limit(50))]
    settings = ctx.settings
    return _page(
        request,
        "channels.html",
        who,
        nav="channels",
        channels=_describe(getattr(settings, "channels", {}), "type"),
        routes=_describe(getattr(settings, "routes", {}), "receiver"),
        endpoints=list(endpoints.values()),
        recent=recent,
    )


# -- actions ------------------------------------------------------------------------------------


def _done(request: Request, location: str, message: str, payload: dict[str, Any]) -> Response:
    if _wants_json(request):
        return JSONResponse(payload)
    sep = "&" if "?" in location else "?"
    return RedirectResponse(f"{location}{sep}done={message}", status.HTTP_303_SEE_OTHER)


def _refuse(request: Request, who: Principal, code: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": message}, status_code=code)
    return _error_page(request, who, code, "Not done", message)


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
        return _refuse(request, who, 404, "The alert does not exist.")
    except InvalidTransition as exc:
        return _refuse(request, who, 409, str(exc))
    _audit(ctx, request, who, "alert.transition", alert_id, to=to, comment=comment)
    return _done(
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
        return _refuse(request, who, 422, f"Unknown verdict; use one of {', '.join(VERDICTS)}.")
    try:
        vid = ctx.store.record_verdict(alert_id, verdict, who.subject, comment)
        if verdict == "false_positive":
            current = ctx.store.get_alert(alert_id).alert.status
            if "false_positive" in TRANSITIONS.get(current, frozenset()):
                ctx.store.transition(alert_id, "false_positive", who.subject, comment)
    except AlertNotFound:
        return _refuse(request, who, 404, "The alert does not exist.")
    _audit(ctx, request, who, "alert.verdict", alert_id, verdict=verdict, comment=comment)
    return _done(request, f"{UI_PREFIX}/alerts/{quote(alert_id)}", "verdict", {"id": vid, "verdict": verdict})


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
        return _refuse(request, who, 404, "The alert does not exist.")
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
    _audit(ctx, request, who, "silence.create", silence.id, alert=alert_id, hours=hours)
    return _done(
        request,
        f"{UI_PREFIX}/alerts/{quote(alert_id)}",
        "silenced",
        {"id": silence.id, "ends_at": silence.ends_at},
    )


@router.post(f"{UI_PREFIX}/silences")
def create_silence(
    request: Request,
    ctx: Ctx,
    who: Analyst,
    matchers: Annotated[str, Form(max_length=4000)],
    hours: Annotated[int, Form(ge=1, le=24 * 90)] = 24,
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """A silence from the form on the silences page: one matcher per line (``name=value``...)."""
    lines = [line.strip() for line in matchers.splitlines() if line.strip()]
    now = ctx.clock()
    try:
        silence = ctx.store.create_silence(
            lines,
            starts_at=now,
            ends_at=now + hours * 3600.0,
            created_by=who.subject,
            comment=comment,
            now=now,
        )
    except SilenceError as exc:
        return _refuse(request, who, 422, str(exc))
    _audit(ctx, request, who, "silence.create", silence.id, matchers=lines, hours=hours)
    return _done(request, f"{UI_PREFIX}/silences", "created", {"id": silence.id, "ends_at": silence.ends_at})


@router.post(f"{UI_PREFIX}/silences/{{silence_id}}/expire")
def expire_silence(silence_id: str, request: Request, ctx: Ctx, who: Analyst) -> Response:
    """Expire a silence now."""
    try:
        ctx.store.expire_silence(silence_id, now=ctx.clock())
    except AlertNotFound:
        return _refuse(request, who, 404, "The silence does not exist.")
    _audit(ctx, request, who, "silence.expire", silence_id)
    return _done(request, f"{UI_PREFIX}/silences", "expired", {"id": silence_id, "expired": True})


# -- exposure and audit review reports ----------------------------------------------------------


def _entity_names(ctx: AppContext, keys: Sequence[str]) -> dict[str, str]:
    """Entity labels for ``entity:<id>`` keys the enricher already knows (none without Vault)."""
    from .identities import identity_name

    names = {}
    for key in dict.fromkeys(keys):
        name = identity_name(ctx, key)
        if name:
            names[key] = name
    return names


def _report_names(ctx: AppContext, report: dict[str, Any] | None) -> dict[str, str]:
    return _entity_names(ctx, [i["identity"] for i in report["identities"]]) if report else {}


def _date_param(value: str, name: str) -> datetime | None:
    """A ``datetime-local`` or RFC 3339 form value as UTC (naive means UTC); 422 when unreadable."""
    if not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f"{name} is not a date and time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@router.get(f"{UI_PREFIX}/exposure", response_class=HTMLResponse)
def exposure_page(
    request: Request,
    ctx: Ctx,
    who: PagePrincipal,
    path: str = "",
    since: str = "",
    until: str = "",
    since_last_rotation: bool = False,
) -> Response:
    """Exposure scope: who read secrets under a path prefix (and, for analysts, a token form)."""
    from .exposure import path_exposure

    if who is None:
        return _to_login(request)
    path = path.strip()[:512]
    report = None
    error = None
    code = 200
    if path:
        try:
            report = path_exposure(
                ctx, path, _date_param(since, "since"), _date_param(until, "until"), since_last_rotation
            )
        except HTTPException as exc:
            error, code = str(exc.detail), exc.status_code
    return _page(
        request,
        "exposure.html",
        who,
        status_code=code,
        nav="exposure",
        form={"path": path, "since": since, "until": until, "since_last_rotation": since_last_rotation},
        report=report,
        names=_report_names(ctx, report),
        error=error,
        token_available=ctx.extra.get("vault") is not None,
    )


@router.post(f"{UI_PREFIX}/exposure/token", response_class=HTMLResponse)
def token_exposure_page(
    request: Request,
    ctx: Ctx,
    who: Analyst,
    token: Annotated[str, Form(max_length=512)] = "",
    accessor: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    """The token form's answer: the report in the page (the token is in no URL, log or page)."""
    from pydantic import SecretStr

    from .exposure import TokenExposureRequest, token_exposure

    report = None
    error = None
    code = 200
    if not token.strip() and not accessor.strip():
        error, code = "Give a token or an accessor.", 422
    else:
        body = TokenExposureRequest(
            token=SecretStr(token.strip()) if token.strip() else None,
            accessor=SecretStr(accessor.strip()) if accessor.strip() else None,
        )
        try:
            report = token_exposure(ctx, body)
        except HTTPException as exc:
            error, code = str(exc.detail), exc.status_code
        else:
            _audit(ctx, request, who, "exposure.token", "token" if token.strip() else "accessor")
    return _page(
        request,
        "exposure.html",
        who,
        status_code=code,
        nav="exposure",
        form={"path": "", "since": "", "until": "", "since_last_rotation": False},
        report=report,
        names=_report_names(ctx, report),
        error=error,
        token_available=ctx.extra.get("vault") is not None,
    )


@router.get(f"{UI_PREFIX}/reports", response_class=HTMLResponse)
def reports_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """Stored audit review reports, latest period first, with links to their HTML, PDF and JSON."""
    from .reports import list_reports

    if who is None:
        return _to_login(request)
    return _page(
        request,
        "reports.html",
        who,
        nav="reports",
        reports=list_reports(ctx),
        api_base="/api/v1/reports",
    )
