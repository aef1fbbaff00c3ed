"""One client for the Vault/OpenBao API: authentication, token renewal, and the calls vaultwatch needs.

Authentication methods: a token, a token file (re-read when it changes, as with a Vault agent
sink), AppRole, and Kubernetes. Renewal follows Vault's own ``LifetimeWatcher``: renew at about
two thirds of the token's TTL with jitter; when the TTL can no longer grow (``max_ttl`` reached)
or the token is not renewable, log in again before it expires; back off on errors. Secrets
(tokens, secret ids, JWTs) never appear in a repr, a log line or an error message.

Works with HashiCorp Vault and OpenBao, namespaces included (``namespace=``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import VaultwatchError

__all__ = ["VaultAuth", "VaultCalls", "VaultClient", "VaultClientError", "renew_delay"]

log = logging.getLogger(__name__)

DEFAULT_K8S_JWT = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class VaultClientError(VaultwatchError, RuntimeError):
    """A Vault API call or login failed. The message never holds a secret."""


@dataclass(frozen=True, repr=False)
class VaultAuth:
    """How to authenticate. Secret fields are excluded from the repr."""

    method: str = "token"  # token | token_file | approle | kubernetes
    token: str | None = None
    token_file: str | None = None
    role_id: str | None = None
    secret_id: str | None = None
    secret_id_file: str | None = None
    role: str | None = None  # kubernetes role
    jwt_file: str = DEFAULT_K8S_JWT
    mount: str | None = None  # auth mount path (default: the method's name)

    def __repr__(self) -> str:
        return f"VaultAuth(method={self.method!r}, mount={self.mount!r})"

    def validate(self) -> None:
        m = self.method
        if m == "token" and not self.token:
            raise VaultClientError("vault auth method 'token' needs a token")
        if m == "token_file" and not self.token_file:
            raise VaultClientError("vault auth method 'token_file' needs token_file")
        if m == "approle" and not (self.role_id and (self.secret_id or self.secret_id_file)):
            raise VaultClientError(
                "vault auth method 'approle' needs role_id and secret_id or secret_id_file"
            )
        if m == "kubernetes" and not self.role:
            raise VaultClientError("vault auth method 'kubernetes' needs role")
        if m not in ("token", "token_file", "approle", "kubernetes"):
            raise VaultClientError(f"unknown vault auth method {m!r}")


def renew_delay(ttl: float, rng: random.Random) -> float:
    """Seconds to wait before renewing a token with ``ttl`` seconds left: about 2/3, jittered.

    Vault's LifetimeWatcher sleeps two thirds of the lease plus random jitter, so a fleet of
    clients does not renew in lockstep. Never less than half a second.
    """
    return max(0.5, ttl * (2.0 / 3.0) * rng.uniform(0.9, 1.0))


@dataclass
class _TokenState:
    ttl: float = 0.0  # seconds left when last looked up / renewed
    obtained: float = 0.0  # monotonic time of that look-up
    renewable: bool = False
    logins: int = 0
    renewals: int = 0
    failures: int = 0
    last_error: str | None = None
    history: list[str] = field(default_factory=list)


class VaultCalls:
    """The Vault API calls vaultwatch makes, over an hvac client, with errors mapped to
    :class:`VaultClientError` (no values in messages). :class:`VaultClient` is one; wrap an hvac
    client that something else logged in (and will close) with ``VaultCalls(client)``."""

    def __init__(self, client: Any, addr: str | None = None) -> None:
        self._client = client
        self._lock = threading.RLock()
        self.addr = addr or str(getattr(getattr(client, "adapter", None), "base_uri", "") or "vault")

    @property
    def hvac(self) -> Any:
        """The underlying hvac client (authenticated)."""
        return self._client

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an hvac call with the client lock held, mapping errors to VaultClientError."""
        import hvac.exceptions
        import requests

        try:
            with self._lock:
                return fn(*args, **kwargs)
        except hvac.exceptions.VaultError as exc:
            raise VaultClientError(f"{getattr(fn, '__name__', 'vault call')}: {_safe_error(exc)}") from None
        except (requests.RequestException, OSError) as exc:
            raise VaultClientError(f"vault unreachable at {self.addr}: {type(exc).__name__}") from None

    def audit_hash(self, device: str, value: str) -> str:
        """HMAC of ``value`` as audit device ``device`` writes it (``sys/audit-hash``)."""
        resp = self.call(self._client.sys.calculate_hash, path=device.rstrip("/"), input_to_hash=value)
        h = resp.get("hash") or resp.get("data", {}).get("hash")
        if not isinstance(h, str):
            raise VaultClientError("sys/audit-hash returned no hash")
        return h

    def audit_devices(self) -> dict[str, dict[str, Any]]:
        resp = self.call(self._client.sys.list_enabled_audit_devices)
        data = resp.get("data", resp)
        return {k: v for k, v in data.items() if isinstance(v, dict) and "type" in v}


