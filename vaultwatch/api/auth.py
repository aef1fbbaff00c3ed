"""Authentication and authorisation of the analyst API and web UI.

Long on purpose: every credential kind, the rate limiters and the role checks sit in one module, so
a security review of authentication reads one file.

Credentials, in the order they are tried (the first one present decides; a present but invalid
credential is a 401, it never falls through to the next):

* ``Authorization: Bearer <jwt>``: a JWT signed by the service's own key (``JWT_KEY_FILE``, a PEM
  private key, Ed25519, RSA or EC; or a PEM read from Vault/OpenBao with hvac). Verification pins
  the algorithm to the key named by the token's ``kid`` (so ``alg: none`` and HS256-with-the-
  public-key are refused), requires ``exp``, ``iat``, ``iss``, ``aud`` and ``sub`` and refuses
  expired tokens and tokens issued or valid only in the future. Public keys are published at
  ``/api/v1/auth/jwks`` and ``/.well-known/jwks.json``.
* ``X-API-Key: <id>.<secret>`` (or ``Authorization: ApiKey <id>.<secret>``): keys listed in
  ``API_KEYS_FILE`` (TOML ``[[keys]]`` or a JSON list: ``id``, ``hash`` = ``sha256:<hex>`` of the
  whole presented key or an argon2 PHC string, ``role``, optional ``not_after`` RFC 3339). Only
  hashes are stored; comparison is constant time.
* the session cookie ``vw_session`` set by ``POST /api/v1/auth/login``.
* trusted-header SSO: when ``sso_header`` is configured and the peer address is in
  ``trusted_proxies``, that header names the user (role from ``sso_role_header`` or
  ``sso_default_role``).

Roles are ordered ``viewer`` (read) < ``analyst`` (triage, silences) < ``admin`` (keys,
channel/route status). No credential: 401; a role too low: 403.

Key rotation without downtime: the key file may hold several PEM private keys, the first signs
and the others only verify. The file is re-read when its inode, size or mtime changes; a key
that disappears from it keeps verifying until the tokens it signed have expired
(``token_ttl``), so replacing the file with only the new key logs nobody out. The API-key
file is reloaded the same way; a replacement that does not parse is logged and ignored, so a
half-written file never turns requests away.

Contract for the web UI (``vaultwatch/api/ui/``)
-------------------------------------------------
* Log in: ``POST /api/v1/auth/login`` with a form (``username``, ``password``, optional
  ``next``: a local path to redirect to with 303) or JSON ``{"username", "password"}`` (200 with
  :class:`~vaultwatch.api.schemas.SessionInfo`). It sets two cookies: ``vw_session`` (HttpOnly,
  SameSite=Lax, Secure unless ``cookie_secure`` is off, Path=/) and ``vw_csrf`` (readable by
  the page, same attributes but not HttpOnly). Bad credentials: 401 for JSON; a 303 back to
  ``next`` with ``?error=login`` for forms. ``POST /api/v1/auth/logout`` clears both.
* CSRF (double submit): every state-changing request (POST/PUT/PATCH/DELETE) authenticated by
  the session cookie or by the SSO header must carry the ``vw_csrf`` value in the
  ``X-CSRF-Token`` header or the ``csrf_token`` form field; otherwise 403. (An SSO browser gets
  its ``vw_csrf`` cookie on its first request; ``principal.csrf`` holds the value.) Bearer
  tokens and API keys are not sent by browsers on their own and need no CSRF value. Put
  ``<input type="hidden" name="csrf_token" value="{{ csrf }}">`` in every form;
  :func:`csrf_token_of` gives the value for a principal.
* ``GET /api/v1/auth/session`` answers the caller's :class:`~vaultwatch.api.schemas.Me` or
  ``null`` (never 401); ``GET /api/v1/auth/me`` the same but 401 when anonymous.
* Dependencies (``vaultwatch.api.deps``): ``CurrentPrincipal`` (any role, 401 without
  credentials), ``OptionalPrincipal`` (None when anonymous), ``PagePrincipal`` (the same, with
  a refused credential counted as anonymous: the pages then redirect to the login page),
  ``Viewer``, ``Analyst``, ``Admin`` (role at least that), ``Ctx`` (the :class:`AppContext`
  on ``app.state.ctx``: ``store``, ``archive``, ``authn``, ``audit``, ``limits``).
* A :class:`Principal` has ``subject``, ``role``, ``method`` (``jwt``, ``api_key``,
  ``session``, ``sso``) and ``csrf`` (the session's CSRF value, or None).
* ``create_app`` mounts ``vaultwatch.api.ui.router`` and puts
  the identity baselines (``identities()``, ``identity_summary(key)``, read from the workers'
  engine checkpoints) in ``ctx.extra["baselines"]``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..errors import VaultwatchError
from ..settings import Settings

__all__ = [
    "ROLES",
    "Role",
    "role_at_least",
    "Principal",
    "AuthConfig",
    "AuthError",
    "KeySource",
    "FileKeySource",
    "VaultKeySource",
    "KeyRing",
    "ApiKeyEntry",
    "ApiKeyFile",
    "UserFile",
    "TokenBucket",
    "RateLimiter",
    "FailureLimiter",
    "Authenticator",
    "hash_api_key",
    "hash_password",
    "generate_pem",
    "csrf_token_of",
    "SESSION_COOKIE",
    "CSRF_COOKIE",
    "CSRF_HEADER",
    "CSRF_FORM_FIELD",
]

log = logging.getLogger(__name__)

Role = Literal["viewer", "analyst", "admin"]
ROLES: Final[tuple[Role, ...]] = ("viewer", "analyst", "admin")
SESSION_COOKIE: Final = "vw_session"
CSRF_COOKIE: Final = "vw_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FORM_FIELD: Final = "csrf_token"
_SESSION_AUD_SUFFIX: Final = ":session"
_MAX_CLOCK_SKEW: Final = 30.0
_MAX_FILE: Final = 1024 * 1024


def role_at_least(role: str, minimum: str) -> bool:
    """Whether ``role`` grants what ``minimum`` grants (unknown roles grant nothing)."""
    if role not in ROLES or minimum not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(minimum)


class AuthError(VaultwatchError):
    """A credential is missing, malformed, expired or wrong; ``str()`` is safe to return."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``subject`` (user or key id), ``role`` and how they authenticated."""

    subject: str
    role: Role
    method: Literal["jwt", "api_key", "session", "sso"]
    csrf: str | None = None

    def __repr__(self) -> str:
        return f"Principal(subject={self.subject!r}, role={self.role!r}, method={self.method!r})"


