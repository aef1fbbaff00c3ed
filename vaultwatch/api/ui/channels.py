"""Channel delivery status, for admins: configured channels and routes, the outbox's counts per
endpoint and the latest deliveries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from alerts import schema as t

from ..auth import role_at_least
from ..deps import Ctx, PagePrincipal
from .pages import UI_PREFIX, error_page, render_page, to_login

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


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
        return to_login(request)
    if not role_at_least(who.role, "admin"):
        return error_page(request, who, 403, "Admins only", "Channel and route status is shown to admins.")
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
    return render_page(
        request,
        "channels.html",
        who,
        nav="channels",
        channels=_describe(getattr(settings, "channels", {}), "type"),
        routes=_describe(getattr(settings, "routes", {}), "receiver"),
        endpoints=list(endpoints.values()),
        recent=recent,
    )
