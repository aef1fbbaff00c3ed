"""Periodic audit review reports: HTML, PDF and JSON from the event archive and the alert store.

* :mod:`.loaders` — the archive and the alert store as DataFrames (also the notebooks' loaders);
* :mod:`.data` — every figure of the report, computed from those frames (pure);
* :mod:`.charts`, :mod:`.render_html`, :mod:`.render_pdf` — the charts and the two renderings;
* :mod:`.generate` — :func:`generate_report`: load, compute, render and write one period;
* :mod:`.notify` — outbox items announcing a report (a link, the headline figures, the content
  hash) to the alert channels' receivers;
The scheduler's entry point (the last complete period before ``now``, from the settings' archive
and store) is :func:`vaultwatch.service.reports.render_scheduled`: it is settings-to-report wiring,
so this package stays a library of data in, files out.

>>> from datetime import UTC, datetime
>>> period_for("weekly", datetime(2026, 9, 16, 10, tzinfo=UTC)).id
'weekly-2026-W37'
"""

from __future__ import annotations

from .data import PERIODS, Period, ReportOptions, period_for, previous_period
from .generate import ReportError, ReportResult, generate_report, load_check
from .notify import enqueue_report, report_notification, report_outbox_entries

__all__ = [
    "PERIODS",
    "Period",
    "ReportError",
    "ReportOptions",
    "ReportResult",
    "enqueue_report",
    "generate_report",
    "load_check",
    "period_for",
    "previous_period",
    "report_notification",
    "report_outbox_entries",
]
