"""Search the event archive: by identity, AppRole role, path prefix, operation, address, outcome,
request id.

Every search is bounded in time (``since``/``until``, at most ``max_event_range_hours`` apart;
the default is the last 24 hours) so a query opens a bounded number of hourly partitions.
Results carry only what triage needs: no token or accessor HMACs.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Query

from ..deps import Ctx, Viewer
from ..schemas import AUTH_RESPONSES, EventPage, EventPublic, UtcDatetime

__all__ = ["router", "event_models"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/events", tags=["events"], responses=AUTH_RESPONSES)

MAX_EVENTS_PAGE: Final = 500
_DEFAULT_RANGE: Final = timedelta(hours=24)


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def event_models(frame: Any) -> list[EventPublic]:
    """Archive rows (a DataFrame from :class:`~vaultwatch.service.archive.EventArchive`) as models."""
    out = []
    for row in frame.to_dict("records"):
        t = row["time"]
        stamp = t.to_pydatetime() if hasattr(t, "to_pydatetime") else t
        out.append(
            EventPublic(
                time=stamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                request_id=_text(row.get("request_id")),
                type=str(row["type"]),
                identity_key=str(row["identity_key"]),
                display_name=_text(row.get("display_name")),
                role_name=_text(row.get("role_name")),
                path=str(row["path"]),
                operation=_text(row.get("operation")),
                mount_point=_text(row.get("mount_point")),
                remote_ip=_text(row.get("remote_ip")),
                outcome=str(row["outcome"]),
                error=_text(row.get("error")),
            )
        )
    return out


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


@router.get(
    "",
    summary="Search archived audit events",
    response_model=EventPage,
    responses={400: {"description": "time range too wide or reversed"}, 503: {}},
)
def search_events(
    ctx: Ctx,
    who: Viewer,
    identity: Annotated[str | None, Query(max_length=512)] = None,
    role_name: Annotated[str | None, Query(max_length=256, description="AppRole role name")] = None,
    path_prefix: Annotated[str | None, Query(max_length=1024)] = None,
    operation: Annotated[str | None, Query(max_length=32)] = None,
    remote_ip: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    request_id: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[UtcDatetime | None, Query(description="inclusive; default until - 24h")] = None,
    until: Annotated[UtcDatetime | None, Query(description="exclusive; default now")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> EventPage:
    """Newest first; ``offset``/``limit`` page through the matches."""
    if ctx.archive is None:
        raise HTTPException(503, "no event archive configured")
    end = _aware(until) if until else datetime.fromtimestamp(ctx.clock(), UTC)
    start = _aware(since) if since else end - _DEFAULT_RANGE
    if start >= end:
        raise HTTPException(400, "since must be before until")
    if (end - start).total_seconds() > ctx.limits.max_event_range_hours * 3600:
        raise HTTPException(400, f"time range longer than {ctx.limits.max_event_range_hours:g} hours")
    try:
        frame = ctx.archive.query(
            identity=identity,
            role_name=role_name or None,
            path_prefix=path_prefix or None,
            operation=operation,
            remote_ip=remote_ip,
            outcome=outcome,
            request_ids=[request_id] if request_id else None,
            start=start,
            end=end,
            limit=limit + 1,
            offset=offset,
            descending=True,
        )
    except (OverflowError, ValueError) as exc:
        raise HTTPException(400, f"bad time range: {type(exc).__name__}") from None
    items = event_models(frame)
    more = len(items) > limit
    return EventPage(
        items=items[:limit], offset=offset, limit=limit, next_offset=offset + limit if more else None
    )
