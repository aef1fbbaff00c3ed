"""Identity resolution and outcome classification, done once per entry.

The priority order follows what audit entries can prove (see the format reference, section 4):
``entity_id`` is stable across logins and token rotation; a token without an entity is known by
its display name (which embeds the auth mount), so that the successive tokens of one named caller
(``token-ci-bot``, created afresh by each pipeline run) stay one identity on purpose. A display
name that names nobody is not used alone: Vault's default ``token`` (``auth/token/create``
without a name) and hvac's default ``token-token`` are shared by every unnamed token, so such a
token is keyed by its accessor (or, without one, its token), as is a token with no display name.
An unauthenticated login is attributed to its target (``auth/userpass/login/alice`` gives
``login:userpass:alice``), so that brute force against one account groups together whatever
address it comes from.

The accessor and token in a key are the HMACs the device wrote, or vaultwatch's keyed hash of a
value written in clear (the parser replaces those first, see :func:`ingest.redact.pseudonym`);
keys carry a 16-hex-digit prefix of them, never a raw value.
"""

from __future__ import annotations

from typing import Final

from .event import Auth, Identity, Request, Response

__all__ = [
    "resolve_identity",
    "classify_outcome",
    "split_address",
    "parse_port",
    "valid_port",
    "login_target",
    "LOGIN_FAILURE_ERRORS",
    "MAX_PORT",
    "GENERIC_DISPLAY_NAMES",
    "short_hash",
    "auth_role_name",
]

#: The largest TCP/UDP port. A port outside ``0..MAX_PORT`` is not a port: it is dropped, not kept.
MAX_PORT: Final = 65535

#: Error substrings that mean a login was refused (``sdk/logical/error.go`` and auth plugins).
LOGIN_FAILURE_ERRORS: Final = (
    "invalid credentials",
    "invalid username or password",
    "invalid role or secret id",
    "invalid role_id",
    "invalid secret id",
    "failed to validate credentials",
    "permission denied",
)
_WRAPPING_POLICY: Final = "response-wrapping"
#: Display names that every unnamed token shares: Vault's default for ``auth/token/create`` and
#: the one hvac sends by default (Vault prefixes ``token-``). They identify nobody on their own.
GENERIC_DISPLAY_NAMES: Final = frozenset({"token", "token-token"})
_SHORT: Final = 16
_MAX_ROLE_NAME: Final = 256
# Login endpoints whose last path segment names the account.
_NAMED_LOGIN_MOUNT_TYPES: Final = frozenset({"userpass", "ldap", "okta", "radius"})


def parse_port(text: str) -> int | None:
    """A port from 1 to 5 ASCII digits in ``0..MAX_PORT``, else None.

    ``str.isdigit`` alone is not enough: it accepts superscripts and other Unicode digits, some
    of which ``int`` refuses, and ``int`` refuses strings past 4,300 digits.

    >>> parse_port("8200"), parse_port("\u00b2"), parse_port("65536"), parse_port("9" * 5000)
    (8200, None, None, None)
    """
    if 0 < len(text) <= 5 and text.isascii() and text.isdigit():
        port = int(text)
        return port if port <= MAX_PORT else None
    return None


def valid_port(port: int | None) -> int | None:
    """``port`` when it is in ``0..MAX_PORT``, else None."""
    return port if port is not None and 0 <= port <= MAX_PORT else None


def split_address(addr: str | None) -> tuple[str | None, int | None]:
    """Split ``ip``, ``ip:port`` or ``[v6]:port`` into (ip, port). Bare IPv6 stays whole.

    A port that is not 1-5 ASCII digits in ``0..65535`` is dropped (the address is kept).
    """
    if not addr:
        return None, None
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            return addr, None
        host, rest = addr[1:end], addr[end + 1 :]
        if rest.startswith(":"):
            return host, parse_port(rest[1:])
        return host, None
    if addr.count(":") == 1:
        host, _, port = addr.partition(":")
        return host, parse_port(port)
    return addr, None


def login_target(path: str, req: Request) -> tuple[str, str] | None:
    """``(mount, name)`` for a login request path, or None when the path is not a login.

    ``auth/<mount>/login/<name>`` names the account in the URL (userpass, ldap, okta, radius).
    ``auth/<mount>/login`` (AppRole, JWT, Kubernetes, cert) names it in the body; the body is
    HMAC'd, which is still a stable per-device value, so it is used as the name.
    """
    if not path.startswith("auth/"):
        return None
    rest = path[5:]
    idx = rest.find("/login")
    if idx <= 0:
        return None
    mount = rest[:idx]
    tail = rest[idx + 6 :]
    if tail.startswith("/") and len(tail) > 1:
        return mount, tail[1:]
    if tail:
        return None
    data = req.data or {}
    for field in ("role_id", "role", "username", "name"):
        value = data.get(field)
        if isinstance(value, str) and value:
            # HMAC'd: a stable per-device value. Plaintext (log_raw) was redacted before this.
            short = value[12:28] if value.startswith("hmac-sha256:") else "redacted"
            return mount, f"{field}={short}"
    return mount, "?"


