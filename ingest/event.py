"""Typed audit entries: the whole schema written by HashiCorp Vault 1.x-current and OpenBao 2.x.

Every field that can be absent is optional. The nested structs mirror Vault's JSON tags
(``audit/format.go`` / ``audit/types.go``; OpenBao ``internal/audit/format.go``). Unknown fields
are tolerated: the decoder's fast path forbids them, and an entry that has some goes through a
slower path that keeps them (redacted) in :attr:`AuditEvent.extra`.

:class:`AuditEvent` is what the rest of vaultwatch sees: the typed entry plus what is derived
from it once, at the edge (identity, outcome, normalised address, full path, redaction marks).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

import msgspec

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "Int64",
    "AuditEvent",
    "Auth",
    "GrantingPolicy",
    "Identity",
    "Namespace",
    "PolicyResults",
    "Request",
    "Response",
    "Secret",
    "WrapInfo",
    "Entry",
]


INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
#: Counts and TTLs are Go ``int``/``int64`` in Vault and OpenBao: anything outside is not theirs.
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]


class _Strict(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Base of every schema struct: immutable, unknown fields rejected on the fast path."""


class GrantingPolicy(_Strict, frozen=True):
    name: str | None = None
    namespace_id: str | None = None
    namespace_path: str | None = None
    type: str | None = None


class PolicyResults(_Strict, frozen=True):
    allowed: bool | None = None
    granting_policies: tuple[GrantingPolicy, ...] | None = None


class Auth(_Strict, frozen=True):
    """The caller (top-level ``auth``) or a token issued or renewed (``response.auth``)."""

    client_token: str | None = None
    accessor: str | None = None
    display_name: str | None = None
    policies: tuple[str, ...] | None = None
    token_policies: tuple[str, ...] | None = None
    identity_policies: tuple[str, ...] | None = None
    external_namespace_policies: dict[str, Any] | None = None
    no_default_policy: bool | None = None
    policy_results: PolicyResults | None = None
    metadata: dict[str, Any] | None = None
    num_uses: Int64 | None = None
    remaining_uses: Int64 | None = None
    entity_id: str | None = None
    entity_created: bool | None = None
    token_type: str | None = None
    token_ttl: Int64 | None = None
    token_issue_time: str | None = None
    authorization_details: Any = None


class Namespace(_Strict, frozen=True):
    id: str | None = None
    path: str | None = None


class Request(_Strict, frozen=True):
    id: str | None = None
    client_id: str | None = None
    operation: str | None = None
    mount_point: str | None = None
    mount_type: str | None = None
    mount_accessor: str | None = None
    mount_running_version: str | None = None
    mount_running_sha256: str | None = None
    mount_class: str | None = None
    mount_is_external_plugin: bool | None = None
    client_token: str | None = None
    client_token_accessor: str | None = None
    namespace: Namespace | None = None
    path: str | None = None
    data: dict[str, Any] | None = None
    policy_override: bool | None = None
    remote_address: str | None = None
    remote_port: int | None = None
    wrap_ttl: Int64 | None = None
    headers: dict[str, Any] | None = None
    replication_cluster: str | None = None
    client_certificate_serial_number: str | None = None
    request_uri: str | None = None
    supplemental_audit_data: Any = None


class Secret(_Strict, frozen=True):
    lease_id: str | None = None


class WrapInfo(_Strict, frozen=True):
    ttl: Int64 | None = None
    token: str | None = None
    accessor: str | None = None
    creation_time: str | None = None
    creation_path: str | None = None
    wrapped_accessor: str | None = None


class Response(_Strict, frozen=True):
    mount_point: str | None = None
    mount_type: str | None = None
    mount_accessor: str | None = None
    mount_class: str | None = None
    mount_is_external_plugin: bool | None = None
    mount_running_sha256: str | None = None
    mount_running_plugin_version: str | None = None
    auth: Auth | None = None
    secret: Secret | None = None
    data: dict[str, Any] | None = None
    redirect: str | None = None
    warnings: tuple[str, ...] | None = None
    wrap_info: WrapInfo | None = None
    headers: dict[str, Any] | None = None
    supplemental_audit_data: Any = None


