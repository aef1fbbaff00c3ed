"""``vaultwatch check``: validate a Vault/OpenBao secrets setup before a deployment."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import VaultwatchError
from ..vault.client import VaultAuth

HELP = "pre-deployment checks through the Vault API: secrets, formats, audit devices, least privilege"
DESCRIPTION = """\
Validate a Vault or OpenBao secrets setup against a declarative spec (default: the LOGOS PXL
Core design: runtime/ and build/ secrets under the `logos` KV v2 mount).

Checks that every required secret exists and is readable by this identity and has the right
format (JWT signing key: a PEM private key of an allowed type and size; TLS: certificate parses,
matches its key, not expiring soon; API keys match a pattern; DB credentials present); that audit
logging is on (one device at least, two recommended, none with log_raw, no mount tuned with
audit_non_hmac_* keys); and that policies follow least privilege. Secret values are never printed.

Authentication: --token-file, or $VAULT_TOKEN, or AppRole (--role-id with --secret-id-file), or
Kubernetes (--k8s-role). The checking identity needs read on the secrets, sudo on sys/audit, and
read on sys/policies/acl, sys/mounts, sys/auth and the AppRole roles.

exit status: 0 all checks pass (warnings allowed), 1 a check failed, 2 usage or connection error.

examples:
  VAULT_TOKEN=... vaultwatch check --addr https://vault.example:8200
  vaultwatch check --addr $VAULT_ADDR --token-file /run/secrets/vault-token --json
  vaultwatch check --spec my-secrets.toml --addr $VAULT_ADDR --role-id ... --secret-id-file f
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--addr",
        default=os.environ.get("VAULT_ADDR", "http://127.0.0.1:8200"),
        help="Vault address (default: $VAULT_ADDR or http://127.0.0.1:8200)",
    )
    p.add_argument("--namespace", default=os.environ.get("VAULT_NAMESPACE"), help="Vault namespace")
    p.add_argument("--spec", metavar="FILE", help="check spec (TOML); overlays the built-in default")
    p.add_argument("--token-file", metavar="FILE", help="read the Vault token from FILE")
    p.add_argument("--role-id", help="AppRole role_id")
    p.add_argument("--secret-id-file", metavar="FILE", help="AppRole secret_id file")
    p.add_argument("--approle-mount", default="approle", help="AppRole mount (default approle)")
    p.add_argument("--k8s-role", help="Kubernetes auth role (JWT from the service account token)")
    p.add_argument("--tls-skip-verify", action="store_true", help="do not verify the server certificate")
    p.add_argument("--json", action="store_true", help="print results as JSON")


#: What to set when no credential was given (the user's next step, named in the error).
HOW_TO_AUTHENTICATE = (
    "set VAULT_TOKEN, or pass --token-file FILE, --role-id ID with --secret-id-file FILE (AppRole), "
    "or --k8s-role ROLE (Kubernetes)"
)


class UsageError(VaultwatchError, ValueError):
    """A missing or inconsistent option; the message names the option to set."""


def _auth(args: argparse.Namespace) -> VaultAuth:
    if args.token_file:
        return VaultAuth(method="token_file", token_file=args.token_file)
    if args.role_id:
        if not args.secret_id_file:
            raise UsageError("--role-id needs --secret-id-file FILE (the AppRole secret_id)")
        return VaultAuth(
            method="approle",
            role_id=args.role_id,
            secret_id_file=args.secret_id_file,
            mount=args.approle_mount,
        )
    if args.secret_id_file:
        raise UsageError("--secret-id-file needs --role-id ID (the AppRole role_id)")
    if args.k8s_role:
        return VaultAuth(method="kubernetes", role=args.k8s_role)
    token = os.environ.get("VAULT_TOKEN", "").strip()
    if not token:
        raise UsageError(f"no Vault credentials: {HOW_TO_AUTHENTICATE}")
    return VaultAuth(method="token", token=token)


def _hint(message: str, args: argparse.Namespace) -> str:
    """What to change for a failed login or call (the message says what went wrong)."""
    if "ConnectionError" in message or "Timeout" in message:
        return f"is Vault/OpenBao listening at {args.addr}? Set --addr or VAULT_ADDR"
    if "SSLError" in message:
        return "the server certificate was not accepted: fix the CA trust, or --tls-skip-verify (test only)"
    if "token_file" in message:
        return "--token-file must name a readable file holding the token"
    if "secret_id_file" in message:
        return "--secret-id-file must name a readable file holding the AppRole secret_id"
    if "jwt_file" in message:
        return "run inside a Kubernetes pod (service account token) for --k8s-role"
    if "login" in message or "Forbidden" in message or "permission denied" in message:
        source = (
            "--token-file"
            if args.token_file
            else "--role-id/--secret-id-file"
            if args.role_id
            else "--k8s-role"
            if args.k8s_role
            else "VAULT_TOKEN"
        )
        return f"the credentials from {source} were refused by {args.addr}; {HOW_TO_AUTHENTICATE}"
    return ""


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from ..vault.client import VaultClient, VaultClientError
    from ..vault.compliance import FAIL, WARN, load_spec, run_checks
    from .console import console

    err = console(stderr=True)
    try:
        spec = load_spec(args.spec)
        auth = _auth(args)
        with VaultClient(args.addr, auth, namespace=args.namespace, verify=not args.tls_skip_verify) as vc:
            results = run_checks(vc, spec)
    except (ValueError, VaultClientError) as exc:
        hint = "" if isinstance(exc, ValueError) else _hint(str(exc), args)
        err.print(
            f"[red]error:[/red] {escape(str(exc))}" + (f"\n[dim]hint:[/dim] {escape(hint)}" if hint else "")
        )
        return 2
    failed = [r for r in results if r.status == FAIL]
    if args.json:
        json.dump({"ok": not failed, "results": [r.to_dict() for r in results]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        t = Table(title=f"vaultwatch check: {args.addr}", title_justify="left")
        for col in ("status", "check", "target", "detail"):
            t.add_column(col)
        style = {FAIL: "red", WARN: "yellow"}
        for r in results:
            s = style.get(r.status)
            t.add_row(f"[{s}]{r.status}[/{s}]" if s else r.status, r.check, r.target, r.detail)
        console().print(t)
        warns = sum(r.status == WARN for r in results)
        console().print(f"{len(results)} checks: {len(failed)} failed, {warns} warnings")
    return 1 if failed else 0
