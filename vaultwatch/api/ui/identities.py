"""Identities with their learned baselines: the list, and one identity's charts, peers and alerts.

Baselines come from the object ``create_app`` puts in ``ctx.extra["baselines"]`` (by default
the streaming workers' engine checkpoints): anything with ``identities()`` and
``identity_summary(key)``. With a Vault client, ``entity:<id>`` identities show their entity's
name next to the id.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from alerts.store import AlertQuery

from ..deps import AppContext, Ctx, PagePrincipal
from ..routes.identities import label_of, shared_peers
from .pages import UI_PREFIX, entity_names, epoch, render_page, to_login

__all__ = ["ACTIVITY_HOURS", "Baselines", "activity", "heatmap", "router"]

log = logging.getLogger(__name__)

ACTIVITY_HOURS: Final = 48
DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

router = APIRouter(include_in_schema=False)


class Baselines(Protocol):
    """What the identity pages read: the identity keys with a baseline, and one's summary."""

    def identities(self) -> list[str]: ...

    def identity_summary(self, key: str) -> dict[str, Any]: ...


def heatmap(values: Sequence[float]) -> dict[str, Any]:
    """The 7x24 hour-of-week grid (Monday 00:00 UTC first) with a fill colour per cell.

    Intensity is the square root of the share of the busiest hour, so quiet but regular hours
    stay visible next to a peak; empty hours are a pale grey.
    """
    cells = [float(v) if math.isfinite(v) and v > 0 else 0.0 for v in list(values)[:168]]
    cells += [0.0] * (168 - len(cells))
    peak = max(cells)
    rows = []
    for day in range(7):
        row = []
        for hour in range(24):
            v = cells[day * 24 + hour]
            if v <= 0 or peak <= 0:
                fill = "#eef1f5"
            else:
                k = math.sqrt(v / peak)
                # From a light blue to the accent blue (#0b57d0).
                r, g, b = (int(round(a + (z - a) * k)) for a, z in ((219, 11), (231, 87), (251, 208)))
                fill = f"#{r:02x}{g:02x}{b:02x}"
            row.append({"hour": hour, "value": round(v, 2), "fill": fill})
        rows.append({"name": DAYS[day], "index": day, "cells": row})
    top = max(range(168), key=lambda i: cells[i])
    label = f"{DAYS[top // 24]} {top % 24:02d}:00" if peak > 0 else "no activity learned"
    return {"rows": rows, "peak": peak, "peak_label": label}


def activity(timestamps: Sequence[float], end: float, hours: int = ACTIVITY_HOURS) -> dict[str, Any]:
    """Requests per hour for the ``hours`` hours before ``end`` (epoch seconds), as SVG bars.

    ``end`` is rounded up to a whole hour; each bar carries its height (0-60 px, scaled to the
    busiest hour), its count and a label for the tooltip.
    """
    stop = math.ceil(end / 3600) * 3600
    start = stop - hours * 3600
    counts = [0] * hours
    for ts in timestamps:
        if start <= ts < stop:
            counts[int((ts - start) // 3600)] += 1
    peak = max(counts) if counts else 0
    bars = []
    for i, n in enumerate(counts):
        h = 0.0 if peak == 0 else max(1.5, round(60 * n / peak, 1)) if n else 0.0
        label = f"{epoch(start + i * 3600)}: {n} request" + ("" if n == 1 else "s")
        bars.append({"x": 4 + i * 12, "h": h, "y": 64 - h, "count": n, "label": label})
    return {"bars": bars, "peak": peak, "total": sum(counts), "start": epoch(start), "end": epoch(stop)}


def _baselines(ctx: AppContext) -> Baselines | None:
    source = ctx.extra.get("baselines")
    return source if source is not None else None


@router.get(f"{UI_PREFIX}/identities", response_class=HTMLResponse)
def identities_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """Identities with a baseline, riskiest then most recently active first (at most 500)."""
    if who is None:
        return to_login(request)
    source = _baselines(ctx)
    summaries = []
    if source is not None:
        for key in source.identities()[:5000]:
            s = source.identity_summary(key)
            if s:
                summaries.append(s)
        summaries.sort(key=lambda s: (-float(s.get("risk") or 0), -float(s.get("last_active") or 0)))
    return render_page(
        request,
        "identities.html",
        who,
        nav="identities",
        identities=summaries[:500],
        names=entity_names(ctx, [str(s.get("key", "")) for s in summaries[:500]]),
        labels={str(s.get("key", "")): label_of(ctx, str(s.get("key", "")), s) for s in summaries[:500]},
        engine_available=source is not None,
    )


@router.get(f"{UI_PREFIX}/identities/{{key:path}}", response_class=HTMLResponse)
def identity_page(key: str, request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """One identity: its learned baseline as charts, its peers and its alert history."""
    if who is None:
        return to_login(request)
    source = _baselines(ctx)
    summary = source.identity_summary(key) if source is not None else {}
    peers: list[str] = []
    everyone: dict[str, dict[str, Any]] = {}
    if summary and source is not None:
        # Peers share the identity's non-personal policies (a policy only it holds is personal).
        everyone = {k: source.identity_summary(k) for k in source.identities()[:5000]}
        everyone[key] = summary
        peers = shared_peers(everyone, key, 25)
    alerts = ctx.store.list_alerts(AlertQuery(identity=key, limit=20))
    rate = None
    if summary and ctx.archive is not None:
        # The archive's last two days of this identity, ending at its last activity (event time,
        # so a replayed log draws the same chart as a lived one).
        end = float(summary.get("last_active") or ctx.clock())
        try:
            df = ctx.archive.query(
                identity=key,
                start=datetime.fromtimestamp(end - ACTIVITY_HOURS * 3600 - 3600, UTC),
                end=datetime.fromtimestamp(end + 3600, UTC),
                columns=["ts", "request_id"],
                limit=500_000,
            )
            firsts = df.drop_duplicates("request_id")["ts"].tolist() if len(df) else []
            rate = activity([float(x) for x in firsts], end)
        except Exception as exc:  # noqa: BLE001 - the page renders without the chart
            log.warning("archive read for identity %s failed: %s", key, exc)
    return render_page(
        request,
        "identity.html",
        who,
        nav="identities",
        key=key,
        label=label_of(ctx, key, summary),
        peer_labels={p: label_of(ctx, p, everyone.get(p)) for p in peers},
        entity_name=entity_names(ctx, [key]).get(key),
        summary=summary,
        heat=heatmap(summary.get("hour_of_week", [])) if summary else None,
        rate=rate,
        peers=peers,
        alerts=alerts.items,
        alerts_total=alerts.total,
        engine_available=source is not None,
    )
