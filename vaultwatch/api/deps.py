"""FastAPI dependencies as ``Annotated`` aliases: the app context and the caller's principal.

Use them as parameter types::

    @router.get("/things")
    def things(ctx: Ctx, who: Viewer) -> ...

``Viewer``/``Analyst``/``Admin`` require at least that role (401 without credentials, 403 with
a lower role); ``CurrentPrincipal`` any role; ``OptionalPrincipal`` is None when anonymous.
State-changing requests authenticated by the session cookie must pass the CSRF check (see
:mod:`vaultwatch.api.auth`).
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from alerts.store import Store

from .audit import ApiAudit
from .auth import (
    CSRF_COOKIE,
    CSRF_FORM_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    AuthConfig,
    Authenticator,
    AuthError,
    FailureLimiter,
    Principal,
    RateLimiter,
    Role,
    role_at_least,
)

__all__ = [
    "ApiMetrics",
    "AppContext",
    "Ctx",
    "CurrentPrincipal",
    "OptionalPrincipal",
    "PagePrincipal",
    "Viewer",
    "Analyst",
    "Admin",
    "require_role",
    "request_id_of",
    "epoch_of",
    "NEW_CSRF_COOKIE",
]

log = logging.getLogger(__name__)

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: ``request.state`` key: a ``Set-Cookie`` value the app's guard adds to the response.
NEW_CSRF_COOKIE = "new_csrf_cookie"


class ApiMetrics:
    """The API's own Prometheus series, on the registry ``/metrics`` renders."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge

        self.requests = Counter(
            "vaultwatch_api_requests",
            "API responses by method and status",
            ["method", "status"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "vaultwatch_api_auth_failures",
            "refused credentials and throttled callers",
            ["reason"],
            registry=registry,
        )
        self.auth_failure_limit = Gauge(
            "vaultwatch_api_auth_failure_limit",
            "refused credentials allowed per source address: burst, and refill per second",
            ["setting"],
            registry=registry,
        )


@dataclass
class AppContext:
    """Everything a route needs, built once by ``create_app`` and kept on ``app.state.ctx``."""

    settings: Any
    store: Store
    archive: Any  # vaultwatch.service.archive.EventArchive | None
    authn: Authenticator
    audit: ApiAudit
    limits: AuthConfig
    clock: Callable[[], float] = time.time
    rate: RateLimiter | None = None
    login_rate: RateLimiter | None = None
    auth_failures: FailureLimiter | None = None
    metrics: Any = None
    api_metrics: ApiMetrics | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def epoch_of(value: datetime | None, name: str) -> float | None:
    """Epoch seconds of a datetime parameter (naive means UTC); 422 when out of range."""
    if value is None:
        return None
    try:
        return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, ValueError, OSError):
        raise HTTPException(422, f"{name} is out of range") from None


def get_ctx(request: Request) -> AppContext:
    """The :class:`AppContext` of the running app."""
    ctx: AppContext = request.app.state.ctx
    if ctx.auth_failures is None:
        _start_failure_limit(ctx)
    return ctx


def _start_failure_limit(ctx: AppContext) -> None:
    """The per-address limit on refused credentials, from ``ctx.limits``, shown in ``/metrics``."""
    with ctx.lock:
        if ctx.auth_failures is not None:
            return
        cfg = ctx.limits
        if ctx.api_metrics is not None:
            ctx.api_metrics.auth_failure_limit.labels("burst").set(cfg.auth_failure_burst)
            ctx.api_metrics.auth_failure_limit.labels("per_second").set(cfg.auth_failure_per_second)
        ctx.auth_failures = FailureLimiter(cfg.auth_failure_per_second, cfg.auth_failure_burst, ctx.clock)


def _too_many(ctx: AppContext, wait: float, reason: str) -> HTTPException:
    if ctx.api_metrics is not None:
        ctx.api_metrics.auth_failures.labels(reason).inc()
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail="rate limit exceeded",
        headers={"Retry-After": str(max(1, int(wait + 0.999)))},
    )


Ctx = Annotated[AppContext, Depends(get_ctx)]


def request_id_of(request: Request) -> str:
    """The id of this request (echoed in ``X-Request-ID`` and in error bodies)."""
    rid = getattr(request.state, "request_id", None)
    return str(rid) if rid else ""


# The security schemes document the credentials in OpenAPI; the checks are ours.
_bearer = HTTPBearer(auto_error=False, description="JWT signed by the service (see /api/v1/auth/jwks)")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="<id>.<secret> from API_KEYS_FILE")
_session = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="session from /api/v1/auth/login")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": 'Bearer realm="vaultwatch"'}
    )


