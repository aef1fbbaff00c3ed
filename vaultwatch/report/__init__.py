"""Periodic audit review reports: HTML, PDF and JSON from the event archive and the alert store.

:func:`generate_report` loads the period's data (:mod:`vaultwatch.datasets`), computes every
figure (:mod:`vaultwatch.report.data`, pure), renders it (:mod:`vaultwatch.report.render`) and
writes ``<out>/reports/<period-id>/report.{html,pdf,json}``. :func:`render_scheduled` is the
entry point for a scheduler: the last complete daily/weekly/monthly period before ``now``, from
the settings' archive and store. :func:`report_outbox_entries` builds outbox items announcing a
report (a link, the headline figures and the content hash) for the alert channels' receivers.

>>> period_for("weekly", datetime(2026, 9, 16, 10, tzinfo=UTC)).id
'weekly-2026-W37'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import PERIODS, Period, ReportOptions, build_report_data, period_for, previous_period

if TYPE_CHECKING:
    from alerts.store import OutboxEntry
    from detect.policy import AccessPolicy

    from ..settings import Settings

__all__ = [
    "PERIODS",
    "Period",
    "ReportError",
    "ReportOptions",
    "ReportResult",
    "enqueue_report",
    "generate_report",
    "load_check",
    "metadata_ages",
    "period_for",
    "previous_period",
    "render_scheduled",
    "report_notification",
    "report_outbox_entries",
]

log = logging.getLogger(__name__)

#: Columns read from the archive: everything but token HMACs and redaction marks.
_COLUMNS = (
    "time",
    "request_id",
    "type",
    "identity_key",
    "identity_kind",
    "entity_id",
    "display_name",
    "path",
    "operation",
    "mount_point",
    "mount_type",
    "remote_ip",
    "outcome",
)


class ReportError(Exception):
    """A report could not be generated (missing archive, unreadable check file, bad period)."""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`generate_report` wrote, and the data it rendered."""

    period: Period
    directory: Path
    html: Path
    pdf: Path
    json: Path
    data: dict[str, Any]

    @property
    def sha256(self) -> str:
        """The content hash in the sign-off."""
        return str(self.data["signoff"]["sha256"])


