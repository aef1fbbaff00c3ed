"""``/healthz``, ``/readyz`` and ``/metrics``: unauthenticated, and revealing no alert content."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import APIRouter, Response

from ..deps import Ctx

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness", response_class=Response)
def healthz() -> Response:
    """200 while the process serves requests."""
    return Response("ok\n", media_type="text/plain")


@router.get("/readyz", summary="Readiness: the alert store answers", response_class=Response)
def readyz(ctx: Ctx) -> Response:
    """200 when the alert store answers a trivial query, else 503."""
    try:
        with ctx.store.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        log.warning("not ready: alert store error %s", type(exc).__name__)
        return Response("alert store unavailable\n", status_code=503, media_type="text/plain")
    return Response("ok\n", media_type="text/plain")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(ctx: Ctx) -> Response:
    """The Prometheus exposition text."""
    return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")
