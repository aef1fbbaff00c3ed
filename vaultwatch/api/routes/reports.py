"""Periodic audit review reports (:mod:`vaultwatch.report`), listed and served read-only.

Reports are the files ``generate_report`` wrote under ``<dir>/<period-id>/report.{html,pdf,json}``.
The settings have no entry of their own for ``<dir>``: it is ``<archive path parent>/reports``,
where ``vaultwatch report`` and :func:`vaultwatch.service.reports.render_scheduled` write by default
(archive ``./var/archive``, reports ``./var/reports``). A period id is matched against
:data:`PERIOD_ID` before it touches the file system, so no request names a path outside it.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated, Final, Literal

from fastapi import APIRouter, HTTPException
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel

from ..deps import AppContext, Ctx, Viewer
from ..schemas import AUTH_RESPONSES

__all__ = ["router", "PERIOD_ID", "ReportInfo", "list_reports", "reports_dir", "report_file"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/reports", tags=["reports"], responses=AUTH_RESPONSES)

#: Every id :attr:`vaultwatch.report.Period.id` produces, and nothing else (use ``fullmatch``).
PERIOD_ID: Final = re.compile(
    r"^(?:daily-\d{4}-\d{2}-\d{2}|weekly-\d{4}-W\d{2}|monthly-\d{4}-\d{2}"
    r"|custom-\d{8}T\d{4}Z-\d{8}T\d{4}Z)$"
)
_PERIOD_PATTERN: Final = PERIOD_ID.pattern
FILES: Final = {
    "report.html": "text/html; charset=utf-8",
    "report.pdf": "application/pdf",
    "report.json": "application/json",
}
# The HTML report is self-contained (inline style, data: images); it gets nothing else.
_HTML_CSP: Final = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
)


class ReportInfo(BaseModel):
    """One stored report: its period, when it was generated, its content hash and its files."""

    id: str
    kind: str | None = None
    label: str | None = None
    start: str | None = None
    end: str | None = None
    generated_at: str | None = None
    sha256: str | None = None
    files: list[str]


def reports_dir(ctx: AppContext) -> Path:
    """Where the reports are: ``<[reports] out, else archive path parent>/reports``
    (``ctx.extra["reports_dir"]`` wins)."""
    override = ctx.extra.get("reports_dir")
    if override is not None:
        return Path(override)
    reports = getattr(ctx.settings, "reports", None)
    archive = getattr(ctx.settings, "archive", None)
    if reports is not None and archive is not None:
        return Path(reports.directory(archive)) / "reports"
    base = Path(archive.path) if archive is not None else Path("./var/archive")
    return base.parent / "reports"


def _info(directory: Path) -> ReportInfo | None:
    files = [name for name in FILES if (directory / name).is_file()]
    if not files:
        return None
    info = ReportInfo(id=directory.name, files=files)
    if "report.json" in files:
        try:
            doc = json.loads((directory / "report.json").read_text(encoding="utf-8"))
            period = doc.get("period") or {}
            signoff = doc.get("signoff") or {}
            info.kind, info.label = period.get("kind"), period.get("label")
            info.start, info.end = period.get("start"), period.get("end")
            info.generated_at, info.sha256 = signoff.get("generated_at"), signoff.get("sha256")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
            # Listed without its figures: the files are still there to fetch.
            log.warning("report %s: report.json unreadable: %s", directory.name, type(exc).__name__)
    return info


def list_reports(ctx: AppContext) -> list[ReportInfo]:
    """Every stored report, latest period first (shared by the API and the UI)."""
    root = reports_dir(ctx)
    if not root.is_dir():
        return []
    out: list[ReportInfo] = []
    for d in root.iterdir():
        # A link could point anywhere: only real directories with a period id are reports.
        if PERIOD_ID.fullmatch(d.name) and d.is_dir() and not d.is_symlink():
            info = _info(d)
            if info is not None:
                out.append(info)
    out.sort(key=lambda r: (r.start or "", r.id), reverse=True)
    return out


def report_file(ctx: AppContext, period_id: str, name: str) -> Path:
    """The path of one report file; 404 for an unknown id or a missing file, never outside the dir."""
    if not PERIOD_ID.fullmatch(period_id) or name not in FILES:
        raise HTTPException(404, "no such report")
    root = reports_dir(ctx).resolve()
    path = (root / period_id / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(404, "no such report")
    return path


@router.get("", summary="Stored audit review reports", response_model=list[ReportInfo])
def get_reports(ctx: Ctx, who: Viewer) -> list[ReportInfo]:
    """Period ids with their period, generation time and content hash (from ``report.json``)."""
    return list_reports(ctx)


@router.get(
    "/{period_id}/{name}",
    summary="One report file",
    response_class=FileResponse,
    responses={404: {"description": "no such report"}},
)
def get_report_file(
    ctx: Ctx,
    who: Viewer,
    period_id: Annotated[str, PathParam(pattern=_PERIOD_PATTERN, max_length=64)],
    name: Literal["report.html", "report.pdf", "report.json"],
) -> FileResponse:
    """``report.html``, ``report.pdf`` or ``report.json`` of the period ``period_id``."""
    path = report_file(ctx, period_id, name)
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-cache"}
    if name == "report.html":
        headers["Content-Security-Policy"] = _HTML_CSP
    return FileResponse(path, media_type=FILES[name], headers=headers)
