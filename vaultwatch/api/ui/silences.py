"""Silences: every silence with its state now, the form to create one, and expiry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from alerts.errors import AlertNotFound, SilenceError

from ..deps import Analyst, Ctx, PagePrincipal
from .pages import UI_PREFIX, audit, done, refuse, render_page, to_login

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get(f"{UI_PREFIX}/silences", response_class=HTMLResponse)
def silences_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """Every silence, newest first, with its state now; analysts can expire active ones."""
    if who is None:
        return to_login(request)
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
    return render_page(request, "silences.html", who, nav="silences", silences=rows)


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
        return refuse(request, who, 422, str(exc))
    audit(ctx, request, who, "silence.create", silence.id, matchers=lines, hours=hours)
    return done(request, f"{UI_PREFIX}/silences", "created", {"id": silence.id, "ends_at": silence.ends_at})


@router.post(f"{UI_PREFIX}/silences/{{silence_id}}/expire")
def expire_silence(silence_id: str, request: Request, ctx: Ctx, who: Analyst) -> Response:
    """Expire a silence now."""
    try:
        ctx.store.expire_silence(silence_id, now=ctx.clock())
    except AlertNotFound:
        return refuse(request, who, 404, "The silence does not exist.")
    audit(ctx, request, who, "silence.expire", silence_id)
    return done(request, f"{UI_PREFIX}/silences", "expired", {"id": silence_id, "expired": True})
