"""The front door: ``/`` and ``/ui`` (to the queue), the static files, the favicon and the sign-in form.

The form posts to the API's ``POST /api/v1/auth/login``, which sets the session cookie. The
Swagger UI files behind ``/docs`` come from the ``fastapi-offline`` package (Swagger UI's
``swagger-ui-dist``, Apache-2.0), so the API documentation works without internet access.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..deps import PagePrincipal
from .pages import LOGIN_ACTION, UI_DIR, UI_PREFIX, render_page

__all__ = ["router"]

_STATIC_TYPES: Final = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
#: Swagger UI's bundle and stylesheet, as the fastapi-offline package ships them.
SWAGGER_DIR: Final = Path(str(files("fastapi_offline") / "static"))
_SWAGGER_FILES: Final = frozenset({"swagger-ui-bundle.js", "swagger-ui.css"})

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=RedirectResponse)
def root() -> RedirectResponse:
    """The web UI's front page is the alert queue."""
    return RedirectResponse(f"{UI_PREFIX}/alerts", status.HTTP_303_SEE_OTHER)


@router.get(UI_PREFIX, response_class=RedirectResponse)
def ui_root() -> RedirectResponse:
    """``/ui`` is the alert queue too."""
    return RedirectResponse(f"{UI_PREFIX}/alerts", status.HTTP_303_SEE_OTHER)


@router.get("/favicon.ico")
def favicon() -> Response:
    """The site icon (an SVG; browsers take it at the conventional address)."""
    data = (UI_DIR / "static" / "favicon.svg").read_bytes()
    return Response(data, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


@router.get(f"{UI_PREFIX}/static/swagger/{{name}}")
def swagger_file(name: str) -> Response:
    """Swagger UI for ``/docs``, from the installed package rather than a CDN."""
    path = SWAGGER_DIR / name
    if name not in _SWAGGER_FILES or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="not found")
    kind = _STATIC_TYPES[path.suffix]
    return Response(path.read_bytes(), media_type=kind, headers={"Cache-Control": "public, max-age=86400"})


@router.get(f"{UI_PREFIX}/static/{{name}}")
def static_file(name: str) -> Response:
    """The UI's stylesheet and script (served from the package, cacheable for an hour)."""
    path = UI_DIR / "static" / name
    kind = _STATIC_TYPES.get(path.suffix)
    if kind is None or "/" in name or name.startswith(".") or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="not found")
    return Response(path.read_bytes(), media_type=kind, headers={"Cache-Control": "public, max-age=3600"})


@router.get(f"{UI_PREFIX}/login", response_class=HTMLResponse)
def login_page(request: Request, who: PagePrincipal, next: str = f"{UI_PREFIX}/alerts") -> Response:
    """The sign-in form; it posts to the API's login endpoint, which sets the session cookie."""
    target = next if next.startswith("/") and not next.startswith("//") else f"{UI_PREFIX}/alerts"
    if who is not None:
        return RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    error = "Wrong username or password." if request.query_params.get("error") else None
    return render_page(request, "login.html", None, login_action=LOGIN_ACTION, next_url=target, error=error)
