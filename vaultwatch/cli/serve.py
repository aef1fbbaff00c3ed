"""``vaultwatch serve``: the analyst API and web UI."""

from __future__ import annotations

import argparse
import logging
from typing import Any

HELP = "the analyst API and web UI"
DESCRIPTION = """\
Serve the analyst API (/api/v1, OpenAPI at /openapi.json, docs at /docs) and, when installed, the
web UI, over the alert store and event archive named in the configuration. /healthz, /readyz and
/metrics need no credentials; everything else does.

Secrets are files, never values on the command line:
  JWT_KEY_FILE               PEM private key(s) signing tokens and sessions (Ed25519, RSA, EC);
                             the first key signs, the others verify; re-read when replaced
  API_KEYS_FILE              TOML [[keys]] or JSON: id, hash (sha256:<hex> or argon2), role,
                             not_after; re-read when replaced
  VAULTWATCH_API_USERS_FILE  TOML [[users]]: name, password_hash (argon2), role
Optional: VAULTWATCH_API_SSO_HEADER + VAULTWATCH_API_TRUSTED_PROXIES (CIDRs) for a trusted
login proxy (VAULTWATCH_API_SSO_ROLE_HEADER, VAULTWATCH_API_SSO_DEFAULT_ROLE), and
VAULTWATCH_API_COOKIE_SECURE=false for plain http on 127.0.0.1 only. Instead of JWT_KEY_FILE,
VAULTWATCH_API_JWT_VAULT_PATH=mount/path#field reads the PEM from a KV v2 secret with the
[vault] settings' login (re-read when its version changes).
Limits: VAULTWATCH_API_TOKEN_TTL, _SESSION_TTL (seconds), _RATE_PER_SECOND, _RATE_BURST (per
key), _LOGIN_RATE_PER_SECOND, _LOGIN_BURST (per address), _MAX_BODY_BYTES, _MAX_PAGE_SIZE,
_MAX_EVENT_RANGE_HOURS. Every one of these is also an [api.auth] key in the configuration file
(jwt_key_file, api_keys_file, users_file, sso_header, token_ttl...); the environment wins.

examples:
  vaultwatch serve --new-jwt-key ed25519 > /run/secrets/jwt_private_key
  vaultwatch serve --new-api-key soc-bot --role analyst >> api_keys.toml
  JWT_KEY_FILE=/run/secrets/jwt_private_key API_KEYS_FILE=/run/secrets/api_keys \\
      vaultwatch serve --config /etc/vaultwatch/vaultwatch.toml
  vaultwatch serve --host 127.0.0.1 --port 8080
"""

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (default $VAULTWATCH_CONFIG)")
    p.add_argument("--host", default=None, help="address to bind (default: [api] host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port to bind (default: [api] port, 8080)")
    tools = p.add_argument_group("secret tools (print and exit; nothing is stored)")
    tools.add_argument(
        "--new-api-key",
        metavar="ID",
        help="generate an API key: print it once on stderr and its API_KEYS_FILE entry on stdout",
    )
    tools.add_argument(
        "--role", choices=["viewer", "analyst", "admin"], default="viewer", help="role of --new-api-key"
    )
    tools.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password on stdin, print its argon2 hash for VAULTWATCH_API_USERS_FILE",
    )
    tools.add_argument(
        "--new-jwt-key",
        choices=["ed25519", "rsa", "ec"],
        help="print a new PEM private key for JWT_KEY_FILE",
    )


def _tools(args: argparse.Namespace) -> int | None:
    """The secret helpers; None when none was asked for."""
    import re
    import secrets
    import sys

    from ..api.auth import generate_pem, hash_api_key, hash_password

    if args.new_api_key is not None:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", args.new_api_key):
            print("error: the key id must be 1-64 letters, digits, '-' or '_'", file=sys.stderr)  # noqa: T201
            return 2
        key = f"{args.new_api_key}.{secrets.token_urlsafe(32)}"
        print(f"API key (shown once): {key}", file=sys.stderr)  # noqa: T201
        print(f'[[keys]]\nid = "{args.new_api_key}"\nhash = "{hash_api_key(key)}"\nrole = "{args.role}"')  # noqa: T201
        return 0
    if args.hash_password:
        password = sys.stdin.readline().rstrip("\r\n")
        if len(password) < 12:
            print("error: use a password of at least 12 characters", file=sys.stderr)  # noqa: T201
            return 2
        print(hash_password(password))  # noqa: T201
        return 0
    if args.new_jwt_key is not None:
        sys.stdout.write(generate_pem(args.new_jwt_key).decode())
        return 0
    return None


def run(args: argparse.Namespace) -> int:
    done = _tools(args)
    if done is not None:
        return done
    import uvicorn

    from ..api import AuthConfig, create_app
    from ..api.auth import AuthError
    from ..settings import ConfigError, load_settings
    from .console import console

    err = console(stderr=True)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        return 2
    host = args.host or settings.api.host
    port = args.port if args.port is not None else settings.api.port
    if not 0 < port < 65536:
        err.print(f"[red]error:[/red] port {port} is out of range")
        return 2
    vault = None
    try:
        auth = AuthConfig.from_settings(settings)
        if auth.jwt_key_file is None and auth.jwt_vault_path:
            vault = _vault_client(settings)
        elif settings.vault is not None:
            # Token exposure queries and entity names need Vault; the API serves without it.
            try:
                vault = _vault_client(settings)
            except Exception as exc:  # noqa: BLE001 - say why once, in one line
                err.print(
                    f"[yellow]warning:[/yellow] Vault unavailable ({type(exc).__name__}): "
                    "token exposure and entity names are off"
                )
        app = create_app(settings, auth=auth, vault_client=vault.hvac if vault else None)
    except AuthError as exc:
        err.print(f"[red]authentication setup failed:[/red] {exc}")
        return 2
    except Exception as exc:  # noqa: BLE001 - one line naming the cause, never a traceback
        err.print(f"[red]cannot start:[/red] {type(exc).__name__}")
        return 1
    try:
        shown = f"[{host}]" if ":" in host else host
        print(f"vaultwatch API on http://{shown}:{port}/ (docs at /docs)", flush=True)  # noqa: T201
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", proxy_headers=False)
        uvicorn.Server(config).run()
    finally:
        if vault is not None:
            vault.close()
    return 0


def _vault_client(settings: Any) -> Any:
    """A logged-in, self-renewing client for the JWT key in Vault (``[vault]`` settings)."""
    from ..api.auth import AuthError
    from ..service.wiring import vault_client

    if settings.vault is None:
        raise AuthError("VAULTWATCH_API_JWT_VAULT_PATH needs a [vault] section to log in with")
    return vault_client(settings, renew=True)