def short_hash(value: str | None) -> str | None:
    """A 16-hex-digit handle of an HMAC'd (or vaultwatch-hashed) token or accessor, else None.

    Only hashes are used: a plaintext value never reaches here (the parser hashes it first), and
    a masked or redacted one names no token.

    >>> short_hash("hmac-sha256:0123456789abcdef0123"), short_hash("hmac-sha256:vw:fedcba9876543210ff")
    ('0123456789abcdef', 'fedcba9876543210')
    >>> short_hash("****") is None and short_hash(None) is None
    True
    """
    if not value or not value.startswith("hmac-sha256:"):
        return None
    hexpart = value[12:]
    if hexpart.startswith("vw:"):
        hexpart = hexpart[3:]
    return hexpart[:_SHORT] or None


def auth_role_name(auth: Auth) -> str | None:
    """The AppRole role a token was issued for, from ``auth.metadata.role_name``, else None.

    AppRole writes it in clear on every token (``{"role_name": "deployer"}``; the format notes,
    section 4). A value that is not a plain name (a hash, an empty or over-long string) is none.

    >>> auth_role_name(Auth(display_name="approle", metadata={"role_name": "deployer"}))
    'deployer'
    >>> auth_role_name(Auth(metadata={"role_name": "hmac-sha256:ab12"})) is None
    True
    """
    value = (auth.metadata or {}).get("role_name")
    if not isinstance(value, str) or not value or len(value) > _MAX_ROLE_NAME:
        return None
    return None if value.startswith("hmac-sha256:") else value


def _token_handle(auth: Auth) -> str:
    """``#<accessor hash>``, else ``~<token hash>``, else ``?``: which token, without its value."""
    acc = short_hash(auth.accessor)
    if acc is not None:
        return f"#{acc}"
    tok = short_hash(auth.client_token)
    return f"~{tok}" if tok is not None else "?"


def _is_authenticated(auth: Auth) -> bool:
    return bool(auth.client_token or auth.display_name or auth.entity_id or auth.accessor)


def resolve_identity(auth: Auth, req: Request, path: str, remote_ip: str | None) -> Identity:
    """Resolve the identity key of an entry; see :class:`~ingest.event.Identity`."""
    policies = auth.policies or ()
    if auth.entity_id or _is_authenticated(auth):
        token_type = auth.token_type
        is_root = "root" in policies
        is_wrapping = policies == (_WRAPPING_POLICY,)
        is_batch = token_type == "batch"
        dn = auth.display_name
        if auth.entity_id:
            return Identity(
                key=f"entity:{auth.entity_id}",
                kind="entity",
                entity_id=auth.entity_id,
                display_name=dn,
                auth_mount=req.mount_point if _login_mount(path) else None,
                policies=policies,
                token_type=token_type,
                accessor=auth.accessor,
                client_id=req.client_id,
                metadata=auth.metadata,
                is_root=is_root,
                is_wrapping=is_wrapping,
                is_batch=is_batch,
                role_name=auth_role_name(auth),
            )
        mount = "auth/token/" if dn and (dn == "token" or dn.startswith("token-")) else None
        # A generic or missing display name names no one: the token itself does.
        name = f"{dn or ''}{_token_handle(auth)}" if not dn or dn in GENERIC_DISPLAY_NAMES else dn
        return Identity(
            key=f"root:{name}" if is_root else f"token:{name}",
            kind="root" if is_root else "token",
            display_name=dn,
            auth_mount=mount,
            policies=policies,
            token_type=token_type,
            accessor=auth.accessor,
            client_id=req.client_id,
            metadata=auth.metadata,
            is_root=is_root,
            is_wrapping=is_wrapping,
            is_batch=is_batch,
            role_name=auth_role_name(auth),
        )
    target = login_target(path, req)
    if target is not None:
        mount, name = target
        return Identity(
            key=f"login:{mount}:{name}",
            kind="login",
            display_name=name,
            auth_mount=f"auth/{mount}/",
            client_id=req.client_id,
        )
    return Identity(key=f"anon:{remote_ip or '?'}", kind="anonymous", client_id=req.client_id)


def _login_mount(path: str) -> bool:
    return path.startswith("auth/") and "/login" in path


def classify_outcome(kind: str, error: str | None, auth: Auth, resp: Response | None, path: str) -> str:
    """``ok``, ``denied``, ``login_failed``, ``error`` or ``pending``.

    No HTTP status is logged, so the outcome is worked out from the top-level ``error``, the ACL
    result, and the *presence* of ``response.data.error`` (its value is HMAC'd).
    """
    pr = auth.policy_results
    is_login = _login_mount(path)
    if error:
        low = error.lower()
        if is_login and any(s in low for s in LOGIN_FAILURE_ERRORS):
            return "login_failed"
        if "permission denied" in low:
            return "denied"
        return "error"
    if pr is not None and pr.allowed is False:
        return "denied"
    if resp is None:
        return "pending" if kind.endswith("request") else "ok"
    if resp.data is not None and "error" in resp.data:
        if is_login and resp.auth is None:
            return "login_failed"
        return "error"
    return "ok"
