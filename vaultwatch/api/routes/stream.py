"""``/api/v1/stream``: Server-Sent Events of new and changed alerts, polled from the store.

Each event is ``event: alert`` with the alert object as data and ``id: <updated_at>/<alert id>``;
a reconnecting client sends it back as ``Last-Event-ID`` and misses nothing. A comment line is
sent as a heartbeat when nothing changed for a while. The stream ends after ``max_seconds``
(clients reconnect, which also bounds how long one connection holds a worker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Final

import sqlalchemy as sa
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from alerts import schema as t
from detect.alert import decode_alert

from ..deps import AppContext, Ctx, Viewer, epoch_of
from ..schemas import AUTH_RESPONSES, alert_public

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["stream"], responses=AUTH_RESPONSES)

_HEARTBEAT: Final = 15.0
_BATCH: Final = 200


def _changes(ctx: AppContext, after: tuple[float, str]) -> list[tuple[float, str, str]]:
    a = t.alerts
    stamp, last_id = after
    query = (
        sa.select(a.c.updated_at, a.c.id, a.c.alert_json)
        .where(sa.or_(a.c.updated_at > stamp, sa.and_(a.c.updated_at == stamp, a.c.id > last_id)))
        .order_by(a.c.updated_at, a.c.id)
        .limit(_BATCH)
    )
    with ctx.store.engine.connect() as conn:
        return [(float(r.updated_at), r.id, r.alert_json) for r in conn.execute(query)]


def _parse_last_event_id(value: str | None) -> tuple[float, str] | None:
    if not value:
        return None
    stamp, _, aid = value.partition("/")
    try:
        return float(stamp), aid
    except ValueError:
        return None


@router.get(
    "/stream",
    summary="Live feed of new and changed alerts (text/event-stream)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "an SSE stream"}},
)
async def stream(
    request: Request,
    ctx: Ctx,
    who: Viewer,
    since: Annotated[
        str | None, Query(max_length=64, description="RFC 3339; default: now (only future changes)")
    ] = None,
    max_seconds: Annotated[float, Query(ge=0.1, le=3600)] = 300,
    last_event_id: Annotated[str | None, Header(max_length=256)] = None,
) -> StreamingResponse:
    """Stream alert changes until ``max_seconds`` pass or the client goes away."""
    start = _parse_last_event_id(last_event_id)
    if start is None:
        stamp = ctx.clock()
        if since:
            try:
                stamp = epoch_of(datetime.fromisoformat(since.replace("Z", "+00:00")), "since") or 0.0
            except ValueError:
                stamp = ctx.clock()
        start = (stamp, "")
    poll = ctx.limits.stream_poll_seconds

    async def events() -> AsyncIterator[bytes]:
        cursor = start
        deadline = time.monotonic() + max_seconds
        quiet_since = time.monotonic()
        yield b": connected\n\n"
        first = True
        # At least one poll, however short max_seconds is.
        while first or time.monotonic() < deadline:
            first = False
            if await request.is_disconnected():
                return
            rows = await asyncio.to_thread(_changes, ctx, cursor)
            for stamp, aid, raw in rows:
                payload = alert_public(decode_alert(raw)).model_dump(by_alias=True)
                data = json.dumps(payload, separators=(",", ":"))
                yield f"event: alert\nid: {stamp!r}/{aid}\ndata: {data}\n\n".encode()
                cursor = (stamp, aid)
            if rows:
                quiet_since = time.monotonic()
                if len(rows) == _BATCH:
                    continue
            elif time.monotonic() - quiet_since >= _HEARTBEAT:
                yield b": heartbeat\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
