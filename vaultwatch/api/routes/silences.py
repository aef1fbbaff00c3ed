"""Silences: list (viewer), create and expire (analyst; audited)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from ..deps import Analyst, Ctx, Viewer, epoch_of, request_id_of
from ..schemas import AUTH_RESPONSES, SilenceCreate, SilencePublic, silence_public, silences_public

__all__ = ["router", "SKIPPED_HEADER"]

#: Response header listing the silences a list left out because their stored row cannot be shown.
SKIPPED_HEADER = "X-Vaultwatch-Skipped"

router = APIRouter(prefix="/silences", tags=["silences"], responses=AUTH_RESPONSES)

SilenceId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("", summary="List silences", response_model=list[SilencePublic])
def list_silences(ctx: Ctx, who: Viewer, response: Response, active: bool = False) -> list[SilencePublic]:
    """Every silence, newest first; ``active=true`` for those muting alerts now.

    A stored silence that cannot be shown is left out and its id named in the
    ``X-Vaultwatch-Skipped`` header (and the log) instead of failing the list.
    """
    now = ctx.clock()
    items, skipped = silences_public(ctx.store.list_silences(active_at=now if active else None), now)
    if skipped:
        response.headers[SKIPPED_HEADER] = ",".join(skipped)[:2000]
    return items


@router.post(
    "",
    summary="Create a silence",
    response_model=SilencePublic,
    status_code=201,
    responses={422: {"description": "invalid matchers or window (dates outside 1970..9000 included)"}},
)
def create_silence(ctx: Ctx, who: Analyst, request: Request, body: SilenceCreate) -> SilencePublic:
    """Mute alerts matching every matcher between ``starts_at`` (default now) and ``ends_at``."""
    now = ctx.clock()
    starts = epoch_of(body.starts_at, "starts_at") or now
    ends = epoch_of(body.ends_at, "ends_at") or now
    silence = ctx.store.create_silence(
        [m.model_dump() for m in body.matchers],
        starts_at=starts,
        ends_at=ends,
        created_by=who.subject,
        comment=body.comment,
        now=now,
    )
    ctx.audit.record(
        actor=who.subject,
        role=who.role,
        method=who.method,
        action="silence.create",
        target=silence.id,
        outcome="ok",
        request_id=request_id_of(request),
        detail={"matchers": [str(m) for m in silence.matchers], "comment": body.comment},
    )
    return silence_public(silence, now)


@router.post(
    "/{silence_id}/expire", summary="Expire a silence now", response_model=SilencePublic, responses={404: {}}
)
def expire_silence(ctx: Ctx, who: Analyst, request: Request, silence_id: SilenceId) -> Any:
    """Expire it; its alerts notify again at their group's next flush.

    A stored silence that cannot be shown is still expired (the answer is then its id only).
    """
    now = ctx.clock()
    ctx.store.expire_silence(silence_id, now=now)
    ctx.audit.record(
        actor=who.subject,
        role=who.role,
        method=who.method,
        action="silence.expire",
        target=silence_id,
        outcome="ok",
        request_id=request_id_of(request),
    )
    shown, _ = silences_public([s for s in ctx.store.list_silences() if s.id == silence_id], now)
    if not shown:
        return JSONResponse({"id": silence_id, "expired": True})
    return shown[0]
