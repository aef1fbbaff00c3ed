"""What every page shares: the templates, page rendering, the login redirect, answers to actions.

Pages authenticate through :data:`vaultwatch.api.deps.PagePrincipal` (the API's own credential
check, with a refused credential treated as anonymous so the page can send the browser to the
login form) and state-changing routes through the API's ``Analyst`` dependency; actions are
recorded with :meth:`vaultwatch.api.audit.ApiAudit.record_action`, like the JSON API's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
import sqlalchemy as sa
from fastapi import Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from alerts.errors import StoreError
from alerts.store import to_epoch

from ..auth import Principal, csrf_token_of, role_at_least
from ..deps import AppContext, request_id_of
from ..routes.identities import identity_name
from ..schemas import utc_of_epoch

__all__ = [
    "LOGIN_ACTION",
    "STREAM_URL",
    "UI_DIR",
    "UI_PREFIX",
    "audit",
    "done",
    "entity_names",
    "env",
    "epoch",
    "error_page",
    "fmt_dt",
    "records",
    "refuse",
    "render_page",
    "to_login",
    "wants_json",
]

log = logging.getLogger(__name__)

UI_PREFIX: Final = "/ui"
LOGIN_ACTION: Final = "/api/v1/auth/login"
LOGOUT_ACTION: Final = "/api/v1/auth/logout"
STREAM_URL: Final = "/api/v1/stream"
SILENCE_HOURS: Final = (1, 24, 168)
UI_DIR: Final = Path(__file__).resolve().parent
# Fixed messages a redirect may name; the query string never carries free text into the page.
_FLASH: Final = {
    "status": "Status changed.",
    "verdict": "Verdict recorded.",
    "silenced": "Silence created: this detector no longer notifies for this identity.",
    "expired": "Silence expired.",
    "created": "Silence created.",
}


def fmt_dt(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def when(value: str) -> str:
    """An RFC 3339 timestamp as compact UTC text (the raw value when it does not parse)."""
    try:
        return fmt_dt(datetime.fromtimestamp(to_epoch(value), UTC))
    except StoreError:
        return value


def epoch(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return fmt_dt(utc_of_epoch(value))


def hours_text(value: int) -> str:
    if value % 168 == 0:
        n, unit = value // 168, "week"
    elif value % 24 == 0:
        n, unit = value // 24, "day"
    else:
        n, unit = value, "hour"
    return f"{n} {unit}" + ("" if n == 1 else "s")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(UI_DIR / "templates")),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["epoch"] = epoch
    env.filters["hours"] = hours_text
    return env


env = _environment()


def render_page(
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
    html = env.get_template(template).render(context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def error_page(
    request: Request, principal: Principal | None, code: int, title: str, message: str
) -> Response:
    return render_page(request, "error.html", principal, status_code=code, title=title, message=message)


def to_login(request: Request) -> RedirectResponse:
    # A refused form login comes back to its ``next`` page with ``error=login``: show it there.
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "error"]
    target = request.url.path + (f"?{urlencode(items)}" if items else "")
    params = {"next": target}
    if "error" in request.query_params:
        params["error"] = "login"
    return RedirectResponse(f"{UI_PREFIX}/login?{urlencode(params)}", status.HTTP_303_SEE_OTHER)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def audit(ctx: AppContext, request: Request, who: Principal, action: str, target: str, **detail: Any) -> None:
    """Record a page action in the API's audit trail; the action happened, so a failed write is
    logged rather than turned into an error page."""
    try:
        ctx.audit.record_action(who, action, target, request_id=request_id_of(request), detail=detail)
    except sa.exc.SQLAlchemyError as exc:
        log.warning("API audit entry for %s on %s not written: %s", action, target, type(exc).__name__)


def done(request: Request, location: str, message: str, payload: dict[str, Any]) -> Response:
    if wants_json(request):
        return JSONResponse(payload)
    sep = "&" if "?" in location else "?"
    return RedirectResponse(f"{location}{sep}done={message}", status.HTTP_303_SEE_OTHER)


def refuse(request: Request, who: Principal, code: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"detail": message}, status_code=code)
    return error_page(request, who, code, "Not done", message)


def baseline_summary(ctx: AppContext, key: str) -> dict[str, Any]:
    """The identity's baseline summary from the engines' checkpoints, or {} when there is none or
    it cannot be read (a page then renders without it)."""
    source = ctx.extra.get("baselines")
    if source is None:
        return {}
    try:
        summary: dict[str, Any] = source.identity_summary(key)
    except Exception as exc:  # noqa: BLE001 - a page renders without a baseline
        log.warning("baseline of %s not readable: %s", key, type(exc).__name__)
        return {}
    return summary


def entity_names(ctx: AppContext, keys: Sequence[str]) -> dict[str, str]:
    """Entity labels for ``entity:<id>`` keys the enricher already knows (none without Vault)."""
    names = {}
    for key in dict.fromkeys(keys):
        name = identity_name(ctx, key)
        if name:
            names[key] = name
    return names


def records(df: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = df.to_dict("records")
    for r in rows:
        for k, v in list(r.items()):
            if hasattr(v, "tolist"):
                r[k] = v.tolist()
            elif isinstance(v, float) and math.isnan(v):
                r[k] = None
    return rows
