"""Exposure scope after a compromise: who read secrets under a path prefix, the offboarding
rotation list of one identity and, for analysts, every request made with a leaked token (posted
in a form body: the token is in no URL, log or page). The answers are the JSON API's
(:mod:`vaultwatch.api.routes.exposure`); like the archive they come from, they hold paths, times
and addresses, never a secret's value."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import SecretStr

from ...naming import IdentityLabel
from ..deps import Analyst, AppContext, Ctx, PagePrincipal
from ..routes.exposure import TokenExposureRequest, identity_exposure, path_exposure, token_exposure
from ..routes.identities import label_of
from .pages import UI_PREFIX, audit, baseline_summary, entity_names, render_page, to_login

__all__ = ["router"]


router = APIRouter(include_in_schema=False)


def _report_names(ctx: AppContext, report: dict[str, Any] | None) -> dict[str, str]:
    return entity_names(ctx, [i["identity"] for i in report["identities"]]) if report else {}


def _report_labels(ctx: AppContext, report: dict[str, Any] | None) -> dict[str, IdentityLabel]:
    """Each identity of the report as a person reads it (see :mod:`vaultwatch.naming`)."""
    if not report:
        return {}
    return {
        i["identity"]: label_of(
            ctx, i["identity"], baseline_summary(ctx, i["identity"]), display_name=i["display_name"]
        )
        for i in report["identities"]
    }


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
        labels=_report_labels(ctx, report),
        error=error,
        token_available=ctx.extra.get("vault") is not None,
    )


@router.get(f"{UI_PREFIX}/exposure/identity", response_class=HTMLResponse)
def identity_exposure_page(
    request: Request, ctx: Ctx, who: PagePrincipal, identity: str = "", since: str = "", until: str = ""
) -> Response:
    """An offboarding: every secret the identity read since that secret's last rotation (when,
    how often, from which addresses), as the list of secrets to rotate."""
    if who is None:
        return to_login(request)
    identity = identity.strip()[:512]
    report = None
    error = None
    code = 200
    if not identity:
        error, code = "Give an identity key or display name.", 422
    else:
        try:
            report = identity_exposure(
                ctx, identity, _date_param(since, "since"), _date_param(until, "until")
            )
        except HTTPException as exc:
            error, code = str(exc.detail), exc.status_code
    return render_page(
        request,
        "offboarding.html",
        who,
        status_code=code,
        nav="identities",
        identity=identity,
        # Named from its baseline, as on the identity page.
        label=label_of(ctx, identity, baseline_summary(ctx, identity)) if identity else None,
        form={"since": since, "until": until},
        report=report,
        labels=_report_labels(ctx, report),
        error=error,
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
        labels=_report_labels(ctx, report),
        error=error,
        token_available=ctx.extra.get("vault") is not None,
    )