@dataclass(frozen=True)
class AuthConfig:
    """How the API authenticates; secrets are file paths (container secrets), never values.

    Built by the entrypoint from the settings (:meth:`from_settings`) and passed to
    :func:`vaultwatch.api.app.create_app`.
    """

    jwt_key_file: Path | None = None
    jwt_vault_path: str | None = None  # "mount/path#field" of a PEM in a KV v2 engine
    issuer: str = "vaultwatch"
    audience: str = "vaultwatch-api"
    token_ttl: float = 3600.0
    session_ttl: float = 8 * 3600.0
    api_keys_file: Path | None = None
    users_file: Path | None = None
    sso_header: str | None = None
    sso_role_header: str | None = None
    sso_default_role: Role = "viewer"
    trusted_proxies: tuple[str, ...] = ()
    cookie_secure: bool = True
    cookie_samesite: Literal["lax", "strict"] = "lax"
    rate_per_second: float = 20.0
    rate_burst: int = 100
    login_rate_per_second: float = 1.0
    login_burst: int = 10
    #: Refused API keys, bearer tokens and session cookies per source address: after
    #: ``auth_failure_burst`` of them the address gets 429 for any credential (no verification is
    #: even attempted) until the bucket refills at ``auth_failure_per_second``.
    auth_failure_per_second: float = 0.2
    auth_failure_burst: int = 20
    max_body_bytes: int = 64 * 1024
    max_page_size: int = 200
    max_event_range_hours: float = 7 * 24.0
    stream_poll_seconds: float = 1.0
    reload_check_seconds: float = 0.0  # 0: stat the files on every request (one syscall)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AuthConfig:
        """The API's authentication from ``settings.api.auth``, the one configuration path.

        :func:`vaultwatch.settings.load_settings` validates it (TOML ``[api.auth]``, and the
        environment: ``JWT_KEY_FILE``, ``API_KEYS_FILE``, ``VAULTWATCH_API_<FIELD>``).
        """
        kw: dict[str, Any] = settings.api.auth.model_dump()
        kw.update(overrides)
        return cls(**kw)


