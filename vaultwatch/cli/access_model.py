"""``vaultwatch access-model suggest``: a starting access model from a live Vault and/or logs.

The access model (roles, protected paths, rotation; the schema of ``detect/policy_data.py``) is
what ``access-model-violation`` and ``rotation-overdue`` enforce. Writing it by hand for an
organisation one does not know is where drift starts, so this verb proposes one:

* from Vault (``--vault-addr``/``--token-file`` or ``[vault]`` of ``--config``): every ACL policy
  (what it grants), the secrets mounts and the auth roles (their policies and token TTLs);
* from N days of audit logs (``FILE...``): what each peer group (identities sharing a policy set
  or an auth role) actually read and wrote.

A machine peer group that only reads a few secret areas becomes a confined consumer role (CI-like
when its tokens live an hour or less, runtime-like otherwise); people (userpass, LDAP, OIDC, ...)
with no grant on those areas become the developer-like role; the areas consumers read become
``protected``; secrets rewritten on a steady cadence become rotation classes. Every choice is
written as a comment to review. Groups it cannot place are listed in the report.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "propose a starting access model (roles, protected paths, rotation) from Vault and/or logs"
DESCRIPTION = """\
Write a starting access-model TOML (the format of --policy / [detect] policy_file) from what a
live Vault grants and/or what N days of audit logs show, plus a report of the identities it
could not place. Review every commented choice before using the file.

examples:
  vaultwatch access-model suggest --vault-addr https://vault:8200 --token-file ~/.vault-token --out model.toml
  vaultwatch access-model suggest /var/log/vault/audit.log* --days 14 --out model.toml
  vaultwatch access-model suggest audit.log --config vaultwatch.toml --out model.toml --report unplaced.json
  vaultwatch replay audit.log --policy model.toml --alerts-out alerts.jsonl   # then use it
