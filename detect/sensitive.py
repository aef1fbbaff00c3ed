"""``sensitive-first-access``: the first touch of a sensitive secret area by an identity whose
peers never touch it.

A *secret area* is a logical directory inside its mount (``logos/pxl-core/runtime/`` for
``logos/data/pxl-core/runtime/jwt-key``; see :func:`detect.policy.secret_target`). An area is
sensitive when

* the access model protects it (its ``protected`` globs, matched inside the mount and on the full
  path, see :func:`detect.policy.glob_match`), and it has been in use for at least
  ``sensitive_protected_min_days`` distinct days; or
* it is *owned*: one peer group's members made (nearly) all its successful reads
  (``sensitive_owner_share``), and that habit is established (``sensitive_owner_min_reads``
  reads by ``sensitive_owner_min_members`` members over ``sensitive_owner_min_days`` distinct
  days).

A single event alerts (no window, no delay) when an identity reads or lists a sensitive area, allowed
(``high``) or denied (``medium``) by Vault, and neither the identity nor its peer group (see
:func:`detect.policy.peer_group`: the policy set without ``default``, or the auth role) has
touched that area before. Nothing in it depends on how the organisation names its policies,
roles, mounts or paths: only on who has done what.

It stays quiet on the benign cases that look alike: a new member of a group reading what the
group reads (onboarding) or a new instance of a service (scale-out) — the group touched the
area; a job writing what it always writes (writes never alert here); a brand-new group of new
identities (a new service) whose first day is its own history, not a deviation from one; a
new area nobody owns yet. Until the stream itself covers ``sensitive_min_history_days`` (a
week) nothing alerts (everything is a first) and what is touched is learned; an area counts as
owned only once the stream covers ``sensitive_owner_history_days`` (a week: rare but regular
habits must have had the chance to show).

An access that alerted is remembered for the identity but taught to its group only once a
second member of the group has made it (two colleagues doing the same new thing is a change of
habit; one is an outlier).

Reads: response entries only; ``identity`` (key, policies, metadata role, display name),
``path``/``operation``/``mount_point``/``mount_type``, ``outcome``, ``ts``. State is plain data
and bounded (areas, groups per area, identities per area, groups).
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

import msgspec

from detect.alert import Reason
from ingest.event import AuditEvent, Identity

from .config import convert_known
from .errors import ConfigError
from .policy import (
    SYSTEM_ROOTS,
    AccessPolicy,
    GrantBook,
    default_policy,
    describe_peers,
    peer_group,
    secret_target,
)
from .templates import template_path
from .types import DetectContext, Finding

__all__ = ["SensitiveConfig", "SensitiveFirstAccess", "area_of_path"]

_DAY: Final = 86400.0
_MAX_AREAS: Final = 20_000
_MAX_GROUPS_PER_AREA: Final = 32
_MAX_IDS_PER_AREA: Final = 256
_MAX_GROUPS: Final = 8192
_MAX_IDENTITIES: Final = 50_000
_MAX_MEMBERS: Final = 64
_MAX_DAYS: Final = 8
_SCORES: Final = {"low": 35.0, "medium": 60.0, "high": 80.0}
#: Operations that reach a secret's value or its names: what a first access is about. A first
#: write (a rotation job's weekly run) changes a secret without reading it: other detectors judge
#: writes and deletions.
_READ_OPS: Final = frozenset({"read", "list"})


class SensitiveConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of ``sensitive-first-access`` (keys of the flat detection settings mapping)."""

    sensitive_enabled: bool = True
    #: Event time the stream must cover before anything alerts (at its start everything is new,
    #: and a week sees the weekly habits: on-call shifts, weekly jobs). Accesses in it are learned.
    sensitive_min_history_days: float = 7.0
    #: How long the actor's peer group, or the actor itself, must have been seen: a first access
    #: is judged against a known habit, and a brand-new group of new identities has none yet.
    sensitive_group_history_days: float = 1.0
    #: A protected area counts once it was used on this many distinct days.
    sensitive_protected_min_days: int = 2
    #: Event time the stream must cover before an unprotected area can count as owned: human
    #: habits run in weeks (on-call rotations, weekly jobs), so a group's rare but regular reads
    #: of another group's area must have had the chance to show.
    sensitive_owner_history_days: float = 7.0
    #: An unprotected area is owned by a group once the group made at least this share of its
    #: successful reads (an on-call human reading a service's secrets now and then does not make
    #: them everybody's), and read it this much.
    sensitive_owner_share: float = 0.8
    #: A group's reads of an area where no other group reads at all (all its successful reads are
    #: the owner's) establish ownership sooner than a mixed area's: a pipeline reads its build
    #: secrets on deploy days only.
    sensitive_owner_min_reads: int = 3
    sensitive_owner_min_members: int = 1
    sensitive_owner_min_days: int = 2
    #: An identity whose first access alerted is judged again when it touches the area after this
    #: long (the open alert covers the rest of its session). A credential that read another
    #: group's secrets once (stolen, then used for exfiltration) and does it again days later has
    #: not made it a habit; after ``sensitive_habit_days`` distinct days it has.
    sensitive_realert_hours: float = 24.0
    sensitive_habit_days: int = 3
    #: A policy whose grants so far were (nearly) all reads of other groups' areas is an access
    #: role of its own (on-call, audit, break-glass): a first read granted by it alone is what
    #: the policy is for, and stays ``low`` (still recorded). Share of such reads among its uses.
    sensitive_roaming_share: float = 0.8

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SensitiveConfig:
        """Build from the flat settings mapping (other detectors' keys are ignored)."""
        cfg = convert_known(cls, data, "sensitive-first-access setting")
        for name in cls.__struct_fields__:
            value = getattr(cfg, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(
                    f"invalid sensitive-first-access setting: {name} must be >= 0, got {value!r}"
                )
        return cfg


def area_of_path(path: str) -> str:
    """The secret area of a logical path: its directory, variable segments templated.

    >>> area_of_path("logos/pxl-core/runtime/jwt-key")
    'logos/pxl-core/runtime/'
    >>> area_of_path("secret/sessions/1b4e28ba-2fa1-11d2-883f-0016d3cca427/k")
    'secret/sessions/{uuid}/'
    >>> area_of_path("kv/team/")
    'kv/team/'
    """
    if not path.endswith("/"):
        idx = path.rfind("/")
        path = path[: idx + 1] if idx >= 0 else path + "/"
    return template_path(path)


def _day(ts: float) -> int:
    return int(ts // _DAY)


def _add_day(days: list[int], ts: float) -> None:
    d = _day(ts)
    if d not in days and len(days) < _MAX_DAYS:
        days.append(d)


class SensitiveFirstAccess:
    """``sensitive-first-access``: the first read or list of a protected or group-owned secret
    area by an identity whose peer group never touched it (module docstring: the rules).

    Reads: response entries; ``identity`` (key, policies, metadata ``role_name``, display name),
    ``path``/``operation``/``mount_point``/``mount_type``, ``outcome``, ``request_id``,
    ``remote_ip``, ``ts``, the granting policies of ``auth.policy_results``.
    """

    name = "sensitive-first-access"
    family = "novelty"
    only_responses: ClassVar[bool] = True

    def __init__(self, config: dict[str, Any] | None = None, policy: AccessPolicy | None = None) -> None:
        cfg = SensitiveConfig.from_dict(config)
        self.cfg = cfg
        given = policy if policy is not None else (config or {}).get("policy")
        if given is None:
            given = default_policy()
        elif not isinstance(given, AccessPolicy):
            raise ConfigError(f"config['policy'] must be an AccessPolicy, got {type(given).__name__}")
        self.policy: AccessPolicy = given
        self._start: float | None = None
        # identity key -> first seen
        self._seen: dict[str, float] = {}
        # group -> [first seen, [member keys]]
        self._groups: dict[str, list[Any]] = {}
        # area -> {"days": [..], "groups": {group: [touches, ok reads, [members], [read days]]},
        #          "ids": [identity keys that made it a habit], "alerted": {group: [member keys]},
        #          "many": bool, "top": group with most ok reads, "pols": {policy: ok reads},
        #          "tries": {identity key: [last alert ts, [days]]}}
        self._areas: dict[str, dict[str, Any]] = {}
        # granting policy -> [ok uses, reads of an area another group reads most]
        self._grants = GrantBook(cfg.sensitive_roaming_share)

    # -- observing ----------------------------------------------------------------------------
    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Judge one response entry; learn it."""
        if not self.cfg.sensitive_enabled or not event.is_response:
            return []
        identity = event.identity
        if identity.kind in ("login", "anonymous") or identity.is_root:
            return []
        ts = event.ts
        if self._start is None:
            self._start = ts
        gk = peer_group(identity)
        grp = self._group(gk, identity.key, ts)
        seen = self._seen.get(identity.key)
        if seen is None:
            if len(self._seen) >= _MAX_IDENTITIES:
                del self._seen[next(iter(self._seen))]
            seen = self._seen[identity.key] = ts
        path = event.path
        if not path or path.startswith(SYSTEM_ROOTS) or self.policy.is_housekeeping(path):
            return []
        target = secret_target(event)
        op = target.op
        if target.api == "metadata" and op == "list" and not target.path.endswith("/"):
            # The metadata of one secret (its versions; a rotation job checks it before writing):
            # neither its value nor the names of an area.
            op = "metadata"
        area = area_of_path(target.path)
        info = self._areas.get(area)
        outcome = event.outcome
        key = identity.key
        finding: Finding | None = None
        tried = None if info is None else info["tries"].get(key)
        if (
            info is not None
            and op in _READ_OPS
            and key not in info["ids"]
            and gk not in info["groups"]
            and (tried is None or ts - float(tried[0]) >= self.cfg.sensitive_realert_hours * 3600.0)
        ):
            finding = self._judge(event, op, area, info, gk, grp, seen, ts)
        if info is None:
            if len(self._areas) >= _MAX_AREAS:
                del self._areas[next(iter(self._areas))]
            info = self._areas[area] = {
                "days": [],
                "groups": {},
                "ids": [],
                "alerted": {},
                "many": False,
                "top": "",
                "pols": {},
                "tries": {},
            }
        if outcome == "ok":
            self._grant(event, info, gk, op)
        if finding is not None:
            alerted: dict[str, list[str]] = info["alerted"]
            who = alerted.setdefault(gk, [])
            if key not in who:
                who.append(key)
            if len(who) < 2:
                # Remembered for the identity (its session is covered by the open alert), not
                # taught: the group never did this, and the identity did it once.
                self._try(info, key, ts, alerted=True)
                return [finding]
        elif (
            key not in info["ids"]
            and gk not in info["groups"]
            and (outcome != "ok" or (tried is not None and float(tried[0]) > 0.0))
        ):
            # A quiet refusal teaches nothing about what the group does (only the identity's try);
            # nor does an identity that alerted here and has not made it a habit yet.
            self._try(info, key, ts, alerted=False)
            return []
        ids: list[str] = info["ids"]
        if key not in ids and len(ids) < _MAX_IDS_PER_AREA:
            ids.append(key)
        self._learn(info, gk, identity, op, outcome, ts)
        return [finding] if finding is not None else []

    def _try(self, info: dict[str, Any], key: str, ts: float, *, alerted: bool) -> None:
        """Count an identity's unlearned touch of an area; on enough distinct days it is a habit."""
        tries: dict[str, list[Any]] = info["tries"]
        entry = tries.get(key)
        if entry is None:
            if len(tries) >= _MAX_IDS_PER_AREA:
                del tries[next(iter(tries))]
            entry = tries[key] = [0.0, []]
        if alerted:
            entry[0] = ts
        _add_day(entry[1], ts)
        ids: list[str] = info["ids"]
        if len(entry[1]) >= self.cfg.sensitive_habit_days and key not in ids and len(ids) < _MAX_IDS_PER_AREA:
            ids.append(key)

    def _group(self, gk: str, key: str, ts: float) -> list[Any]:
        grp = self._groups.get(gk)
        if grp is None:
            if len(self._groups) >= _MAX_GROUPS:
                del self._groups[next(iter(self._groups))]
            grp = self._groups[gk] = [ts, []]
        members: list[str] = grp[1]
        if key not in members and len(members) < _MAX_MEMBERS:
            members.append(key)
        return grp

    def _grant(self, event: AuditEvent, info: dict[str, Any], gk: str, op: str) -> None:
        """Count what each granting policy of a successful request was used for."""
        top = info["top"]
        self._grants.note(event, op == "read" and bool(top) and top != gk)

    def _learn(
        self, info: dict[str, Any], gk: str, identity: Identity, op: str, outcome: str, ts: float
    ) -> None:
        if outcome == "ok":
            _add_day(info["days"], ts)
        groups: dict[str, list[Any]] = info["groups"]
        entry = groups.get(gk)
        if entry is None:
            if len(groups) >= _MAX_GROUPS_PER_AREA:
                info["many"] = True
                return
            entry = groups[gk] = [0, 0, [], []]
        entry[0] += 1
        if op == "read" and outcome == "ok":
            entry[1] += 1
            if identity.key not in entry[2] and len(entry[2]) < _MAX_MEMBERS:
                entry[2].append(identity.key)
            _add_day(entry[3], ts)
            top = info["top"]
            if not top or (top != gk and entry[1] > groups[top][1]):
                info["top"] = gk
            pols: dict[str, int] = info["pols"]
            for name in identity.policies:
                if name != "default" and (name in pols or len(pols) < _MAX_MEMBERS):
                    pols[name] = pols.get(name, 0) + 1

    # -- judging ------------------------------------------------------------------------------
    def _judge(
        self,
        event: AuditEvent,
        op: str,
        area: str,
        info: dict[str, Any],
        gk: str,
        grp: list[Any],
        seen: float,
        ts: float,
    ) -> Finding | None:
        cfg = self.cfg
        assert self._start is not None
        if info["many"] or ts - self._start < cfg.sensitive_min_history_days * _DAY:
            return None
        history = cfg.sensitive_group_history_days * _DAY
        if ts - float(grp[0]) < history and ts - seen < history:
            # A brand-new group of new identities: its first day is its history, not a deviation
            # from one. (An identity known for longer whose policies just changed is judged.)
            return None
        target = secret_target(event)
        protected = self.policy.is_protected(target.path, target.mount) and (
            len(info["days"]) >= cfg.sensitive_protected_min_days
        )
        owner = self._owner(info) if ts - self._start >= cfg.sensitive_owner_history_days * _DAY else None
        if not protected and owner is None:
            return None
        held = {p for p in event.identity.policies if p != "default"}
        if owner is not None:
            kind, _, names = owner.partition(":")
            if kind == "policies" and held >= set(names.split(",")):
                # It holds every policy of the area's readers (and more): one of them.
                return None
        return self._finding(event, op, area, info, gk, grp, protected, owner)

    def _owner(self, info: dict[str, Any]) -> str | None:
        """The group (or one policy all its readers hold) that (almost) alone reads the area, as
        an established habit; or None."""
        cfg = self.cfg
        groups: dict[str, list[Any]] = info["groups"]
        total = sum(int(e[1]) for e in groups.values())
        if total <= 0:
            return None
        g, e = max(groups.items(), key=lambda kv: (kv[1][1], kv[0]))
        if len(e[2]) < cfg.sensitive_owner_min_members or len(e[3]) < cfg.sensitive_owner_min_days:
            return None
        if e[1] >= cfg.sensitive_owner_share * total and e[1] >= cfg.sensitive_owner_min_reads:
            return str(g)
        # Several groups read it, but they share one policy (a service and the people who hold
        # its policy besides their own): the area belongs to that policy's holders.
        pols: dict[str, int] = info["pols"]
        if pols:
            name, reads = max(pols.items(), key=lambda kv: (kv[1], kv[0]))
            if reads >= cfg.sensitive_owner_share * total and reads >= cfg.sensitive_owner_min_reads:
                return f"policies:{name}"
        return None

    def _readers(self, info: dict[str, Any]) -> str:
        parts = []
        for g, e in sorted(info["groups"].items(), key=lambda kv: -kv[1][1]):
            if e[1] > 0:
                parts.append(f"{describe_peers(g, len(e[2]))} ({e[1]} reads over {len(e[3])} days)")
        if not parts:
            return "no successful reads so far (written only)"
        more = f" and {len(parts) - 2} other groups" if len(parts) > 2 else ""
        return "; ".join(parts[:2]) + more

    def _finding(
        self,
        event: AuditEvent,
        op: str,
        area: str,
        info: dict[str, Any],
        gk: str,
        grp: list[Any],
        protected: bool,
        owner: str | None,
    ) -> Finding:
        identity = event.identity
        who = _who(identity)
        allowed = event.outcome in ("ok", "pending")
        roaming = self._grants.dedicated(event) if allowed else None
        severity = ("low" if roaming else "high") if allowed else "medium"
        verdict = "Vault allowed it" if allowed else f"Vault answered {event.outcome}"
        act = "read" if op == "read" else f"{op or 'access'}"
        peers = describe_peers(gk, len(grp[1]))
        if protected or owner is None:
            why = "protected by the access model"
            whose = "protected secrets"
        else:
            owners = describe_peers(owner, len(info["groups"][owner][2]) if owner in info["groups"] else None)
            why = f"read mostly by {owners}"
            whose = f"secrets of {owners}"
        span = (event.ts - (self._start or event.ts)) / _DAY
        history = f"its peers ({peers}): 0 reads in {span:.0f} days"
        reasons = [
            Reason("first_access", f"first {act} of {area} by {who}", "never by this identity", 1.0),
            Reason("peers", history, "its peer group never touched this area", 0.9),
            Reason("readers", f"readers so far: {self._readers(info)}", why, 0.7),
            Reason("outcome", event.outcome, verdict, 0.4 if allowed else 0.3),
        ]
        title = f"First {act} of {area} ({whose}) by {who}: {verdict}; {history}"
        if roaming:
            reasons.append(Reason("grant", roaming, "an access role of its own: what the policy is for", 0.5))
            title += f"; {roaming}"
        return Finding(
            detector=self.name,
            title=title,
            severity=severity,
            score=_SCORES[severity],
            family=self.family,
            identity=identity,
            dedup_key=f"{self.name}:{identity.key}:{area}",
            event_ids=(event.request_id,) if event.request_id else (),
            paths=(event.path,),
            source_addresses=(event.remote_ip,) if event.remote_ip else (),
            first_ts=event.ts,
            last_ts=event.ts,
            reasons=tuple(reasons),
            alerting=True,
            labels={
                "area": area,
                "operation": op,
                "protected": "true" if protected else "false",
                "owner": owner or "",
                "peer_group": gk,
            },
        )

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Plain-data state: stream start, groups, who touched each area, policies' grants."""
        return {
            "start": self._start,
            "seen": dict(self._seen),
            "groups": {g: [v[0], list(v[1])] for g, v in self._groups.items()},
            "grants": self._grants.dump(),
            "areas": {
                a: {
                    "days": list(v["days"]),
                    "groups": {g: [e[0], e[1], list(e[2]), list(e[3])] for g, e in v["groups"].items()},
                    "ids": list(v["ids"]),
                    "alerted": {g: list(m) for g, m in v["alerted"].items()},
                    "many": bool(v["many"]),
                    "top": v["top"],
                    "pols": dict(v["pols"]),
                    "tries": {k: [t[0], list(t[1])] for k, t in v["tries"].items()},
                }
                for a, v in self._areas.items()
            },
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        start = state.get("start")
        self._start = None if start is None else float(start)
        self._seen = {str(k): float(v) for k, v in dict(state.get("seen", {})).items()}
        groups = dict(state.get("groups", {}))
        self._groups = {str(g): [float(v[0]), [str(k) for k in v[1]]] for g, v in groups.items()}
        self._grants.restore(state.get("grants", {}))
        self._areas = {
            str(a): {
                "days": [int(d) for d in v["days"]],
                "groups": {
                    str(g): [int(e[0]), int(e[1]), [str(k) for k in e[2]], [int(d) for d in e[3]]]
                    for g, e in dict(v["groups"]).items()
                },
                "ids": [str(k) for k in v["ids"]],
                "alerted": {str(g): [str(k) for k in m] for g, m in dict(v["alerted"]).items()},
                "many": bool(v["many"]),
                "top": str(v.get("top", "")),
                "pols": {str(p): int(n) for p, n in dict(v.get("pols", {})).items()},
                "tries": {
                    str(k): [float(t[0]), [int(d) for d in t[1]]] for k, t in dict(v.get("tries", {})).items()
                },
            }
            for a, v in dict(state.get("areas", {})).items()
        }


def _who(identity: Identity) -> str:
    """The identity as a person reads it (display name, AppRole role, or key)."""
    md = identity.metadata or {}
    role = md.get("role_name")
    name = identity.display_name or identity.key
    if isinstance(role, str) and role and role not in name:
        return f"{name} (role {role})"
    return name
