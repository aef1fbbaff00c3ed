"""Generating one report: load the period's data, compute every figure, render and write it.

:func:`generate_report` reads the archive and the store (:mod:`.loaders`), computes the figures
(:mod:`.data`, pure), renders them (:mod:`.render_html`, :mod:`.render_pdf`) and writes
``<out>/reports/<period-id>/report.{html,pdf,json}``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from detect.policy import AccessPolicy, default_policy

from .. import __version__
from ..errors import VaultwatchError
from ..service.archive import SCHEMA as ARCHIVE_SCHEMA
from ..service.atomic import leftover, write_bytes_atomic
from . import loaders
from .charts import charts
from .data import Period, ReportOptions, build_report_data, previous_period
from .render_html import render_html
from .render_pdf import render_pdf

__all__ = ["ReportError", "ReportResult", "generate_report", "load_check"]

log = logging.getLogger(__name__)

#: Columns read from the archive: never token HMACs or redaction marks. ``display_name``,
#: ``policies`` and ``role_name`` name the identities (:func:`.data.report_label`); a column the
#: archive's schema does not have is not asked for, and ``role_name`` is null in files written
#: before the archive kept the AppRole role name: identities are then named without it.
_COLUMNS = tuple(
    c
    for c in (
        "time",
        "request_id",
        "type",
        "identity_key",
        "identity_kind",
        "entity_id",
        "display_name",
        "policies",
        "role_name",
        "path",
        "operation",
        "mount_point",
        "mount_type",
        "remote_ip",
        "outcome",
    )
    if c in ARCHIVE_SCHEMA.names
)


class ReportError(VaultwatchError):
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
    archive = Path(archive_path)
    if not archive.is_dir():
        raise ReportError(f"no event archive at {archive}")
    prev = previous_period(period)
    look_start = min(prev.start, period.start - timedelta(days=lookback_days))
    # One archive read covering the look-back and the period, split in memory.
    everything = loaders.load_requests(archive, look_start, period.end, columns=list(_COLUMNS))
    t = everything["time"] if not everything.empty else pd.Series(dtype="datetime64[us, UTC]")
    start_ts = pd.Timestamp(period.start)
    requests = everything[t >= start_ts]
    history = everything[t < start_ts]
    previous = history[history["time"] >= pd.Timestamp(prev.start)] if not history.empty else history
    if store_url:
        alerts = loaders.load_alerts(store_url)
        status_history = loaders.load_status_history(store_url)
        verdicts = loaders.load_verdicts(store_url)
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
        version=__version__,
    )
    images = charts(data)
    directory = Path(out) / "reports" / period.id
    directory.mkdir(parents=True, exist_ok=True)
    paths = {ext: directory / f"report.{ext}" for ext in ("html", "pdf", "json")}
    # Written to <name>.partial and renamed, so a reader never sees half a report; a leftover
    # .partial means the last generation of this period was interrupted.
    for ext, blob in (
        ("json", json.dumps(data, indent=2, ensure_ascii=False).encode()),
        ("html", render_html(data, images).encode()),
        ("pdf", render_pdf(data, images)),
    ):
        if leftover(paths[ext]) is not None:
            log.warning("the last generation of %s was interrupted: it is written again now", paths[ext])
        write_bytes_atomic(paths[ext], blob)
    log.info("report %s written to %s (sha256 %s)", period.id, directory, data["signoff"]["sha256"])
    return ReportResult(period, directory, paths["html"], paths["pdf"], paths["json"], data)
