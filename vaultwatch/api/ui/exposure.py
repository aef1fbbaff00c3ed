"""Exposure scope after a compromise: who read secrets under a path prefix and, for analysts,
every request made with a leaked token (posted in a form body: the token is in no URL, log or
page). The answers are the JSON API's (:mod:`vaultwatch.api.routes.exposure`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import SecretStr

from ..deps import Analyst, AppContext, Ctx, PagePrincipal
from ..routes.exposure import TokenExposureRequest, path_exposure, token_exposure
from .pages import UI_PREFIX, audit, entity_names, render_page, to_login

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _report_names(ctx: AppContext, report: dict[str, Any] | None) -> dict[str, str]:
    return entity_names(ctx, [i["identity"] for i in report["identities"]]) if report else {}


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
    if who is None:
        return to_login(request)
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
    return render_page(
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
            audit(ctx, request, who, "exposure.token", "token" if token.strip() else "accessor")
    return render_page(
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