def load_check(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``vaultwatch check --json`` output; raises :class:`ReportError` if it is not that."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read check results {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ReportError(f"{path}: not the output of `vaultwatch check --json` (no results list)")
    return doc


def _version() -> str:
    from .. import __version__

    return __version__


def generate_report(
    archive_path: str | os.PathLike[str],
    store_url: str | None,
    period: Period,
    out: str | os.PathLike[str],
    *,
    policy: AccessPolicy | None = None,
    check: dict[str, Any] | None = None,
    metadata_ages: Sequence[Any] | None = None,
    options: ReportOptions | None = None,
    now: datetime | None = None,
    lookback_days: float = 62.0,
) -> ReportResult:
    """Build, render and write the report for ``period``; return where it went.

    ``store_url`` None reports without alerts. ``lookback_days`` of archive before the period
    feed the new/dormant identity and rotation figures (make it longer than the dormancy
    threshold and the longest rotation interval). ``now`` is the generation time shown in the
    sign-off (default: the wall clock); it does not enter the content hash.
    """
    import pandas as pd

    from detect.policy import default_policy

    from .. import datasets
    from .render import charts, render_html, render_pdf

    archive = Path(archive_path)
    if not archive.is_dir():
        raise ReportError(f"no event archive at {archive}")
    prev = previous_period(period)
    look_start = min(prev.start, period.start - timedelta(days=lookback_days))
    # One archive read covering the look-back and the period, split in memory.
    everything = datasets.load_requests(archive, look_start, period.end, columns=list(_COLUMNS))
    t = everything["time"] if not everything.empty else pd.Series(dtype="datetime64[us, UTC]")
    start_ts = pd.Timestamp(period.start)
    requests = everything[t >= start_ts]
    history = everything[t < start_ts]
    previous = history[history["time"] >= pd.Timestamp(prev.start)] if not history.empty else history
    if store_url:
        alerts = datasets.load_alerts(store_url)
        status_history = datasets.load_status_history(store_url)
        verdicts = datasets.load_verdicts(store_url)
    else:
        alerts = pd.DataFrame(
            columns=["id", "detector", "severity", "severity_rank", "title", "identity_key", "first_seen"]
        )
        status_history = pd.DataFrame(
            columns=["id", "alert_id", "from_status", "to_status", "actor", "comment", "at"]
        )
        verdicts = pd.DataFrame(columns=["id", "alert_id", "verdict", "actor", "comment", "at"])
    data = build_report_data(
        period=period,
        requests=requests,
        previous=previous,
        history=history,
        alerts=alerts,
        status_history=status_history,
        verdicts=verdicts,
        policy=policy or default_policy(),
        check=check,
        metadata_ages=metadata_ages,
        options=options,
        generated_at=now or datetime.now(UTC),
        version=_version(),
    )
    images = charts(data)
    directory = Path(out) / "reports" / period.id
    directory.mkdir(parents=True, exist_ok=True)
    paths = {ext: directory / f"report.{ext}" for ext in ("html", "pdf", "json")}
    # Written to temporary names and renamed, so a reader never sees half a report.
    for ext, blob in (
        ("json", json.dumps(data, indent=2, ensure_ascii=False).encode()),
        ("html", render_html(data, images).encode()),
        ("pdf", render_pdf(data, images)),
    ):
        tmp = directory / f".report.{ext}.tmp"
        tmp.write_bytes(blob)
        tmp.replace(paths[ext])
    log.info("report %s written to %s (sha256 %s)", period.id, directory, data["signoff"]["sha256"])
    return ReportResult(period, directory, paths["html"], paths["pdf"], paths["json"], data)


def metadata_ages(settings: Settings, policy: AccessPolicy, now: datetime) -> list[Any] | None:
    """KV metadata ages of the policy's rotation-classed secrets through ``settings.vault``.

    None when no Vault is configured or it cannot be read (logged, without any configured value):
    the report then shows the archive's view only.
    """
    if settings.vault is None:
        return None
    from ..rotation import RotationMonitor
    from ..service import vault_client
    from ..vault import VaultClientError

    try:
        with vault_client(settings, login=False) as vc:  # __enter__ logs in
            return RotationMonitor(vc, policy).scan(now.timestamp())
    except (VaultClientError, OSError) as exc:
        # The report still renders; the reason is logged without any configured value.
        log.warning("KV metadata ages not included: %s", type(exc).__name__)
        return None


def render_scheduled(
    settings: Settings,
    period: str,
    now: datetime,
    *,
    out: str | os.PathLike[str] = "var",
    check_path: str | os.PathLike[str] | None = None,
    options: ReportOptions | None = None,
    notify: Sequence[str] = (),
) -> ReportResult:
    """Render the last complete ``period`` (``daily``/``weekly``/``monthly``) before ``now``.

    Reads the archive and the store named in ``settings`` (and KV metadata when
    ``settings.vault`` is set); call it from a scheduler shortly after each period ends.
    ``notify`` lists outbox endpoint keys (``receiver/kind/index``) to announce the report to,
    with a link under ``settings.api.public_base_url`` (see :func:`enqueue_report`).
    """
    from detect.policy import default_policy, load_policy

    policy = load_policy(settings.detect.policy_file) if settings.detect.policy_file else default_policy()
    check = load_check(check_path) if check_path else None
    result = generate_report(
        settings.archive.path,
        settings.store.url,
        period_for(period, now),
        out,
        policy=policy,
        check=check,
        metadata_ages=metadata_ages(settings, policy, now),
        options=options,
        now=now,
    )
    if notify:
        enqueue_report(settings.store.url, result, notify, settings.api.public_base_url, now=now)
    return result


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
    from alerts.store import Store

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
    from alerts.store import OutboxEntry

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
