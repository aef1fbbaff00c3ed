"""Exposure scope after a compromise (:mod:`vaultwatch.vault.exposure`) over the app's event archive.

``GET /exposure?path=...`` (viewer): who read secrets under a path prefix, when and from where.
``GET /exposure/identity?identity=...`` (viewer): the offboarding rotation list of one identity.
``POST /exposure/token`` (analyst): every archived request made with a leaked token or accessor.
The token travels in the JSON body only (never a URL, so no access log or proxy keeps it); it is
turned into each audit device's HMAC by the Vault/OpenBao server (``sys/audit-hash``) through the
client ``create_app`` was given, and never logged, stored or echoed. Without a client: 503.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from ...errors import ArchiveError
from ...vault.client import VaultCalls, VaultClientError
from ...vault.exposure import exposure_for_identity, exposure_for_path, exposure_for_token
from ..deps import Analyst, AppContext, Ctx, Viewer, epoch_of, request_id_of
from ..schemas import AUTH_RESPONSES, UtcDatetime, bounded_utc

__all__ = [
    "router",
    "TokenExposureRequest",
    "as_vault",
    "identity_exposure",
    "path_exposure",
    "token_exposure",
]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/exposure", tags=["exposure"], responses=AUTH_RESPONSES)

#: ``ctx.extra`` key of the :class:`vaultwatch.vault.client.VaultClient`-like object (set by ``create_app``).
VAULT_KEY = "vault"
NO_VAULT = "no Vault/OpenBao client is configured: token exposure needs one to compute audit HMACs"


def as_vault(client: Any) -> Any:
    """``client`` if it already is a ``VaultClient`` (has ``audit_hash``), else a
    :class:`~vaultwatch.vault.client.VaultCalls` over the hvac client (which its owner logged in
    and closes)."""
    return client if hasattr(client, "audit_hash") and hasattr(client, "call") else VaultCalls(client)


class TokenExposureRequest(BaseModel):
    """A leaked token or accessor (one of them), and an optional time range."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    token: SecretStr | None = Field(default=None, min_length=1, max_length=512)
    accessor: SecretStr | None = Field(default=None, min_length=1, max_length=512)
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> TokenExposureRequest:
        if self.token is None and self.accessor is None:
            raise ValueError("give a token or an accessor")
        return self


def _archive(ctx: AppContext) -> Any:
    if ctx.archive is None:
        raise HTTPException(503, "no event archive is configured")
    return ctx.archive


def _bounded(value: datetime | None, name: str) -> datetime | None:
    """``value`` in UTC within the API's window (the UI passes its own parsed values); else 422."""
    if value is None:
        return None
    try:
        return bounded_utc(value, name)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


def _range(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    since, until = _bounded(since, "since"), _bounded(until, "until")
    start, end = epoch_of(since, "since"), epoch_of(until, "until")
    if start is not None and end is not None and end <= start:
        raise HTTPException(422, "until must be after since")
    return since, until


def path_exposure(
    ctx: AppContext,
    prefix: str,
    since: datetime | None = None,
    until: datetime | None = None,
    since_last_rotation: bool = False,
) -> dict[str, Any]:
    """The exposure report of a path prefix as a dict (shared by the API and the UI)."""
    since, until = _range(since, until)
    try:
        report = exposure_for_path(
            _archive(ctx), prefix, start=since, end=until, since_last_rotation=since_last_rotation
        )
    except ArchiveError as exc:
        log.warning("exposure query on the archive failed: %s", type(exc).__name__)
        raise HTTPException(503, "event archive unavailable") from None
    return report.to_dict()


def identity_exposure(
    ctx: AppContext, identity: str, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    """The offboarding rotation list of an identity (key or display name) as a dict (shared by
    the API and the UI): every secret it read since that secret's last rotation."""
    start, end = _range(since, until)
    archive = _archive(ctx)
    try:
        report = exposure_for_identity(archive, identity, start=start, end=end)
    except ArchiveError as exc:
        log.warning("identity exposure query on the archive failed: %s", type(exc).__name__)
        raise HTTPException(503, "event archive unavailable") from None
    return report.to_dict()


def token_exposure(ctx: AppContext, body: TokenExposureRequest) -> dict[str, Any]:
    """The exposure report of a token or accessor as a dict (shared by the API and the UI).

    503 without a Vault client or archive, 502 when the server refuses or cannot be reached.
    """
    since, until = _range(body.since, body.until)
    vault = ctx.extra.get(VAULT_KEY)
    if vault is None:
        raise HTTPException(503, NO_VAULT)
    archive = _archive(ctx)
    try:
        report = exposure_for_token(
            archive,
            vault,
            token=body.token.get_secret_value() if body.token else None,
            accessor=body.accessor.get_secret_value() if body.accessor else None,
            start=since,
            end=until,
        )
    except VaultClientError as exc:
        # Logged (a VaultClientError never holds a secret), not passed on to the caller.
        log.warning("token exposure: Vault/OpenBao call failed: %s", exc)
        raise HTTPException(
            502, "the Vault/OpenBao server refused or could not compute the audit HMACs"
        ) from None
    except ArchiveError as exc:
        log.warning("token exposure query on the archive failed: %s", type(exc).__name__)
        raise HTTPException(503, "event archive unavailable") from None
    return report.to_dict()


@router.get("", summary="Exposure of secrets under a path prefix", responses={503: {}})
def get_path_exposure(
    ctx: Ctx,
    who: Viewer,
    path: Annotated[str, Query(min_length=1, max_length=512, description="secret path or prefix")],
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    since_last_rotation: bool = False,
) -> dict[str, Any]:
    """Who read secrets under ``path`` (KV v2 ``data/`` form included), when and from where,
    grouped by identity, with the secrets to rotate and the owners to notify."""
    return path_exposure(ctx, path.strip(), since, until, since_last_rotation)


@router.get("/identity", summary="Secrets an identity read since their last rotation", responses={503: {}})
def get_identity_exposure(
    ctx: Ctx,
    who: Viewer,
    identity: Annotated[str, Query(min_length=1, max_length=512, description="identity key or display name")],
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
) -> dict[str, Any]:
    """The rotation list for an offboarding: every secret ``identity`` read (when, from where)
    since that secret's last successful write."""
    return identity_exposure(ctx, identity.strip(), since, until)


@router.post(
    "/token",
    summary="Exposure of a leaked token or accessor",
    responses={502: {}, 503: {"description": "no Vault/OpenBao client or archive"}},
)
def post_token_exposure(
    ctx: Ctx, who: Analyst, request: Request, body: TokenExposureRequest
) -> dict[str, Any]:
    """Every archived request made with the token (or accessor) in the body, matched by its
    HMAC on every enabled audit device. The value is never logged, stored or returned."""
    report = token_exposure(ctx, body)
    ctx.audit.record(
        actor=who.subject,
        role=who.role,
        method=who.method,
        action="exposure.token",
        target="token" if body.token else "accessor",
        outcome="ok",
        request_id=request_id_of(request),
        detail={"events": report["events"]},
    )
    return report
