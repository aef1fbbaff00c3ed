"""Login, logout, the caller's identity, token issuance and the public signing keys (JWKS)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError

from ..auth import CSRF_COOKIE, SESSION_COOKIE, AuthError, Principal
from ..deps import AppContext, Ctx, CurrentPrincipal, OptionalPrincipal, request_id_of
from ..schemas import LoginRequest, Me, SessionInfo, TokenResponse

__all__ = ["router", "wellknown"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/auth", tags=["auth"])
wellknown = APIRouter(tags=["auth"])

_LOGIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string", "minLength": 1, "maxLength": 256},
                        "password": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "next": {
                            "type": "string",
                            "maxLength": 2048,
                            "description": "local path to redirect to (303)",
                        },
                    },
                }
            },
        },
    }
}


def _local_path(value: str | None) -> str | None:
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return None
    return value


def _peer(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _audit(ctx: AppContext, request: Request, actor: str, role: str, action: str, outcome: str) -> None:
    ctx.audit.record(
        actor=actor[:256],
        role=role,
        method="session",
        action=action,
        target=_peer(request),
        outcome=outcome,
        request_id=request_id_of(request),
    )


@router.post(
    "/login",
    summary="Log in with a local user; sets the session and CSRF cookies",
    response_model=SessionInfo,
    openapi_extra=_LOGIN_BODY,
    responses={303: {"description": "form login with `next`: redirect"}, 401: {}, 415: {}, 422: {}, 429: {}},
)
async def login(request: Request, ctx: Ctx) -> Response:
    """Form (``username``, ``password``, optional ``next``) or JSON login (see :mod:`..auth`)."""
    wait = ctx.login_rate.check(f"login:{_peer(request)}") if ctx.login_rate else 0.0
    if wait > 0:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, "too many login attempts", {"Retry-After": str(int(wait) + 1)}
        )
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    next_path: str | None = None
    is_form = ctype in ("application/x-www-form-urlencoded", "multipart/form-data")
    try:
        if ctype == "application/json":
            try:
                raw = await request.json()
            except ValueError:
                raise HTTPException(422, "body is not valid JSON") from None
            body = LoginRequest.model_validate(raw)
        elif is_form:
            form = await request.form()
            fields = {k: form.get(k) for k in ("username", "password")}
            nxt = form.get("next")
            next_path = _local_path(nxt if isinstance(nxt, str) else None)
            body = LoginRequest.model_validate({k: v for k, v in fields.items() if isinstance(v, str)})
        else:
            raise HTTPException(415, "send JSON or a form")
    except ValidationError as exc:
        raise HTTPException(
            422, [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors(include_input=False)]
        ) from None
    try:
        principal = await run_in_threadpool(ctx.authn.login, body.username, body.password)
    except AuthError as exc:
        actor = body.username if ctx.authn.known_user(body.username) else "(unknown user)"
        _audit(ctx, request, actor, "", "login", "refused")
        if is_form and next_path is not None:
            sep = "&" if "?" in next_path else "?"
            return RedirectResponse(f"{next_path}{sep}error=login", status_code=303)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    _audit(ctx, request, principal.subject, principal.role, "login", "ok")
    return _start_session(ctx, principal, next_path)


def _start_session(ctx: AppContext, principal: Principal, next_path: str | None) -> Response:
    token = ctx.authn.issue_token(principal.subject, principal.role, session=True)
    csrf = ctx.authn.from_session(token).csrf or ""
    ttl = int(ctx.limits.session_ttl)
    response: Response
    if next_path is not None:
        response = RedirectResponse(next_path, status_code=303)
    else:
        info = SessionInfo(subject=principal.subject, role=principal.role, csrf_token=csrf, expires_in=ttl)
        response = JSONResponse(info.model_dump())
    common: dict[str, Any] = {
        "max_age": ttl,
        "path": "/",
        "secure": ctx.limits.cookie_secure,
        "samesite": ctx.limits.cookie_samesite,
    }
    response.set_cookie(SESSION_COOKIE, token, httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, **common)
    return response


@router.post("/logout", summary="End the session", status_code=204, responses={401: {}, 403: {}})
def logout(request: Request, ctx: Ctx, who: CurrentPrincipal) -> Response:
    """Revoke the session token and clear both cookies."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if who.method == "session" and cookie:
        try:
            ctx.authn.revoke(ctx.authn.verify_token(cookie, session=True))
        except AuthError:
            pass  # already invalid: nothing to revoke
    _audit(ctx, request, who.subject, who.role, "logout", "ok")
    response = Response(status_code=204)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(
            name, path="/", secure=ctx.limits.cookie_secure, samesite=ctx.limits.cookie_samesite
        )
    return response


@router.get("/me", summary="Who am I", response_model=Me, responses={401: {}})
def me(who: CurrentPrincipal) -> Me:
    """The caller's subject, role and authentication method (and CSRF value for sessions)."""
    return Me(subject=who.subject, role=who.role, method=who.method, csrf_token=who.csrf)


@router.get("/session", summary="The session, if any (never 401)", response_model=Me | None)
def session(who: OptionalPrincipal) -> Me | None:
    """Like ``/me`` but null when anonymous: lets a page decide to show a login form."""
    if who is None:
        return None
    return Me(subject=who.subject, role=who.role, method=who.method, csrf_token=who.csrf)


@router.post(
    "/token",
    summary="Exchange a session or API key for a short-lived bearer JWT",
    response_model=TokenResponse,
    responses={401: {}, 403: {}},
)
def token(request: Request, ctx: Ctx, who: CurrentPrincipal) -> TokenResponse:
    """A JWT with the caller's subject and role; a JWT cannot mint another (no endless refresh)."""
    if who.method == "jwt":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a bearer token cannot mint another")
    ttl = int(ctx.limits.token_ttl)
    jwt_token = ctx.authn.issue_token(who.subject, who.role, ttl=ttl)
    ctx.audit.record(
        actor=who.subject,
        role=who.role,
        method=who.method,
        action="token.issue",
        target=who.subject,
        outcome="ok",
        request_id=request_id_of(request),
    )
    return TokenResponse(access_token=jwt_token, expires_in=ttl)


@router.get("/jwks", summary="Public keys that verify the service's tokens (JWK Set)")
def jwks(ctx: Ctx) -> dict[str, Any]:
    """The current signing key and the previous keys still trusted."""
    return ctx.authn.keys.jwks()


@wellknown.get("/.well-known/jwks.json", summary="JWK Set (same as /api/v1/auth/jwks)")
def wellknown_jwks(ctx: Ctx) -> dict[str, Any]:
    """The current signing key and the previous keys still trusted."""
    return ctx.authn.keys.jwks()