class VaultClient(VaultCalls):
    """An authenticated hvac client with automatic renewal. Use as a context manager or call
    :meth:`close` to stop the renewal thread.

    ``clock`` and ``rng`` are injectable for tests of the schedule.
    """

    def __init__(
        self,
        addr: str,
        auth: VaultAuth,
        *,
        namespace: str | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        import hvac

        auth.validate()
        # token="" so hvac never falls back to $VAULT_TOKEN or ~/.vault-token.
        super().__init__(
            hvac.Client(url=addr, token="", namespace=namespace, verify=verify, timeout=timeout), addr
        )
        self.auth = auth
        self.namespace = namespace
        self._clock = clock
        self._rng = rng or random.Random()
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.state = _TokenState()
        self._token_file_mtime: float | None = None

    def __repr__(self) -> str:
        return f"VaultClient(addr={self.addr!r}, auth={self.auth!r}, namespace={self.namespace!r})"

    # -- authentication ------------------------------------------------------------------------
    def login(self) -> None:
        """Authenticate with the configured method and look the token up."""
        import hvac.exceptions

        a = self.auth
        mount = a.mount
        try:
            with self._lock:
                if a.method == "token":
                    self._client.token = a.token
                elif a.method == "token_file":
                    self._client.token = self._read_token_file()
                elif a.method == "approle":
                    secret_id = a.secret_id or _read_secret_file(a.secret_id_file, "secret_id_file")
                    self._client.auth.approle.login(
                        role_id=a.role_id, secret_id=secret_id, mount_point=mount or "approle"
                    )
                else:
                    jwt = _read_secret_file(a.jwt_file, "jwt_file")
                    self._client.auth.kubernetes.login(
                        role=a.role, jwt=jwt, mount_point=mount or "kubernetes"
                    )
                self.state.logins += 1
                self._lookup()
        except hvac.exceptions.VaultError as exc:
            self.state.failures += 1
            raise VaultClientError(f"vault login ({a.method}) failed: {_safe_error(exc)}") from None
        except OSError as exc:  # includes requests' connection errors
            self.state.failures += 1
            raise VaultClientError(f"vault login ({a.method}) failed: {type(exc).__name__}") from None
        log.info("authenticated to %s with %s; token ttl %.0fs", self.addr, a.method, self.state.ttl)

    def _read_token_file(self) -> str:
        path = Path(self.auth.token_file or "")
        self._token_file_mtime = path.stat().st_mtime
        return _read_secret_file(str(path), "token_file")

    def _lookup(self) -> None:
        data = self._client.auth.token.lookup_self()["data"]
        ttl = float(data.get("ttl") or 0)
        self.state.ttl = ttl
        self.state.obtained = self._clock()
        # Root and other non-expiring tokens have ttl 0: nothing to renew.
        self.state.renewable = bool(data.get("renewable")) and ttl > 0

    def remaining(self) -> float:
        """Seconds of token life left, by the last look-up."""
        return self.state.ttl - (self._clock() - self.state.obtained)

    def renew_or_relogin(self) -> None:
        """One step of the lifetime watcher: renew if that extends the token, else log in again."""
        import hvac.exceptions

        a = self.auth
        if a.method == "token_file":
            path = Path(a.token_file or "")
            if path.exists() and path.stat().st_mtime != self._token_file_mtime:
                self.login()  # the sink wrote a new token
                return
        if self.state.ttl <= 0:
            return  # non-expiring token
        can_login = a.method in ("approle", "kubernetes")
        if self.state.renewable:
            try:
                with self._lock:
                    before = self.remaining()
                    resp = self._client.auth.token.renew_self()
                    new_ttl = float(resp["auth"]["lease_duration"])
                    self.state.ttl, self.state.obtained = new_ttl, self._clock()
                    self.state.renewals += 1
                # Renewal could not extend the life (max_ttl reached): log in again if we can.
                if can_login and new_ttl <= before + 1.0:
                    self.login()
                return
            except (hvac.exceptions.VaultError, OSError) as exc:
                self.state.last_error = _safe_error(exc)
                if not can_login:
                    raise VaultClientError(f"token renewal failed: {self.state.last_error}") from None
        if can_login:
            self.login()

    def start_renewal(self) -> None:
        """Run the lifetime watcher in a daemon thread until :meth:`close`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="vault-lifetime-watcher", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        backoff = self._min_backoff
        while not self._stop.is_set():
            remaining = self.remaining() if self.state.ttl > 0 else 300.0
            if self.auth.method == "token_file":
                remaining = min(remaining, 15.0)  # also notice a rewritten token file
            if self._stop.wait(renew_delay(max(remaining, 0.0), self._rng)):
                return
            try:
                self.renew_or_relogin()
                backoff = self._min_backoff
            except Exception as exc:  # noqa: BLE001 - the watcher must survive anything
                self.state.failures += 1
                self.state.last_error = str(exc) if isinstance(exc, VaultClientError) else type(exc).__name__
                log.warning("vault token renewal failed, retrying in %.1fs: %s", backoff, exc)
                if self._stop.wait(backoff):
                    return
                backoff = min(self._max_backoff, backoff * 2) * self._rng.uniform(0.8, 1.0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        session = getattr(self._client.adapter, "session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> VaultClient:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_secret_file(path: str | None, what: str) -> str:
    if not path:
        raise VaultClientError(f"{what} is not set")
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise VaultClientError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not value:
        raise VaultClientError(f"{what} {path} is empty")
    return value


def _safe_error(exc: Exception) -> str:
    """hvac errors carry the server's messages (no secrets) plus the URL; keep only the first."""
    errors = getattr(exc, "errors", None)
    if errors:
        return f"{type(exc).__name__}: {'; '.join(str(e) for e in errors)[:300]}"
    return type(exc).__name__
