"""Silences: list (viewer), create and expire (analyst; audited)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from ..deps import Analyst, Ctx, Viewer, epoch_of, request_id_of
from ..schemas import AUTH_RESPONSES, SilenceCreate, SilencePublic, silence_public

__all__ = ["router"]

router = APIRouter(prefix="/silences", tags=["silences"], responses=AUTH_RESPONSES)

SilenceId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("", summary="List silences", response_model=list[SilencePublic])
def list_silences(ctx: Ctx, who: Viewer, active: bool = False) -> list[SilencePublic]:
    """Every silence, newest first; ``active=true`` for those muting alerts now."""
    now = ctx.clock()
    return [silence_public(s, now) for s in ctx.store.list_silences(active_at=now if active else None)]


@router.post(
    "",
    summary="Create a silence",
    response_model=SilencePublic,
    status_code=201,
    responses={422: {"description": "invalid matchers or window"}},
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
def expire_silence(ctx: Ctx, who: Analyst, request: Request, silence_id: SilenceId) -> SilencePublic:
    """Expire it; its alerts notify again at their group's next flush."""
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
    found = [s for s in ctx.store.list_silences() if s.id == silence_id]
    return silence_public(found[0], now)
