"""The analyst API (and, when installed, the web UI) as one FastAPI app built by :func:`create_app`.

Nothing is read at import time: the caller hands over the settings, the authentication
configuration and optionally an open store and event archive. Cross-cutting guards live here:
a request id on every response (``X-Request-ID``), a body size cap (413), errors as
``{"detail", "request_id"}`` with no stack trace or secret in them (a generic 500 for anything
unexpected, logged with the request id), and the store's errors mapped to 404/409/400/503.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from alerts.errors import AlertNotFound, InvalidTransition, SilenceError, StoreError
from alerts.store import Store

from ..service.archive import EventArchive
from ..service.metrics import Metrics
from ..vault.enrich import IdentityEnricher
from . import ui
from .audit import ApiAudit
from .auth import AuthConfig, Authenticator, RateLimiter
from .deps import NEW_CSRF_COOKIE, ApiMetrics, AppContext
from .routes import alerts, events, exposure, health, identities, keys, reports, silences, stream
from .routes import auth as auth_routes
from .routes.exposure import VAULT_KEY, as_vault
from .routes.identities import CheckpointBaselines
from .schemas import ErrorBody

__all__ = ["create_app", "API_PREFIX"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_RID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Guards:
    """Pure ASGI middleware: request id and the body size cap (streams stay streams)."""

    def __init__(
        self, app: ASGIApp, max_body: int, on_status: Callable[[str, int], None] | None = None
    ) -> None:
        self.app, self.max_body, self.on_status = app, max_body, on_status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        if not _RID_OK.match(rid):
            rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-request-id", rid.encode())]
                cookie = scope["state"].get(NEW_CSRF_COOKIE)
                if cookie:
                    extra.append((b"set-cookie", cookie.encode("latin-1")))
                message["headers"] = [*message.get("headers", []), *extra]
                if self.on_status is not None:
                    self.on_status(scope["method"], int(message["status"]))
            await send(message)

        declared = headers.get("content-length")
        too_big = False
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body
            except ValueError:
                too_big = True
        if too_big:
            await self._reject(send_with_id, rid)
            return
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            # Read the body up to the cap so a chunked upload cannot exceed it either.
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    await self._reject(send_with_id, rid)
                    return
                chunks.append(chunk)
                more = bool(message.get("more_body", False))
            body = b"".join(chunks)
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, send_with_id)
            return
        await self.app(scope, receive, send_with_id)

    @staticmethod
    async def _reject(send: Send, rid: str) -> None:
        body = b'{"detail":"request body too large","request_id":"' + rid.encode() + b'"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _rid(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def _error(request: Request, status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "request_id": _rid(request)}, status_code=status, headers=headers)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(request, exc.status_code, exc.detail, dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Location and message only: echoing the input could hand a mistyped secret back.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _error(request, 422, errors)

    @app.exception_handler(AlertNotFound)
    async def not_found(request: Request, exc: AlertNotFound) -> JSONResponse:
        return _error(request, 404, "not found")

    @app.exception_handler(InvalidTransition)
    async def conflict(request: Request, exc: InvalidTransition) -> JSONResponse:
        return _error(request, 409, str(exc))

    @app.exception_handler(SilenceError)
    async def bad_silence(request: Request, exc: SilenceError) -> JSONResponse:
        return _error(request, 422, str(exc))

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        if str(exc).startswith("database error"):
            log.error("request %s: alert store error: %s", _rid(request), type(exc.__cause__).__name__)
            return _error(request, 503, "alert store unavailable")
        return _error(request, 400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The type only: exception messages can carry request data.
        log.error("request %s failed: %s", _rid(request), type(exc).__name__)
        # This answer is sent outside the middleware stack, so it sets the id header itself.
        return _error(request, 500, "internal error", {"X-Request-ID": _rid(request)})


def create_app(
    settings: Any,
    *,
    auth: AuthConfig | None = None,
    store: Store | None = None,
    archive: Any = None,
    clock: Callable[[], float] = time.time,
    authenticator: Authenticator | None = None,
    metrics: Any = None,
    baselines: Any = None,
    vault_client: Any = None,
) -> FastAPI:
    """The API app for ``settings`` (a :class:`vaultwatch.settings.Settings`).

    ``auth`` defaults to :meth:`AuthConfig.from_settings` (``settings.api.auth``). A ``store`` or
    ``archive`` passed in is not closed by the app; otherwise the store is opened from
    ``settings.store.url`` (and migrated) and the archive from ``settings.archive`` when enabled,
    and both are closed at shutdown. ``baselines`` (anything with ``identities()`` and
    ``identity_summary(key)``) replaces the engines read from the store's checkpoints.
    ``vault_client`` (an hvac client) is where the signing key is read when ``auth.jwt_vault_path``
    is set and no key file is; with one, ``POST /api/v1/exposure/token`` can compute audit HMACs and
    an :class:`~vaultwatch.vault.enrich.IdentityEnricher` (started and closed with the app) names
    ``entity:<id>`` identities in the identities API and the UI.
    """
    cfg = auth or AuthConfig.from_settings(settings)
    owned: list[Any] = []
    if store is None:
        store = Store(settings.store.url)
        store.migrate()
        owned.append(store)
    if archive is None and getattr(settings, "archive", None) is not None and settings.archive.enabled:
        archive = EventArchive(settings.archive.path, retention_days=settings.archive.retention_days)
        owned.append(archive)
    authn = authenticator or Authenticator(cfg, clock=clock, vault_client=vault_client)
    audit = ApiAudit(store.engine, clock=clock)
    audit.create_tables()
    ctx = AppContext(
        settings=settings,
        store=store,
        archive=archive,
        authn=authn,
        audit=audit,
        limits=cfg,
        clock=clock,
        rate=RateLimiter(cfg.rate_per_second, cfg.rate_burst, clock),
        login_rate=RateLimiter(cfg.login_rate_per_second, cfg.login_burst, clock),
        metrics=metrics or Metrics(),
    )

    enricher = None
    if vault_client is not None:
        vault = as_vault(vault_client)
        ctx.extra[VAULT_KEY] = vault
        # Entity names for the identity pages: looked up in the background, never waited for.
        enricher = ctx.extra["enricher"] = IdentityEnricher(vault, ttl=3600.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        if enricher is not None:
            enricher.start()
        try:
            yield
        finally:
            if enricher is not None:
                enricher.close()
            for thing in owned:
                thing.close()

    app = FastAPI(
        title="vaultwatch",
        version="1",
        summary="Alerts, silences, identities and audit events of vaultwatch, for analysts.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        # /docs is served below from bundled Swagger UI files, so it works without internet.
        docs_url=None,
        redoc_url=None,
        responses={
            413: {"model": ErrorBody, "description": "request body too large"},
            422: {"model": ErrorBody, "description": "invalid parameters or body"},
            503: {"model": ErrorBody, "description": "the alert store or archive is unavailable"},
        },
    )
    app.state.ctx = ctx
    ctx.extra["baselines"] = baselines if baselines is not None else CheckpointBaselines(ctx)
    _install_handlers(app)

    app.include_router(health.router)
    app.include_router(auth_routes.router, prefix=API_PREFIX)
    app.include_router(auth_routes.wellknown)
    app.include_router(alerts.router, prefix=API_PREFIX)
    app.include_router(silences.router, prefix=API_PREFIX)
    app.include_router(identities.router, prefix=API_PREFIX)
    app.include_router(exposure.router, prefix=API_PREFIX)
    app.include_router(reports.router, prefix=API_PREFIX)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(stream.router, prefix=API_PREFIX)
    app.include_router(keys.router, prefix=API_PREFIX)
    app.include_router(ui.router)

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="vaultwatch API",
            swagger_js_url=f"{ui.UI_PREFIX}/static/swagger/swagger-ui-bundle.js",
            swagger_css_url=f"{ui.UI_PREFIX}/static/swagger/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    registry = getattr(ctx.metrics, "registry", None)
    on_status = None
    if registry is not None:
        api_metrics = ctx.api_metrics = ApiMetrics(registry)

        def on_status(method: str, status: int) -> None:
            api_metrics.requests.labels(method, str(status)).inc()

    app.add_middleware(_Guards, max_body=cfg.max_body_bytes, on_status=on_status)
    return app
