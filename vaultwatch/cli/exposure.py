"""``vaultwatch exposure``: who and what a leaked secret or token reached."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime

HELP = "exposure scope of a secret path or a token, from the event archive"
DESCRIPTION = """\
Determine the exposure scope after a compromise, from vaultwatch's event archive.

For a secret path or prefix (--path): who read it, when, from which addresses and with which
tokens, since --since or since each secret's last rotation (--since-last-rotation).

For a token (--token-file, or --token-stdin) or an accessor (--accessor): the audit log holds only
HMACs, so vaultwatch asks each enabled audit device for the token's HMAC through the Vault API
(sys/audit-hash; needs update on sys/audit-hash/*) and lists every request made with it. The token
is never printed or stored; pass it through a file or stdin, not the command line.

The report lists the secrets to rotate and the identities whose owners to notify.

examples:
  vaultwatch exposure --archive var/archive --path logos/data/pxl-core/runtime/
  vaultwatch exposure --archive var/archive --path logos/pxl-core/runtime/jwt-key --since-last-rotation
  vaultwatch exposure --archive var/archive --token-file leaked.txt --addr $VAULT_ADDR --html out.html
  vaultwatch exposure --archive var/archive --identity userpass-dana     # someone is leaving
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", default="var/archive", help="event archive directory (default var/archive)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--path", help="secret path or prefix as the audit log shows it (e.g. logos/data/app/)")
    what.add_argument("--token-file", metavar="FILE", help="file holding the leaked token")
    what.add_argument("--token-stdin", action="store_true", help="read the leaked token from stdin")
    what.add_argument("--accessor", help="the leaked token's accessor")
    what.add_argument(
        "--identity",
        metavar="KEY_OR_NAME",
        help="every secret this identity read since its last rotation (offboarding: what to rotate)",
    )
    p.add_argument("--since", help="start of the window (ISO 8601, e.g. 2026-11-01T00:00:00Z)")
    p.add_argument("--until", help="end of the window (ISO 8601)")
    p.add_argument(
        "--since-last-rotation",
        action="store_true",
        help="for --path: count only reads after each secret's last successful write",
    )
    p.add_argument(
        "--addr",
        default=os.environ.get("VAULT_ADDR", "http://127.0.0.1:8200"),
        help="Vault address for audit-hash (token/accessor queries)",
    )
    p.add_argument(
        "--vault-token-file",
        metavar="FILE",
        help="token vaultwatch itself uses for audit-hash (default $VAULT_TOKEN)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--html", metavar="FILE", help="write the report as an HTML page")


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.table import Table

    from ..service.archive import ArchiveError, EventArchive
    from ..service.atomic import leftover, write_bytes_atomic
    from ..vault.client import VaultAuth, VaultClient, VaultClientError
    from ..vault.exposure import exposure_for_identity, exposure_for_path, exposure_for_token, render_html
    from .console import console

    err = console(stderr=True)
    if not Path(args.archive).is_dir():
        err.print(
            f"[red]error:[/red] no event archive at {args.archive}: pass --archive DIR, the directory "
            "`vaultwatch run` writes with [archive] enabled, or `vaultwatch replay FILE... --archive DIR`"
        )
        return 2
    try:
        start, end = _when(args.since), _when(args.until)
    except ValueError as exc:
        err.print(f"[red]error:[/red] bad time: {exc}")
        return 2
    archive = EventArchive(args.archive)
    try:
        if args.identity:
            report = exposure_for_identity(archive, args.identity, start=start, end=end)
        elif args.path:
            report = exposure_for_path(
                archive, args.path, start=start, end=end, since_last_rotation=args.since_last_rotation
            )
        else:
            token = None
            if args.token_file:
                token = Path(args.token_file).read_text().strip()
            elif args.token_stdin:
                token = sys.stdin.readline().strip()
            auth = (
                VaultAuth(method="token_file", token_file=args.vault_token_file)
                if args.vault_token_file
                else VaultAuth(method="token", token=os.environ.get("VAULT_TOKEN"))
            )
            with VaultClient(args.addr, auth) as vc:
                report = exposure_for_token(
                    archive, vc, token=token or None, accessor=args.accessor, start=start, end=end
                )
    except (ArchiveError, VaultClientError, ValueError, OSError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    finally:
        archive.close()
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.html:
        out = Path(args.html)
        interrupted = leftover(out)
        if interrupted is not None:
            err.print(
                f"the last write of {out} was interrupted ({interrupted} was left behind); "
                f"{out} is written again now"
            )
        # Whole or absent: written to <out>.partial and renamed, never a page that looks complete.
        write_bytes_atomic(out, render_html(report).encode("utf-8"))
        err.print(f"wrote {args.html}")
        return 0
    con = console()
    con.print(
        f"[b]Exposure of {report.target}[/b]: {report.events} requests, "
        f"{report.first_seen or '-'} .. {report.last_seen or '-'}"
    )
    st = Table(title="Secrets", title_justify="left")
    for col in ("path", "readers", "reads", "first read", "last read", "last write"):
        st.add_column(col)
    for s in report.secrets:
        st.add_row(
            s.path, str(s.readers), str(s.reads), s.first_read or "", s.last_read or "", s.last_write or "-"
        )
    con.print(st)
    it = Table(title="Identities", title_justify="left")
    for col in ("identity", "name", "first", "last", "reads", "denied", "addresses"):
        it.add_column(col)
    for i in report.identities:
        it.add_row(
            i.identity,
            i.display_name or "",
            i.first_access,
            i.last_access,
            str(i.reads),
            str(i.denied),
            ", ".join(i.addresses),
        )
    con.print(it)
    for n, a in enumerate(report.actions, 1):
        con.print(f"{n}. {a}")
    return 0
