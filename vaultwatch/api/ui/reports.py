"""The stored audit review reports, latest period first, with links to their HTML, PDF and JSON."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ..deps import Ctx, PagePrincipal
from ..routes.reports import list_reports
from .pages import UI_PREFIX, render_page, to_login

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get(f"{UI_PREFIX}/reports", response_class=HTMLResponse)
def reports_page(request: Request, ctx: Ctx, who: PagePrincipal) -> Response:
    """Stored audit review reports, latest period first, with links to their HTML, PDF and JSON."""
    if who is None:
        return to_login(request)
    return render_page(
        request,
        "reports.html",
        who,
        nav="reports",
        reports=list_reports(ctx),
        api_base="/api/v1/reports",
    )