async def _csrf_ok(request: Request, expected: str) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FORM_FIELD)
            sent = value if isinstance(value, str) else None
    return bool(sent) and hmac.compare_digest(str(sent), expected)


def _sso_csrf(request: Request, ctx: AppContext, principal: Principal) -> Principal:
    """The browser behind an SSO proxy is authenticated on every request, like a cookie: give it
    a double-submit CSRF value (the ``vw_csrf`` cookie, set on its first request)."""
    value = request.cookies.get(CSRF_COOKIE, "")
    if len(value) < 16:
        value = secrets.token_urlsafe(24)
        attrs = f"{CSRF_COOKIE}={value}; Path=/; SameSite={ctx.limits.cookie_samesite.capitalize()}"
        setattr(request.state, NEW_CSRF_COOKIE, attrs + ("; Secure" if ctx.limits.cookie_secure else ""))
    return dataclasses.replace(principal, csrf=value)


async def optional_principal(request: Request, ctx: Ctx) -> Principal | None:
    """The caller, or None when no credential was sent; 401 for a bad one, 429 when throttled.

    Refused credentials are counted per source address (``auth_failure_burst``, refilled at
    ``auth_failure_per_second``); past the limit, any credential from that address gets 429
    without being checked, so keys and tokens cannot be guessed at the speed of the server.
    """
    peer = request.client.host if request.client else None
    failures = ctx.auth_failures
    presented = bool(
        request.headers.get("authorization")
        or request.headers.get("x-api-key")
        or request.cookies.get(SESSION_COOKIE)
    )
    if failures is not None and presented:
        wait = failures.blocked(f"peer:{peer}")
        if wait > 0:
            raise _too_many(ctx, wait, "failure_limited")
    try:
        # Off the event loop: an argon2 check takes tens of milliseconds.
        principal = await run_in_threadpool(
            ctx.authn.authenticate,
            authorization=request.headers.get("authorization"),
            api_key=request.headers.get("x-api-key"),
            session=request.cookies.get(SESSION_COOKIE),
            peer=peer,
            headers=request.headers,
        )
    except AuthError as exc:
        log.info("authentication refused from %s: %s", peer, exc)
        if ctx.api_metrics is not None:
            ctx.api_metrics.auth_failures.labels("invalid").inc()
        if failures is not None:
            failures.failed(f"peer:{peer}")
        raise _unauthorized(str(exc)) from None
    if principal is None:
        return None
    if principal.method == "sso":
        principal = _sso_csrf(request, ctx, principal)
    if ctx.rate is not None:
        wait = ctx.rate.check(f"{principal.method}:{principal.subject}")
        if wait > 0:
            raise _too_many(ctx, wait, "rate_limited")
    if (
        principal.method in ("session", "sso")
        and request.method in _UNSAFE
        and not await _csrf_ok(request, principal.csrf or "")
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="missing or wrong CSRF token")
    request.state.principal = principal
    return principal


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def page_principal(request: Request, ctx: Ctx) -> Principal | None:
    """:func:`optional_principal` for a web page: a refused credential counts as anonymous.

    A stale session cookie or an expired token then sends the browser to the login page (the
    page's own decision) instead of a 401 body; throttling (429) and the CSRF check stand.
    """
    try:
        return await optional_principal(request, ctx)
    except HTTPException as exc:
        if exc.status_code != status.HTTP_401_UNAUTHORIZED:
            raise
        return None


PagePrincipal = Annotated[Principal | None, Depends(page_principal)]


def current_principal(
    principal: OptionalPrincipal,
    _bearer_doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    _key_doc: Annotated[str | None, Depends(_api_key)],
    _session_doc: Annotated[str | None, Depends(_session)],
) -> Principal:
    """The authenticated caller (401 when anonymous).

    The three security schemes are parameters only so that OpenAPI documents them on every
    route that needs a credential; :func:`optional_principal` reads the headers itself.
    """
    if principal is None:
        raise _unauthorized("authentication required")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_role(minimum: Role) -> Callable[[Principal], Principal]:
    """A dependency admitting callers whose role is at least ``minimum`` (else 403)."""

    def check(principal: CurrentPrincipal) -> Principal:
        if not role_at_least(principal.role, minimum):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"requires role {minimum}")
        return principal

    check.__name__ = f"require_{minimum}"
    return check


Viewer = Annotated[Principal, Depends(require_role("viewer"))]
Analyst = Annotated[Principal, Depends(require_role("analyst"))]
Admin = Annotated[Principal, Depends(require_role("admin"))]