class Entry(_Strict, frozen=True):
    """One audit entry exactly as the device wrote it (before redaction)."""

    type: str
    time: datetime
    auth: Auth | None = None
    request: Request | None = None
    response: Response | None = None
    error: str | None = None
    forwarded_from: str | None = None
    forwarded: bool | None = None


class Identity(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Who made a request, resolved once at the edge.

    ``key`` is the stable per-identity key used for baselines and Kafka partitioning:

    * ``entity:<entity_id>`` when the token is bound to an identity entity;
    * ``root:<display_name>`` for a root token without an entity (``root:root``);
    * ``token:<display_name>`` for any other token without an entity (the display name carries
      the auth mount, e.g. ``token-ci-bot`` or ``userpass-alice``): every token of that name is
      one identity, on purpose;
    * ``token:<generic name>#<accessor>`` (or ``root:...``) when the display name is one every
      unnamed token shares (``token``, ``token-token``): 16 hex digits of the accessor's HMAC,
      or ``~<token HMAC>`` for a token without accessor (batch tokens, tokens Vault did not
      recognise); ``token:#<accessor>`` / ``token:~<token>`` without any display name;
    * ``login:<mount>:<name>`` for unauthenticated login attempts (``auth/userpass/login/alice``
      gives ``login:userpass:alice``; an AppRole login gives the HMAC of its role_id);
    * ``anon:<address>`` for any other unauthenticated request (no or invalid token).

    ``role_name`` is the AppRole role the token was issued for (``auth.metadata.role_name``,
    written in clear by Vault and OpenBao on every AppRole token): what tells AppRole clients,
    which share the display name ``approle``, apart. It is never part of ``key``.
    """

    key: str
    kind: str  # entity | root | token | login | anonymous
    entity_id: str | None = None
    display_name: str | None = None
    auth_mount: str | None = None
    policies: tuple[str, ...] = ()
    token_type: str | None = None
    accessor: str | None = None
    client_id: str | None = None
    metadata: dict[str, Any] | None = None
    is_root: bool = False
    is_wrapping: bool = False
    is_batch: bool = False
    role_name: str | None = None


class AuditEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One parsed, validated, redacted audit entry plus what is derived from it.

    ``time`` is the entry's own time (event time, never the wall clock) and ``ts`` the same as
    POSIX seconds. ``path`` is the full path (namespace path + request path). ``outcome`` is one
    of ``ok``, ``denied``, ``login_failed``, ``error`` or ``pending`` (a request entry that was
    not rejected before routing). ``plaintext_fields`` lists the JSON paths whose values were
    written unhashed (``log_raw`` or ``audit_non_hmac_*``) and have been redacted here.
    """

    time: datetime
    ts: float
    type: str
    identity: Identity
    outcome: str
    auth: Auth
    request: Request
    response: Response | None = None
    error: str | None = None
    forwarded_from: str | None = None
    forwarded: bool | None = None
    path: str = ""
    namespace: str | None = None
    remote_ip: str | None = None
    remote_port: int | None = None
    plaintext_fields: tuple[str, ...] = ()
    extra: dict[str, Any] | None = None
    source: str | None = None

    @property
    def request_id(self) -> str | None:
        return self.request.id

    @property
    def operation(self) -> str | None:
        return self.request.operation

    @property
    def mount_point(self) -> str | None:
        """The mount, from the response entry when present (it is reliable there)."""
        r = self.response
        return (r.mount_point if r is not None else None) or self.request.mount_point

    @property
    def mount_type(self) -> str | None:
        r = self.response
        return (r.mount_type if r is not None else None) or self.request.mount_type

    @property
    def mount_accessor(self) -> str | None:
        r = self.response
        return (r.mount_accessor if r is not None else None) or self.request.mount_accessor

    @property
    def is_request(self) -> bool:
        return self.type == "request" or self.type.endswith("-request")

    @property
    def is_response(self) -> bool:
        return self.type == "response" or self.type.endswith("-response")

    @property
    def has_plaintext(self) -> bool:
        return bool(self.plaintext_fields)

    @property
    def dedup_key(self) -> tuple[str, str] | None:
        """``(request.id, type)``, or None when the entry has no request id."""
        rid = self.request.id
        return (rid, self.type) if rid else None
