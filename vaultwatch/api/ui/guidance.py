"""What the pages say about alerts beyond the contract: evidence counts, outcome words, next
steps per detector, and the grouping of a bootstrap's configuration changes in the queue.

All of it is pure (no store, no archive) so the rules are tested on their own.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from alerts.store import to_epoch
from detect.alert import Alert, severity_rank

__all__ = [
    "CONFIG_DETECTORS",
    "SETUP_WINDOW_S",
    "AlertGroup",
    "Step",
    "evidence_count",
    "group_setup",
    "group_setup_across",
    "next_steps",
    "outcome_text",
]

#: Outcomes of the archive in words an analyst reads without the format reference.
_OUTCOMES: Final = {
    "ok": "allowed",
    "denied": "denied (no permission)",
    "login_failed": "failed login",
    "error": "error",
    "pending": "request logged, no response recorded",
}

#: Detectors that report a change to Vault's configuration (policies, auth methods, secrets
#: engines, AppRole roles, identity entities and groups, audit devices).
CONFIG_DETECTORS: Final = frozenset(
    {
        "policy-change",
        "auth-method-change",
        "secrets-engine-change",
        "approle-role-change",
        "identity-change",
        "audit-tampering",
    }
)
#: Changes within this long of an identity's first activity are its initial configuration.
SETUP_WINDOW_S: Final = 3600.0
_FAILED: Final = frozenset({"denied", "error", "login_failed"})
_SECRETLESS_PREFIXES: Final = ("sys/", "auth/", "identity/", "cubbyhole/")


def outcome_text(outcome: str | None) -> str:
    """``pending`` -> ``request logged, no response recorded``, ``ok`` -> ``allowed`` and so on."""
    return _OUTCOMES.get(outcome or "", outcome or "unknown")


def evidence_count(alert: Alert) -> int:
    """How many audit requests stand behind the alert.

    ``count`` in the contract is how many times the detector reported (a brute force that went on
    after its first report is still one report), so the pages show the requests the alert holds
    (its event ids), or ``count`` for an alert that carries none.
    """
    return len(alert.event_ids) or alert.count


def _setup_change(alert: Alert) -> bool:
    if alert.detector not in CONFIG_DETECTORS or severity_rank(alert.severity) > severity_rank("medium"):
        return False
    if alert.labels.get("outcome") in _FAILED:
        return False  # a refused change is an attempt, not configuration
    # Of the audit-device changes only adding one is setup; a disable or a change is tampering.
    return alert.detector != "audit-tampering" or alert.labels.get("kind") == "add"


@dataclass
class AlertGroup:
    """Configuration changes one identity made in its first hour, shown as one queue row."""

    identity: str
    members: list[Alert] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return max((m.severity for m in self.members), key=severity_rank)

    @property
    def first_seen(self) -> str:
        return min(self.members, key=lambda m: to_epoch(m.first_seen)).first_seen

    @property
    def last_seen(self) -> str:
        return max(self.members, key=lambda m: to_epoch(m.last_seen)).last_seen

    @property
    def kinds(self) -> list[tuple[str, int]]:
        out: dict[str, int] = {}
        for m in self.members:
            out[m.detector] = out.get(m.detector, 0) + 1
        return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))


def group_setup(
    alerts: Sequence[Alert], starts: Mapping[str, float], *, minimum: int = 2
) -> list[Alert | AlertGroup]:
    """The queue's rows: each identity's initial configuration changes folded into one group.

    An alert joins its identity's group when it is a configuration change (see
    :data:`CONFIG_DETECTORS`) of at most medium severity that succeeded, raised within
    :data:`SETUP_WINDOW_S` of the identity's first activity (``starts``, epoch seconds; the
    earliest alert of the identity on the page when unknown). Anything else, a root token's use
    included, stays its own row, and a group of fewer than ``minimum`` alerts is no group. The
    group takes the place of its first member, so the queue's order is kept.
    """
    first: dict[str, float] = {}
    for a in alerts:
        t = to_epoch(a.first_seen)
        first[a.identity.key] = min(first.get(a.identity.key, t), t)
    groups: dict[str, AlertGroup] = {}
    for a in alerts:
        key = a.identity.key
        start = min(starts.get(key, first[key]), first[key])
        if _setup_change(a) and to_epoch(a.first_seen) - start <= SETUP_WINDOW_S:
            groups.setdefault(key, AlertGroup(identity=key)).members.append(a)
    grouped = {id(m) for g in groups.values() if len(g.members) >= minimum for m in g.members}
    rows: list[Alert | AlertGroup] = []
    placed: set[str] = set()
    for a in alerts:
        if id(a) not in grouped:
            rows.append(a)
        elif a.identity.key not in placed:
            placed.add(a.identity.key)
            rows.append(groups[a.identity.key])
    return rows


def group_setup_across(
    items: Sequence[Alert],
    whole: Mapping[str, Sequence[Alert]],
    starts: Mapping[str, float],
    *,
    minimum: int = 2,
) -> list[Alert | AlertGroup]:
    """The rows of one queue page when an identity's setup changes run over several pages.

    ``whole`` holds, per identity with a configuration change on the page, all its configuration
    changes in the queue (same filters and order). Groups are made from those (see
    :func:`group_setup`), so a group holds every member whichever page it falls on; it is shown
    once, in place of its first member in the queue's order. On a later page its members are
    left out (they are in the group on the page of that first member), and an alert that no
    group takes keeps its own row.
    """
    on_page = {a.id for a in items}
    placed: dict[str, AlertGroup] = {}
    hidden: set[str] = set()
    for key, alerts in whole.items():
        for row in group_setup(alerts, starts, minimum=minimum):
            if not isinstance(row, AlertGroup) or row.identity != key:
                continue
            anchor = row.members[0]
            if anchor.id in on_page:
                placed[anchor.id] = row
            hidden.update(m.id for m in row.members)
    rows: list[Alert | AlertGroup] = []
    for a in items:
        if a.id in placed:
            rows.append(placed[a.id])
        elif a.id not in hidden:
            rows.append(a)
    return rows


@dataclass(frozen=True)
class Step:
    """One thing to do about an alert, with the command that does it (or starts it) when there is one."""

    text: str
    command: str | None = None
    link: str | None = None


def _secret_paths(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if p and not p.startswith(_SECRETLESS_PREFIXES)]


def _common_prefix(paths: Sequence[str]) -> str:
    if len(paths) == 1:
        return paths[0]
    parts = [p.split("/") for p in paths]
    common: list[str] = []
    for segs in zip(*parts, strict=False):
        if len(set(segs)) != 1:
            break
        common.append(segs[0])
    return "/".join(common) + "/" if common else ""


def _exposure_path(alert: Alert, ui_prefix: str) -> list[Step]:
    secrets = _secret_paths(alert.paths)
    if not secrets:
        return []
    target = _common_prefix(secrets) or secrets[0]
    shown = ", ".join(secrets[:3]) + (" …" if len(secrets) > 3 else "")
    return [
        Step(
            f"Rotate what was read ({shown}) if the reader should not have it, and list everyone "
            "else who read it since its last rotation.",
            f"vaultwatch exposure --path {shlex.quote(target)} --since-last-rotation",
            f"{ui_prefix}/exposure?path={target}&since_last_rotation=true",
        )
    ]


def _cut_off(alert: Alert) -> list[Step]:
    ident = alert.identity
    if ident.entity_id or ident.key.startswith("entity:"):
        eid = ident.entity_id or ident.key.removeprefix("entity:")
        return [
            Step(
                "If the owner did not do this, disable the entity: every token it holds stops working.",
                f"vault write identity/entity/id/{shlex.quote(eid)} disabled=true",
            )
        ]
    if ident.key.startswith(("token:", "root:", "accessor:")):
        return [
            Step(
                "If the token is not its owner's, list everything done with it, then revoke it by "
                "its accessor (the audit log holds only its HMAC: take the accessor from the owner "
                "or from `vault list auth/token/accessors`).",
                'vaultwatch exposure --accessor ACCESSOR --addr "$VAULT_ADDR"',
            ),
            Step("Revoke it.", "vault token revoke -accessor ACCESSOR"),
        ]
    return []


def next_steps(alert: Alert, ui_prefix: str = "/ui") -> list[Step]:
    """What an analyst does about this alert, by detector (generic over mounts and names)."""
    d = alert.detector
    ident = alert.identity
    steps: list[Step] = []
    if d in ("root-token-use", "orphan-token", "token-privilege-escalation", "token-excessive-ttl"):
        steps.append(
            Step(
                "Confirm this is an approved break-glass or setup session; a root token outside one "
                "is revoked, and a new one is generated only when needed.",
                "vault operator generate-root -init",
            )
        )
        steps += _cut_off(alert)
        steps += _exposure_path(alert, ui_prefix)
    elif d in CONFIG_DETECTORS:
        what = ", ".join(alert.paths[:3]) or "the changed object"
        steps.append(
            Step(
                f"Match the change to {what} against a change request; if there is none, revert it "
                "and treat the identity as compromised.",
                f"vault read {shlex.quote(alert.paths[0])}" if alert.paths else None,
            )
        )
        if d == "audit-tampering":
            steps.append(
                Step("Check that every audit device is enabled and writing.", "vault audit list -detailed")
            )
        steps += _cut_off(alert)
    elif d in ("login-failure-burst", "credential-stuffing"):
        who = ident.display_name or ident.key
        addrs = ", ".join(alert.source_addresses[:5]) or "the source addresses"
        steps.append(
            Step(
                f"Check whether a login for {who} succeeded after the failures; if so, treat that "
                f"session as stolen. Block or investigate {addrs}.",
            )
        )
        if ident.auth_mount:
            steps.append(Step(f"Reset or lock the account on {ident.auth_mount} if it is a person's."))
    else:
        steps += _exposure_path(alert, ui_prefix)
        steps.append(Step("Ask the identity's owner whether this was them and expected."))
        steps += _cut_off(alert)
    return steps
