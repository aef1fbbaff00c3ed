"""``vaultwatch check``: validate a Vault/OpenBao secrets setup before a deployment."""

from __future__ import annotations

import argparse
import json
import os
import sys

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


def _auth(args: argparse.Namespace) -> object:
    from ..vault.client import VaultAuth

    if args.token_file:
        return VaultAuth(method="token_file", token_file=args.token_file)
    if args.role_id:
        return VaultAuth(
            method="approle",
            role_id=args.role_id,
            secret_id_file=args.secret_id_file,
            mount=args.approle_mount,
        )
    if args.k8s_role:
        return VaultAuth(method="kubernetes", role=args.k8s_role)
    return VaultAuth(method="token", token=os.environ.get("VAULT_TOKEN"))


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..vault.client import VaultAuth, VaultClient, VaultClientError
    from ..vault.compliance import FAIL, WARN, load_spec, run_checks
    from .console import console

    err = console(stderr=True)
    try:
        spec = load_spec(args.spec)
        auth = _auth(args)
        assert isinstance(auth, VaultAuth)
        with VaultClient(args.addr, auth, namespace=args.namespace, verify=not args.tls_skip_verify) as vc:
            results = run_checks(vc, spec)
    except (ValueError, VaultClientError) as exc:
        err.print(f"[red]error:[/red] {exc}")
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
