"""Announcing a report through the alert channels: outbox items with a link and the headline figures."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from alerts.store import OutboxEntry, Store

from .generate import ReportError, ReportResult

__all__ = ["enqueue_report", "report_notification", "report_outbox_entries"]

log = logging.getLogger(__name__)


def enqueue_report(
    store_url: str,
    result: ReportResult,
    endpoints: Sequence[str],
    base_url: str | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Put :func:`report_outbox_entries` into the store's outbox; returns how many were new.

    The delivery worker sends them like any other notification; enqueueing the same report
    twice adds nothing (the message id is derived from the content hash and the endpoint).
    """
    entries = report_outbox_entries(result, endpoints, base_url)
    stamp = (now or datetime.now(UTC)).timestamp()
    with Store(store_url) as store, store.transaction() as tx:
        added = tx.enqueue(entries, now=stamp)
    log.info("report %s announced to %d endpoints (%d new)", result.period.id, len(entries), added)
    return added


def report_notification(result: ReportResult, base_url: str | None = None) -> dict[str, Any]:
    """A channel-neutral announcement of a report: headline figures, the content hash and a link.

    The link is ``<base_url>/reports/<period-id>/report.html`` when ``base_url`` is given (the
    API's public address), else the file's own path.
    """
    d = result.data
    s = d["summary"]
    link = (
        f"{base_url.rstrip('/')}/reports/{result.period.id}/report.html"
        if base_url
        else result.html.resolve().as_uri()
    )
    return {
        "schema": "vaultwatch.report/v1",
        "period": d["period"],
        "title": f"Audit review {result.period.id}: {s['events']} requests, {s['alerts']} alerts",
        "summary": {k: s[k] for k in ("events", "identities", "success", "denied", "login_failed", "alerts")},
        "alerts_by_severity": s["alerts_by_severity"],
        "link": link,
        "pdf": link.removesuffix(".html") + ".pdf",
        "sha256": result.sha256,
    }


def report_outbox_entries(
    result: ReportResult, endpoints: Sequence[str], base_url: str | None = None
) -> list[OutboxEntry]:
    """Outbox items announcing ``result`` to each endpoint key (``receiver/kind/index``).

    The payload has the outbox's usual shape (``group_key``, ``receiver``, ``status``,
    ``alerts``) with no alerts, ``status = "report"`` and the announcement under ``report``
    (see :func:`report_notification`); the message id is stable per (report hash, endpoint),
    so enqueueing twice does not notify twice.
    """
    note = report_notification(result, base_url)
    out: list[OutboxEntry] = []
    for ep in endpoints:
        parts = ep.split("/")
        if len(parts) != 3 or not all(parts):
            raise ReportError(f"endpoint {ep!r} is not receiver/kind/index")
        receiver, kind, _ = parts
        out.append(
            OutboxEntry(
                receiver=receiver,
                channel=kind,
                endpoint=ep,
                message_id=f"report-{result.sha256[:32]}-{ep}",
                payload={
                    "group_key": f"report:{result.period.id}",
                    "receiver": receiver,
                    "status": "report",
                    "alerts": [],
                    "report": note,
                },
            )
        )
    return out
