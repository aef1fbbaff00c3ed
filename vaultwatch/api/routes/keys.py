"""Administration (``admin`` role): API key metadata, delivery status and the API audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import Admin, Ctx
from ..schemas import AUTH_RESPONSES, AdminStatus, ApiKeyPublic, AuditEntryPublic, iso

__all__ = ["router"]

router = APIRouter(tags=["admin"], responses=AUTH_RESPONSES)


@router.get("/keys", summary="Configured API keys (metadata only)", response_model=list[ApiKeyPublic])
def list_keys(ctx: Ctx, who: Admin) -> list[ApiKeyPublic]:
    """Id, role, expiry and comment of every API key; never the key or its hash."""
    store = ctx.authn.api_keys
    if store is None:
        return []
    store.refresh()
    now = ctx.clock()
    return [
        ApiKeyPublic(
            id=e.id,
            role=e.role,
            not_after=iso(e.not_after) if e.not_after is not None else None,
            expired=e.not_after is not None and now >= e.not_after,
            comment=e.comment,
        )
        for e in sorted(store.entries.values(), key=lambda e: e.id)
    ]


@router.get("/admin/status", summary="Channels, routes and delivery queue", response_model=AdminStatus)
def admin_status(ctx: Ctx, who: Admin) -> AdminStatus:
    """Names of the configured channels and routes (no endpoints, no secrets) and the outbox."""
    settings = ctx.settings
    now = ctx.clock()
    channels = sorted(str(k) for k in (getattr(settings, "channels", None) or {}))
    routes = sorted(str(k) for k in (getattr(settings, "routes", None) or {}))
    return AdminStatus(
        channels=channels,
        routes=routes,
        outbox_depth=ctx.store.depth(),
        outbox_oldest_pending_seconds=ctx.store.oldest_pending_age(now),
        outbox_failed=len(ctx.store.outbox_items(state="failed")),
        api_keys=len(ctx.authn.api_keys.entries) if ctx.authn.api_keys else 0,
        jwt_kids=[k["kid"] for k in ctx.authn.keys.jwks()["keys"]],
    )


@router.get("/audit", summary="The API's own audit trail", response_model=list[AuditEntryPublic])
def audit_trail(
    ctx: Ctx,
    who: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    actor: Annotated[str | None, Query(max_length=256)] = None,
) -> list[AuditEntryPublic]:
    """Newest first; ``before_id`` pages backwards."""
    return [
        AuditEntryPublic(
            id=e.id,
            at=iso(e.at),
            actor=e.actor,
            role=e.role,
            method=e.method,
            action=e.action,
            target=e.target,
            outcome=e.outcome,
            detail=e.detail,
            request_id=e.request_id,
        )
        for e in ctx.audit.entries(limit=limit, before_id=before_id, actor=actor)
    ]