# -- signing keys -------------------------------------------------------------------------------

SigningKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class KeySource(Protocol):
    """Where the PEM private keys come from: ``version()`` is cheap, ``read()`` returns PEM bytes."""

    def version(self) -> object: ...

    def read(self) -> bytes: ...


class FileKeySource:
    """A PEM file (``JWT_KEY_FILE``); its version is (inode, size, mtime_ns)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def version(self) -> object:
        st = os.stat(self.path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> bytes:
        with self.path.open("rb") as fh:
            return fh.read(_MAX_FILE)


class VaultKeySource:
    """A PEM stored in a KV v2 secret (``mount/path#field``), read with an hvac client.

    The version is the secret's metadata version, checked at most every ``check_seconds``.
    """

    def __init__(self, client: Any, ref: str, *, check_seconds: float = 30.0) -> None:
        where, _, fld = ref.partition("#")
        mount, _, path = where.strip("/").partition("/")
        if not mount or not path:
            raise AuthError("the Vault key path must look like 'mount/path#field'")
        self.client, self.mount, self.path, self.field = client, mount, path, fld or "private_key"
        self.check_seconds = check_seconds
        self._checked = 0.0
        self._version: object = None
        self._pem = b""

    def _fetch(self) -> None:
        resp = self.client.secrets.kv.v2.read_secret_version(
            path=self.path, mount_point=self.mount, raise_on_deleted_version=True
        )
        data = resp["data"]
        self._version = data["metadata"]["version"]
        self._pem = str(data["data"][self.field]).encode()
        self._checked = time.monotonic()

    def version(self) -> object:
        if not self._checked or time.monotonic() - self._checked >= self.check_seconds:
            self._fetch()
        return self._version

    def read(self) -> bytes:
        if not self._pem:
            self._fetch()
        return self._pem


def _alg_for(key: SigningKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise AuthError("RSA signing keys must have at least 2048 bits")
        return "RS256"
    curve = key.curve.name
    algs = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
    if curve not in algs:
        raise AuthError(f"unsupported EC curve {curve}")
    return algs[curve]


def _kid_for(key: SigningKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:12]).decode().rstrip("=")


@dataclass
class _Key:
    kid: str
    alg: str
    private: SigningKey
    retire_at: float | None = None  # verify-only until then (None: in the file)

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            jwt.algorithms.get_default_algorithms()[self.alg].to_jwk(self.public)
        )
        data.update(kid=self.kid, alg=self.alg, use="sig")
        return data


def _split_pem(blob: bytes) -> list[bytes]:
    out, cur = [], []
    for line in blob.splitlines(keepends=True):
        if line.startswith(b"-----BEGIN"):
            cur = [line]
        elif cur:
            cur.append(line)
            if line.startswith(b"-----END"):
                out.append(b"".join(cur))
                cur = []
    return out


class KeyRing:
    """The JWT keys: the first key in the source signs, the others and retired keys verify.

    Re-reads the source when its version changes (checked at most every ``check_seconds``). A
    key that left the source keeps verifying for ``grace`` seconds (the longest token lifetime).
    A source that cannot be read or parsed keeps the keys already loaded.
    """

    def __init__(
        self,
        source: KeySource,
        *,
        grace: float,
        clock: Callable[[], float] = time.time,
        check_seconds: float = 0.0,
    ) -> None:
        self.source, self.grace, self._clock = source, grace, clock
        self.check_seconds = check_seconds
        self._lock = threading.Lock()
        self._version: object = None
        self._checked = -1e18
        self._keys: list[_Key] = []  # current first
        self._retired: list[_Key] = []
        self.refresh(force=True)
        if not self._keys:
            raise AuthError("no usable signing key in the JWT key source")

    def refresh(self, *, force: bool = False) -> None:
        """Reload the keys if the source changed."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_seconds:
            return
        try:
            version = self.source.version()
        except Exception as exc:  # noqa: BLE001 - a vanished file keeps the keys we have
            log.warning("cannot check the JWT key source: %s", type(exc).__name__)
            return
        self._checked = now
        if not force and version == self._version:
            return
        with self._lock:
            if not force and version == self._version:
                return
            try:
                keys = self._parse(self.source.read())
            except Exception as exc:  # noqa: BLE001 - never log key material; keep the old keys
                log.warning("JWT key source not reloaded: %s", type(exc).__name__)
                return
            if not keys:
                log.warning("JWT key source holds no private key; keeping the loaded keys")
                return
            new_kids = {k.kid for k in keys}
            stamp = self._clock()
            retired = [k for k in self._retired if k.kid not in new_kids]
            for old in self._keys:
                if old.kid not in new_kids:
                    old.retire_at = stamp + self.grace
                    retired.append(old)
            if self._keys and self._keys[0].kid != keys[0].kid:
                log.info("JWT signing key rotated to kid %s", keys[0].kid)
            self._keys, self._retired, self._version = keys, retired, version

    @staticmethod
    def _parse(blob: bytes) -> list[_Key]:
        keys = []
        for pem in _split_pem(blob):
            priv = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(
                priv, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
            ):
                raise AuthError("unsupported key type")
            keys.append(_Key(_kid_for(priv), _alg_for(priv), priv))
        return keys

    def _live(self) -> list[_Key]:
        now = self._clock()
        self._retired = [k for k in self._retired if k.retire_at is not None and k.retire_at > now]
        return [*self._keys, *self._retired]

    @property
    def current(self) -> _Key:
        """The signing key."""
        self.refresh()
        return self._keys[0]

    def find(self, kid: str) -> _Key | None:
        """The verifying key with this ``kid``, if it is still trusted."""
        self.refresh()
        for k in self._live():
            if hmac.compare_digest(k.kid, kid):
                return k
        return None

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JWK Set."""
        self.refresh()
        return {"keys": [k.jwk() for k in self._live()]}


# -- API keys and users -------------------------------------------------------------------------


def hash_api_key(key: str) -> str:
    """The ``sha256:<hex>`` form of an API key for ``API_KEYS_FILE``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash for the users file."""
    return _hasher.hash(password)


@dataclass(frozen=True)
class ApiKeyEntry:
    """One API key as configured: never the key itself, only its hash."""

    id: str
    hash: str = field(repr=False)
    role: Role
    not_after: float | None = None
    comment: str = ""

    def matches(self, presented: str) -> bool:
        """Constant-time check of a presented key against the stored hash."""
        if self.hash.startswith("sha256:"):
            want = self.hash.removeprefix("sha256:").lower()
            return hmac.compare_digest(hashlib.sha256(presented.encode()).hexdigest(), want)
        if self.hash.startswith("$argon2"):
            try:
                return bool(_hasher.verify(self.hash, presented))
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False
        return False


def _read_table(path: Path, key: str) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        raw = fh.read(_MAX_FILE)
    data: Any
    if path.suffix.lower() == ".json":
        data = json.loads(raw)
    else:
        try:
            data = tomllib.loads(raw.decode())
        except tomllib.TOMLDecodeError:
            # Container secrets often have no suffix: JSON is the other format accepted.
            if raw.lstrip()[:1] not in (b"{", b"["):
                raise
            data = json.loads(raw)
    if isinstance(data, dict):
        data = data.get(key, [])
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise AuthError(f"{path.name}: expected a list of {key}")
    return data


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class _Reloading:
    """A file parsed into something, re-parsed when its (inode, size, mtime) changes."""

    def __init__(self, path: Path, *, check_seconds: float = 0.0) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self._version: object = None
        self._checked = -1e18
        self._lock = threading.Lock()
        self.reloads = 0

    def _parse(self) -> None:
        raise NotImplementedError

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < self.check_seconds:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            # Mid-swap or removed: keep serving the last good content.
            return
        self._checked = now
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        if version == self._version and not force:
            return
        with self._lock:
            if version == self._version and not force:
                return
            try:
                self._parse()
            except Exception as exc:  # noqa: BLE001 - keep the last good content
                log.warning("%s not reloaded: %s", self.path.name, type(exc).__name__)
                if self._version is None:
                    raise AuthError(f"cannot load {self.path.name}") from None
                return
            self._version = version
            self.reloads += 1


class ApiKeyFile(_Reloading):
    """``API_KEYS_FILE``: hashed API keys with a role and an optional ``not_after``."""

    def __init__(self, path: Path, *, check_seconds: float = 0.0) -> None:
        super().__init__(path, check_seconds=check_seconds)
        self.entries: dict[str, ApiKeyEntry] = {}
        # sha256 of a presented key -> (entries it was checked against, entry id): an argon2
        # check costs tens of milliseconds, and a reload replaces ``entries`` (invalidating it).
        self._verified: dict[str, tuple[dict[str, ApiKeyEntry], str]] = {}
        self.refresh(force=True)

    def _parse(self) -> None:
        entries = {}
        for item in _read_table(self.path, "keys"):
            role = item.get("role", "viewer")
            if role not in ROLES:
                raise AuthError(f"{self.path.name}: unknown role for key {item.get('id')!r}")
            entry = ApiKeyEntry(
                id=str(item["id"]),
                hash=str(item["hash"]),
                role=role,
                not_after=_epoch(item.get("not_after")),
                comment=str(item.get("comment", "")),
            )
            entries[entry.id] = entry
        self.entries = entries
        log.info("loaded %d API keys from %s", len(entries), self.path.name)

    def verify(self, presented: str, now: float) -> ApiKeyEntry:
        """The entry a presented ``<id>.<secret>`` key belongs to (raises :class:`AuthError`)."""
        self.refresh()
        key_id, dot, _ = presented.partition(".")
        entry = self.entries.get(key_id) if dot else None
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if entry is None:
            # Same work as a real check, so timing does not reveal which ids exist.
            hmac.compare_digest(digest, "0" * 64)
            raise AuthError("invalid API key")
        entries = self.entries
        cached = self._verified.get(digest)
        if cached is None or cached[0] is not entries or cached[1] != entry.id:
            if not entry.matches(presented):
                raise AuthError("invalid API key")
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[digest] = (entries, entry.id)
        if entry.not_after is not None and now >= entry.not_after:
            raise AuthError("API key expired")
        return entry


@functools.cache
def _dummy_hash() -> str:
    # Verified for unknown users, so a login takes as long whether or not the name exists.
    return _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class _User:
    name: str
    password_hash: str = field(repr=False)
    role: Role


class UserFile(_Reloading):
    """Local users: ``[[users]] name, password_hash (argon2), role``."""

    def __init__(self, path: Path, *, check_seconds: float = 0.0) -> None:
        super().__init__(path, check_seconds=check_seconds)
        self.users: dict[str, _User] = {}
        self.refresh(force=True)

    def _parse(self) -> None:
        users = {}
        for item in _read_table(self.path, "users"):
            role = item.get("role", "viewer")
            if role not in ROLES:
                raise AuthError(f"{self.path.name}: unknown role for user {item.get('name')!r}")
            users[str(item["name"])] = _User(str(item["name"]), str(item["password_hash"]), role)
        self.users = users

    def verify(self, name: str, password: str) -> _User:
        """The user if the password matches its argon2 hash (raises :class:`AuthError`)."""
        self.refresh()
        user = self.users.get(name)
        try:
            _hasher.verify(user.password_hash if user else _dummy_hash(), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            raise AuthError("invalid username or password") from None
        if user is None:
            raise AuthError("invalid username or password")
        return user


# -- rate limits --------------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; :meth:`take` says whether one was available."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), now

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 60.0


class RateLimiter:
    """One :class:`TokenBucket` per key (principal or client address), bounded in number."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float], max_keys: int = 10_000) -> None:
        self.rate, self.burst, self._clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> float:
        """0.0 when allowed, else the retry delay in seconds."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._buckets.clear()  # crude but bounded: a flood of keys cannot grow memory
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            return bucket.take(now)


class FailureLimiter:
    """Failed authentications per key (the source address): :meth:`blocked` only looks,
    :meth:`failed` spends a token. A caller who never fails is never limited here."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float], max_keys: int = 10_000) -> None:
        self.rate, self.burst, self._clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def blocked(self, key: str) -> float:
        """0.0 when ``key`` may still try, else the seconds until its next try."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return 0.0
            bucket.tokens = min(bucket.burst, bucket.tokens + max(0.0, now - bucket.stamp) * bucket.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                return 0.0
            return (1.0 - bucket.tokens) / bucket.rate if bucket.rate > 0 else 60.0

    def failed(self, key: str) -> None:
        """Count one refused credential from ``key``."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._buckets.clear()  # bounded, like RateLimiter
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            bucket.take(now)


# -- the authenticator --------------------------------------------------------------------------


def csrf_token_of(principal: Principal | None) -> str:
    """The CSRF value to embed in forms for this principal ('' without a session)."""
    return principal.csrf or "" if principal else ""


class Authenticator:
    """Checks credentials and issues tokens and sessions (see the module docstring)."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        clock: Callable[[], float] = time.time,
        key_source: KeySource | None = None,
        vault_client: Any = None,
    ) -> None:
        self.config = config
        self._clock = clock
        if key_source is None:
            if config.jwt_key_file is not None:
                key_source = FileKeySource(config.jwt_key_file)
            elif config.jwt_vault_path and vault_client is not None:
                key_source = VaultKeySource(vault_client, config.jwt_vault_path)
        if key_source is None:
            # No configured key: an ephemeral one, so sessions work but do not survive a restart.
            log.warning("no JWT key configured: using an ephemeral key (tokens die with the process)")
            key_source = _EphemeralKey()
        grace = max(config.token_ttl, config.session_ttl) + _MAX_CLOCK_SKEW
        self.keys = KeyRing(key_source, grace=grace, clock=clock, check_seconds=config.reload_check_seconds)
        self.api_keys = (
            ApiKeyFile(config.api_keys_file, check_seconds=config.reload_check_seconds)
            if config.api_keys_file
            else None
        )
        self.users = (
            UserFile(config.users_file, check_seconds=config.reload_check_seconds)
            if config.users_file
            else None
        )
        self._proxies = [ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies]
        self._revoked: dict[str, float] = {}
        self._revoked_lock = threading.Lock()

    # -- tokens ---------------------------------------------------------------------------------
    def issue_token(
        self, subject: str, role: Role, *, ttl: float | None = None, session: bool = False
    ) -> str:
        """A signed JWT for ``subject``; ``session`` tokens are only valid as the session cookie."""
        key = self.keys.current
        now = int(self._clock())
        life = ttl if ttl is not None else (self.config.session_ttl if session else self.config.token_ttl)
        claims: dict[str, Any] = {
            "iss": self.config.issuer,
            "aud": self.config.audience + (_SESSION_AUD_SUFFIX if session else ""),
            "sub": subject,
            "role": role,
            "iat": now,
            "nbf": now,
            "exp": now + int(life),
            "jti": uuid.uuid4().hex,
        }
        if session:
            claims["csrf"] = secrets.token_urlsafe(24)
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid})

    def verify_token(self, token: str, *, session: bool = False) -> dict[str, Any]:
        """The claims of a valid token (raises :class:`AuthError`; messages never echo the token)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("token has no key id")
        key = self.keys.find(kid)
        if key is None:
            raise AuthError("token signed by an unknown key")
        if header.get("alg") != key.alg:
            raise AuthError("token algorithm does not match its key")
        audience = self.config.audience + (_SESSION_AUD_SUFFIX if session else "")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                audience=audience,
                issuer=self.config.issuer,
                # Times are checked below against the injected clock.
                options={
                    "require": ["exp", "iat", "iss", "aud", "sub"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {type(exc).__name__}") from None
        now = self._clock()
        try:
            exp, iat = float(claims["exp"]), float(claims["iat"])
            nbf = float(claims.get("nbf", iat))
        except (TypeError, ValueError):
            raise AuthError("invalid token: bad time claims") from None
        if now >= exp:
            raise AuthError("token expired")
        if iat > now + _MAX_CLOCK_SKEW or nbf > now + _MAX_CLOCK_SKEW:
            raise AuthError("token not valid yet")
        if claims.get("role") not in ROLES or not isinstance(claims.get("sub"), str):
            raise AuthError("invalid token: bad role or subject")
        jti = claims.get("jti")
        if isinstance(jti, str) and jti in self._revoked:
            raise AuthError("token revoked")
        return claims

    def revoke(self, claims: Mapping[str, Any]) -> None:
        """Refuse this token (a logged-out session) until it would have expired anyway."""
        jti = claims.get("jti")
        if not isinstance(jti, str):
            return
        now = self._clock()
        with self._revoked_lock:
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
            self._revoked[jti] = float(claims.get("exp", now))

    # -- credentials ----------------------------------------------------------------------------
    def from_bearer(self, token: str) -> Principal:
        """The principal of a bearer JWT."""
        claims = self.verify_token(token)
        return Principal(claims["sub"], claims["role"], "jwt")

    def from_api_key(self, key: str) -> Principal:
        """The principal of an API key."""
        if self.api_keys is None:
            raise AuthError("API keys are not enabled")
        entry = self.api_keys.verify(key, self._clock())
        return Principal(f"key:{entry.id}", entry.role, "api_key")

    def from_session(self, cookie: str) -> Principal:
        """The principal of a session cookie (with its CSRF value)."""
        claims = self.verify_token(cookie, session=True)
        csrf = claims.get("csrf")
        if not isinstance(csrf, str):
            raise AuthError("invalid session")
        return Principal(claims["sub"], claims["role"], "session", csrf=csrf)

    def from_sso(self, peer: str | None, headers: Mapping[str, str]) -> Principal | None:
        """The principal named by the trusted SSO header, when the peer is a trusted proxy."""
        name = self.config.sso_header
        if not name or not peer or not self._proxies:
            return None
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return None
        if not any(addr in net for net in self._proxies):
            return None
        user = headers.get(name.lower(), "").strip()
        if not user:
            return None
        role: str = self.config.sso_default_role
        if self.config.sso_role_header:
            asked = headers.get(self.config.sso_role_header.lower(), "").strip().lower()
            if asked in ROLES:
                role = asked
        return Principal(user[:256], role, "sso")  # type: ignore[arg-type]

    def login(self, username: str, password: str) -> Principal:
        """Check a local user's password (raises :class:`AuthError`)."""
        if self.users is None:
            raise AuthError("local login is not enabled")
        user = self.users.verify(username, password)
        return Principal(user.name, user.role, "session")

    def known_user(self, name: str) -> bool:
        """Whether a local user of that name exists (audit a failed login under the name only then:
        an unknown "name" is often a password typed into the wrong field)."""
        return self.users is not None and name in self.users.users

    def authenticate(
        self,
        *,
        authorization: str | None,
        api_key: str | None,
        session: str | None,
        peer: str | None,
        headers: Mapping[str, str],
    ) -> Principal | None:
        """The caller, from the first credential present; None when there is none."""
        if authorization:
            scheme, _, value = authorization.partition(" ")
            value = value.strip()
            if scheme.lower() == "bearer" and value:
                return self.from_bearer(value)
            if scheme.lower() == "apikey" and value:
                return self.from_api_key(value)
            raise AuthError("unsupported authorization scheme")
        if api_key:
            return self.from_api_key(api_key)
        if session:
            return self.from_session(session)
        return self.from_sso(peer, headers)


class _EphemeralKey:
    """A process-lifetime Ed25519 key for when none is configured."""

    def __init__(self) -> None:
        self._pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def version(self) -> object:
        return 1

    def read(self) -> bytes:
        return self._pem


def generate_pem(kind: Literal["ed25519", "rsa", "ec"] = "ed25519") -> bytes:
    """A new PEM private key (PKCS#8) for ``JWT_KEY_FILE``."""
    key: SigningKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