"""

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "print_drift", "suggest_model", "Group"]

_HUMAN_METHODS = frozenset({"userpass", "ldap", "oidc", "github", "okta", "radius"})
_SYSTEM = ("sys/", "auth/", "identity/", "cubbyhole/")
_CI_TTL = 3600.0
_MAX_AREAS = 3  # a consumer reads a few areas; more is not a confined role


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser(
        "suggest",
        help="write a starting access-model TOML",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("files", nargs="*", metavar="FILE", help="audit log files (plain or .gz)")
    s.add_argument("--days", type=float, default=None, help="use only the last N days of the logs")
    s.add_argument("--vault-addr", metavar="URL", help="Vault/OpenBao address to read policies from")
    s.add_argument("--token-file", metavar="PATH", help="file holding a token for --vault-addr")
    s.add_argument("--config", metavar="TOML", help="vaultwatch configuration whose [vault] to use")
    s.add_argument("--out", metavar="PATH", help="write the model here (default: standard output)")
    s.add_argument("--report", metavar="PATH", help="also write the placement report as JSON here")
    s.add_argument("--prefix", help="the audit device's `prefix` option, if one is set")


# -- collecting ----------------------------------------------------------------------------------
@dataclass
class Group:
    """A peer group: identities Vault treats alike (one policy set or auth role)."""

    key: str
    policies: tuple[str, ...] = ()
    auth_mount: str | None = None
    role_name: str | None = None
    human: bool = False
    members: set[str] = field(default_factory=set)
    events: int = 0
    reads: Counter[str] = field(default_factory=Counter)  # logical area glob -> reads
    writes: Counter[str] = field(default_factory=Counter)
    max_ttl: float | None = None
    grants_read: set[str] = field(default_factory=set)  # from Vault: logical globs read-only
    grants_write: set[str] = field(default_factory=set)
    from_vault: bool = False


def _area(inner: str) -> str:
    idx = inner.rfind("/")
    return (inner[: idx + 1] if idx >= 0 else "") + "*"


def _group_for(groups: dict[str, Group], ident: Any) -> Group:
    from detect.policy import peer_group

    key = peer_group(ident)
    g = groups.get(key)
    if g is None:
        md = ident.metadata or {}
        role = md.get("role_name") or md.get("role")
        dn = ident.display_name or ""
        method = dn.split("-", 1)[0] if dn else ""
        g = groups[key] = Group(
            key=key,
            policies=tuple(sorted(p for p in ident.policies if p != "default")),
            auth_mount=ident.auth_mount or (f"auth/{method}/" if method and method != "token" else None),
            role_name=role if isinstance(role, str) else None,
            human=method in _HUMAN_METHODS,
        )
    return g


def collect_logs(files: list[Path], days: float | None, prefix: str | None) -> dict[str, Group]:
    """Peer groups and what they did, from audit logs (the last ``days`` of event time)."""
    from detect.policy import secret_target
    from ingest.parse import Parser
    from ingest.quarantine import MemoryQuarantine

    from ..service.replay import read_events

    rows: list[tuple[float, Any, str, str, bool]] = []
    for ev in read_events(files, parser=Parser(prefix=prefix), quarantine=MemoryQuarantine()):
        ident = ev.identity
        if not ev.is_response or ident.kind in ("login", "anonymous", "root"):
            continue
        t = secret_target(ev)
        inner = t.inner if not ev.path.startswith(_SYSTEM) else ""
        rows.append((ev.ts, ident, t.op, inner, ev.outcome == "ok"))
        ttl = ev.auth.token_ttl
        if ttl:
            rows.append((ev.ts, ident, "ttl", str(ttl), True))
    latest = max((r[0] for r in rows), default=0.0)
    cutoff = latest - days * 86400.0 if days else float("-inf")
    groups: dict[str, Group] = {}
    for ts, ident, op, inner, ok in rows:
        if ts < cutoff:
            continue
        g = _group_for(groups, ident)
        if op == "ttl":
            g.max_ttl = max(g.max_ttl or 0.0, float(inner))
            continue
        g.members.add(ident.key)
        g.events += 1
        if not inner or not ok:
            continue
        if op == "read":
            g.reads[_area(inner)] += 1
        elif op in ("create", "update", "patch", "delete"):
            g.writes[inner] += 1
    return groups


def add_vault(groups: dict[str, Group], access: Any) -> None:
    """Fold what Vault grants into the groups (and add a group per auth role never seen in logs)."""
    from detect.policy import _logical, policy_key

    def grants(policies: tuple[str, ...]) -> tuple[set[str], set[str]]:
        reads: set[str] = set()
        writes: set[str] = set()
        for name in policies:
            for rule in access.policies.get(name, ()):
                if rule.path.startswith(_SYSTEM) or "deny" in rule.capabilities:
                    continue
                logical, mount, segment = _logical(rule.path, access.mounts)
                if access.mounts.get(mount, "kv") not in ("kv", "kv-v2", "generic"):
                    continue
                inner = logical[len(mount) :] if mount else logical
                caps = set(rule.capabilities)
                if caps & {"create", "update", "patch", "delete", "sudo"} and segment != "metadata":
                    writes.add(inner or "*")
                elif "read" in caps and segment != "metadata":
                    reads.add(inner or "*")
        return reads, writes

    for role in access.auth_roles:
        if not role.policies:
            continue
        key = "policies:" + policy_key(role.policies)
        g = groups.get(key)
        if g is None:
            g = groups[key] = Group(key=key, policies=tuple(sorted(set(role.policies) - {"default"})))
        g.auth_mount = g.auth_mount or role.mount
        g.human = g.human or role.human
        if role.token_ttl is not None:
            g.max_ttl = max(g.max_ttl or 0.0, role.token_ttl)
    for g in groups.values():
        if g.policies and all(p in access.policies for p in g.policies):
            g.grants_read, g.grants_write = grants(g.policies)
            g.from_vault = True


# -- deciding ------------------------------------------------------------------------------------
@dataclass
class Suggestion:
    toml: str
    placed: list[dict[str, Any]]
    unplaced: list[dict[str, Any]]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "group"


def _q(s: str) -> str:
    return json.dumps(s)


def _unplaced(g: Group, why: str) -> dict[str, Any]:
    return {"group": g.key, "members": len(g.members), "why": why}


def suggest_model(groups: dict[str, Group], source: str) -> Suggestion:
    """The access-model TOML text and the placement report for ``groups``."""
    consumers: list[tuple[Group, str, list[str]]] = []
    developers: list[Group] = []
    unplaced: list[dict[str, Any]] = []
    for g in sorted(groups.values(), key=lambda g: g.key):
        reads = sorted(g.grants_read) if g.from_vault else sorted(g.reads)
        writes = sorted(g.grants_write) if g.from_vault else sorted(g.writes)
        basis = "Vault policies" if g.from_vault else "logs"
        if writes:
            unplaced.append(_unplaced(g, f"writes secrets ({basis}): " + ", ".join(writes[:5])))
        elif g.human:
            developers.append(g)
        elif not reads:
            unplaced.append(_unplaced(g, f"a machine identity that reads no secret ({basis}): role unknown"))
        elif len(reads) > _MAX_AREAS or any(r in ("*", "") for r in reads):
            unplaced.append(_unplaced(g, f"reads {len(reads)} areas ({basis}): too wide for a confined role"))
        else:
            kind = "ci" if g.max_ttl is not None and g.max_ttl <= _CI_TTL else "runtime"
            consumers.append((g, kind, reads))
    # Areas read by consumers are what the model protects; developers with a grant there are not
    # developer-like.
    protected = sorted({a for _, _, reads in consumers for a in reads})
    devs: list[Group] = []
    for g in developers:
        touched = [a for a in (g.grants_read if g.from_vault else set(g.reads)) if a in protected]
        if touched:
            unplaced.append(_unplaced(g, "people who read consumer areas: " + ", ".join(sorted(touched))))
        else:
            devs.append(g)
    lines = [
        "# vaultwatch access model: a STARTING POINT written by `vaultwatch access-model suggest`",
        f"# from {source}. Review every commented choice; nothing here is checked by a person yet.",
        "# Format: see detect/policy_data.py (the packaged model) and `vaultwatch replay --policy`.",
        "version = 1",
        "",
        "# Secret areas read by the confined consumer roles below. A glob matches the path inside",
        '# its mount as well as the full path; pin a mount with "mount/::glob" if needed.',
        f"protected = [{', '.join(_q(p) for p in protected)}]",
        "",
        "housekeeping = [",
        *(
            f"  {_q(h)},"
            for h in (
                "auth/token/lookup-self",
                "auth/token/renew-self",
                "auth/token/revoke-self",
                "sys/capabilities-self",
                "sys/leases/renew",
                "sys/renew",
                "auth/*/login",
                "auth/*/login/*",
            )
        ),
        "]",
    ]
    placed: list[dict[str, Any]] = []
    names: Counter[str] = Counter()
    for g, kind, reads in consumers:
        hint = g.role_name or (g.policies[0] if g.policies else g.key)
        name = f"{kind}-{_slug(hint)}"
        names[name] += 1
        if names[name] > 1:
            name = f"{name}-{names[name]}"
        ttl = f"token TTL {g.max_ttl:.0f}s" if g.max_ttl is not None else "token TTL unknown"
        why = f"{'Vault grants' if g.from_vault else 'logs show'} read-only on {', '.join(reads)}; {ttl}"
        lines += ["", "[[roles]]", f"name = {_q(name)}", f"# why: {why}; {len(g.members)} identities seen"]
        lines.append(
            f"description = {_q(('CI-like' if kind == 'ci' else 'runtime-like') + ' consumer (suggested)')}"
        )
        lines.append("confined = true")
        if kind == "ci":
            lines.append('max_token_ttl = "1h"')
        lines.append(f"match = [{_matcher(g)}]")
        lines.append(
            "allow = [" + ", ".join(f'{{ path = {_q(a)}, operations = ["read"] }}' for a in reads) + "]"
        )
        placed.append({"group": g.key, "role": name, "why": why, "members": len(g.members)})
    if devs or not consumers:
        mounts = sorted({g.auth_mount for g in devs if g.auth_mount})
        matchers = [f"{{ auth_mount = {_q(m)} }}" for m in mounts] or ['{ auth_mount = "auth/userpass/" }']
        lines += [
            "",
            "[[roles]]",
            'name = "developer"',
            "# why: people (human auth methods) with no grant on the protected areas",
            'description = "People: no direct access to the protected areas (suggested)"',
            f"match = [{', '.join(matchers)}]",
            "allow = []",
        ]
        for g in devs:
            placed.append({"group": g.key, "role": "developer", "why": "human auth, no protected grant",
                           "members": len(g.members)})  # fmt: skip
    lines += [
        "",
        "# Rotation: add [[rotation]] classes for secrets that must be rewritten on a schedule, e.g.",
        '# [[rotation]]\n# name = "signing-keys"\n# paths = ["<area>/jwt*"]\n# every = "1d"',
    ]
    text = "\n".join(lines) + "\n"
    return Suggestion(text, placed, unplaced)


def _matcher(g: Group) -> str:
    if g.role_name and g.auth_mount:
        return f"{{ auth_mount = {_q(g.auth_mount)}, metadata = {{ role_name = {_q(g.role_name)} }} }}"
    if g.policies:
        return ", ".join(f"{{ policy = {_q(p)} }}" for p in g.policies[:1])
    return f"{{ display_name = {_q(g.key.rsplit(':', 1)[-1])} }}"


# -- the verb ------------------------------------------------------------------------------------
def _vault(args: argparse.Namespace) -> Any:
    from ..vault.client import VaultAuth, VaultClient

    if args.vault_addr:
        if not args.token_file:
            raise SystemExit("vaultwatch access-model suggest: --vault-addr needs --token-file PATH")
        client = VaultClient(args.vault_addr, VaultAuth(method="token_file", token_file=args.token_file))
        client.login()
        return client
    if args.config:
        from ..settings import load_settings
        from ..vault.connect import vault_client

        settings = load_settings(args.config)
        if settings.vault is None:
            raise SystemExit(f"vaultwatch access-model suggest: {args.config} has no [vault] section")
        return vault_client(settings)
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``vaultwatch access-model``."""
    from detect.policy import PolicyError, parse_policy

    from ..errors import ConfigError
    from ..vault.client import VaultClientError
    from ..vault.roles import fetch_access

    err = sys.stderr
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"vaultwatch access-model suggest: no such file: {', '.join(missing)}", file=err)  # noqa: T201
        return 2
    if not files and not args.vault_addr and not args.config:
        print(  # noqa: T201
            "vaultwatch access-model suggest: nothing to learn from: pass audit log FILE... and/or "
            "--vault-addr URL --token-file PATH (or --config with a [vault] section)",
            file=err,
        )
        return 2
    sources: list[str] = []
    groups = collect_logs(files, args.days, args.prefix) if files else {}
    if files:
        sources.append(f"{len(files)} log file(s)" + (f", last {args.days:g} days" if args.days else ""))
    try:
        client = _vault(args)
    except (VaultClientError, ConfigError) as exc:
        print(  # noqa: T201
            f"vaultwatch access-model suggest: cannot use Vault: {exc}; check --vault-addr, the token "
            "file, or the [vault] section",
            file=err,
        )
        return 2
    if client is not None:
        try:
            access = fetch_access(client)
        except VaultClientError as exc:
            print(  # noqa: T201
                f"vaultwatch access-model suggest: cannot read Vault: {exc}; the token needs read and list "
                "on sys/policies/acl, sys/mounts, sys/auth and the auth roles",
                file=err,
            )
            return 2
        finally:
            client.close()
        add_vault(groups, access)
        sources.append(f"Vault at {access.addr} ({len(access.policies)} policies)")
    result = suggest_model(groups, " and ".join(sources))
    try:
        parse_policy(result.toml, "suggested model")
    except PolicyError as exc:  # a bug here, never the user's input
        print(f"vaultwatch access-model suggest: internal error, model does not parse: {exc}", file=err)  # noqa: T201
        return 1
    if args.out:
        Path(args.out).write_text(result.toml)
    else:
        sys.stdout.write(result.toml)
    report = {"placed": result.placed, "unplaced": result.unplaced}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    print(  # noqa: T201
        f"placed {len(result.placed)} peer group(s); could not place {len(result.unplaced)}"
        + (f" (see {args.report})" if args.report else ""),
        file=err,
    )
    for u in result.unplaced:
        print(f"  not placed: {u['group']} ({u['members']} identities): {u['why']}", file=err)  # noqa: T201
    return 0


def print_drift(console: Any, drift: dict[str, Any] | None) -> None:
    """The access-model drift warning (from :meth:`detect.drift.DriftReport.to_dict`); nothing when
    every glob matched or the stream was not busy."""
    if not drift or not drift.get("drifting"):
        return
    hours = float(drift["window_seconds"]) / 3600
    console.print(
        f"[yellow]warning:[/yellow] access model drift: these globs matched none of the "
        f"{drift['events']} events of the last {hours:.0f}h, so nothing under them is guarded:"
    )
    for d in drift["drifting"]:
        hint = f" -> looks like: {', '.join(d['suggestions'])} ({d['basis']})" if d["suggestions"] else ""
        console.print(f"  {d['kind']}: {d['glob']}{hint}", markup=False, highlight=False)
