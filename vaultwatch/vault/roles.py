"""Roles by capability: what each identity's Vault policies grant, read through the API.

The access model places an identity that no matcher recognises by what its policies *grant* on
the protected paths (see :func:`detect.policy.decide_capability_role`, pure). This module is the
I/O half: :func:`fetch_access` reads every ACL policy (``sys/policies/acl``, parsed with
:mod:`~vaultwatch.vault.policy_hcl`), the secrets mounts (so ``secret/data/...`` grants become
logical ``secret/...`` paths) and the auth roles (their policy sets and token TTLs: a short TTL
tells a CI role from a service), and :func:`capability_roles_of` turns that into the
:class:`~detect.policy.CapabilityRoles` the engine reads.

Detection never waits for Vault: :class:`CapabilityRefresher` refreshes in a background thread
every ``ttl`` seconds and swaps the whole mapping into a :class:`~detect.policy.CapabilityRoleBook`
(the object handed to the engine as ``config["capability_roles"]``). When Vault is unreachable the
last mapping stays in use and the refresher backs off; ``stats`` says so.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detect.policy import CapabilityRoleBook, CapabilityRoles, Grant, policy_key

from .client import VaultCalls, VaultClientError
from .policy_hcl import PathRule, PolicyParseError, parse_policy

__all__ = [
    "AuthRole",
    "VaultAccess",
    "fetch_access",
    "capability_roles_of",
    "CapabilityRefresher",
]

log = logging.getLogger(__name__)

#: Auth methods whose roles are listed, and the path segment under the mount that holds them.
_ROLE_LISTS: dict[str, str] = {
    "approle": "role",
    "kubernetes": "role",
    "jwt": "role",
    "oidc": "role",
    "userpass": "users",
    "cert": "certs",
    "aws": "role",
    "gcp": "role",
    "azure": "role",
    "ldap": "groups",
    "github": "map/teams",
}
#: At most this many roles are read per auth mount (a mount with thousands of users is sampled).
_MAX_ROLES_PER_MOUNT = 500


@dataclass(frozen=True)
class AuthRole:
    """One auth role (AppRole role, Kubernetes role, userpass user, token role, ...)."""

    mount: str  # "auth/approle/"
    method: str  # "approle"
    name: str
    policies: tuple[str, ...]
    token_ttl: float | None = None  # seconds, None when the role leaves it to the mount default

    @property
    def human(self) -> bool:
        """True for methods people log in with (their identities are developer-like by default)."""
        return self.method in ("userpass", "ldap", "oidc", "github", "okta", "radius")


@dataclass
class VaultAccess:
    """What :func:`fetch_access` read: policies (parsed), mounts, auth mounts and roles."""

    addr: str
    policies: dict[str, list[PathRule]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # policy -> why it could not be read
    mounts: dict[str, str] = field(default_factory=dict)  # "secret/" -> "kv-v2"
    auth_mounts: dict[str, str] = field(default_factory=dict)  # "auth/approle/" -> "approle"
    auth_roles: list[AuthRole] = field(default_factory=list)


def _data(resp: Any) -> dict[str, Any]:
    if not isinstance(resp, dict):
        return {}
    data = resp.get("data", resp)
    return data if isinstance(data, dict) else {}


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or value in (None, "", 0, "0"):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value > 0 else None
    if isinstance(value, str):
        units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
        try:
            return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)
        except ValueError:
            return None
    return None


def _policies(data: dict[str, Any]) -> tuple[str, ...]:
    for key in ("token_policies", "policies", "allowed_policies"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return tuple(p.strip() for p in value.split(",") if p.strip())
        if isinstance(value, list) and value:
            return tuple(str(p) for p in value)
    return ()


def fetch_access(calls: VaultCalls) -> VaultAccess:
    """Read policies, mounts and auth roles through ``calls`` (needs read/list on ``sys/policies/acl``,
    ``sys/mounts``, ``sys/auth`` and the auth roles; what cannot be read is skipped and noted)."""
    client = calls.hvac
    out = VaultAccess(addr=calls.addr)
    names = _data(calls.call(client.sys.list_acl_policies)).get("keys") or []
    for name in names:
        try:
            text = _data(calls.call(client.sys.read_acl_policy, name)).get("policy") or ""
            out.policies[str(name)] = parse_policy(str(text))
        except (VaultClientError, PolicyParseError) as exc:
            out.unreadable[str(name)] = str(exc)
    for path, info in _data(calls.call(client.sys.list_mounted_secrets_engines)).items():
        if not isinstance(info, dict) or "type" not in info:
            continue
        kind = str(info["type"])
        version = str((info.get("options") or {}).get("version") or "")
        out.mounts[str(path)] = "kv-v2" if kind == "kv" and version == "2" else kind
    for path, info in _data(calls.call(client.sys.list_auth_methods)).items():
        if not isinstance(info, dict) or "type" not in info:
            continue
        mount = f"auth/{str(path).strip('/')}/"
        method = str(info["type"])
        out.auth_mounts[mount] = method
        segment = _ROLE_LISTS.get(method)
        if segment is not None:
            out.auth_roles.extend(_roles(calls, mount, method, segment))
    out.auth_roles.extend(_roles(calls, "auth/token/", "token", "roles"))
    return out


def _roles(calls: VaultCalls, mount: str, method: str, segment: str) -> list[AuthRole]:
    client = calls.hvac
    try:
        keys = _data(calls.call(client.list, f"{mount}{segment}")).get("keys") or []
    except VaultClientError:
        return []  # none defined, or no right to list them
    found = []
    for key in keys[:_MAX_ROLES_PER_MOUNT]:
        try:
            data = _data(calls.call(client.read, f"{mount}{segment}/{key}"))
        except VaultClientError:
            continue
        ttl = (
            _seconds(data.get("token_ttl"))
            or _seconds(data.get("ttl"))
            or _seconds(data.get("token_max_ttl"))
        )
        found.append(AuthRole(mount, method, str(key), _policies(data), ttl))
    return found


def capability_roles_of(access: VaultAccess) -> CapabilityRoles:
    """The engine's view of ``access``: each policy's grants, the mounts, and per policy set the
    longest token TTL its auth roles issue."""
    grants = {
        name: tuple(Grant(r.path, frozenset(r.capabilities), r.parameter_settable("policies")) for r in rules)
        for name, rules in access.policies.items()
    }
    ttls: dict[str, float] = {}
    for role in access.auth_roles:
        if role.token_ttl is None or not role.policies:
            continue
        key = policy_key(role.policies)
        ttls[key] = max(ttls.get(key, 0.0), role.token_ttl)
    return CapabilityRoles(grants=grants, mounts=dict(access.mounts), token_ttls=ttls, source=access.addr)


class CapabilityRefresher:
    """Keeps a :class:`~detect.policy.CapabilityRoleBook` current from Vault, in the background.

    ``fetch`` is the blocking read (by default :func:`fetch_access` on ``calls``); ``clock`` is
    injectable. :meth:`refresh` runs one read now; :meth:`start` refreshes every ``ttl`` seconds
    in a daemon thread, backing off (up to ``ttl``) while Vault fails, keeping the last mapping.
    """

    def __init__(
        self,
        calls: VaultCalls | None,
        *,
        book: CapabilityRoleBook | None = None,
        ttl: float = 600.0,
        fetch: Callable[[], VaultAccess] | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_backoff: float = 5.0,
    ) -> None:
        if fetch is None and calls is None:
            raise ValueError("CapabilityRefresher needs a Vault client or a fetch function")
        self.book = book if book is not None else CapabilityRoleBook()
        self.ttl = ttl
        self._fetch = fetch if fetch is not None else (lambda: fetch_access(calls))  # type: ignore[arg-type]
        self._clock = clock
        self._min_backoff = min_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fetched_at: float | None = None
        self.stats: dict[str, Any] = {"refreshes": 0, "failures": 0, "policies": 0, "last_error": None}

    def refresh(self) -> CapabilityRoles:
        """Read Vault now and hand the new mapping to the book; raises VaultClientError."""
        access = self._fetch()
        roles = capability_roles_of(access)
        self.book.replace(roles)
        was_failing = self.stats["last_error"] is not None
        self.fetched_at = self._clock()
        self.stats.update(refreshes=self.stats["refreshes"] + 1, policies=len(roles.grants), last_error=None)
        if was_failing or self.stats["refreshes"] == 1:
            log.info("roles by capability: %d policies read from %s", len(roles.grants), access.addr)
        return roles

    def start(self) -> CapabilityRefresher:
        """Refresh in a daemon thread until :meth:`close` (the first read happens at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="vault-capability-roles", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        backoff = self._min_backoff
        while not self._stop.is_set():
            try:
                self.refresh()
                backoff = self._min_backoff
                wait = self.ttl
            except Exception as exc:  # noqa: BLE001 - the refresher must survive anything
                first = self.stats["last_error"] is None
                self.stats["failures"] += 1
                self.stats["last_error"] = (
                    str(exc) if isinstance(exc, VaultClientError) else type(exc).__name__
                )
                if first:  # log the change of state, not every retry
                    log.warning(
                        "roles by capability: cannot read Vault (%s); keeping the last mapping, retrying",
                        self.stats["last_error"],
                    )
                wait, backoff = backoff, min(self.ttl, backoff * 2)
            if self._stop.wait(wait):
                return

    def close(self) -> None:
        """Stop the background thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
