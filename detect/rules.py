"""Deterministic, high-precision rules: facts about an audit entry that are worth an alert alone.

Long because each rule is a small class kept beside the others: their shared helpers, severity guide
and docstring conventions stay in one place.

Each rule is a small class implementing :class:`~detect.types.Detector`. Rules judge *response*
entries (they carry the outcome and any token issued), except the two whose evidence may never get
a response entry: disabling the only audit device loses its own response, and root-token activity
must be seen even on request-only entries. Those also judge request entries and remember request
ids, so one request is still one finding.

:func:`default_rules` builds the whole set from a flat settings mapping (unknown keys are ignored:
the engine shares the mapping between detectors), including the access model and the rotation
tracker of :mod:`detect.policy`.

Severity guide: critical = the audit trail or the whole keyring is at stake (audit tampering, root
token creation, snapshot or key export, plaintext secrets in the log); high = a privileged or
destructive act (root use, privilege escalation, bursts); medium = a configuration fact an admin
makes on purpose but a SOC must still see (one policy write, a mount enabled).
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Final

import msgspec

from detect.alert import Reason
from ingest.event import AuditEvent, Identity
from ingest.identity import login_target

from .completeness import completeness_rules
from .config import convert_positive
from .correlate import correlate_rules
from .errors import ConfigError
from .explain import person
from .habit import ADMIN_SCOPE, HABIT_LABEL, HABIT_SCOPE_LABEL
from .policy import (
    AccessModelDetector,
    AccessPolicy,
    RotationTracker,
    _human,
    _Recent,
    admin_by_capability,
    default_policy,
    secret_target,
)
from .rulebase import RuleBase
from .rulebase import full_path as _where
from .rulebase import rel_path as _rel
from .sensitive import SensitiveFirstAccess
from .templates import own_names, subnet_of, template_path
from .types import DetectContext, Detector, Finding
from .windows import Cooldown, DistinctCount, SlidingCount

__all__ = [
    "UNANSWERED_TYPE",
    "who",
    "RulesConfig",
    "AdminWork",
    "default_rules",
    "RootTokenUse",
    "AuditTampering",
    "PolicyChange",
    "AuthMethodChange",
    "SecretsEngineChange",
    "PlaintextSecretInAudit",
    "TokenExcessiveTtl",
    "OrphanToken",
    "TokenPrivilegeEscalation",
    "LoginFailureBurst",
    "PermissionDeniedBurst",
    "ListSweep",
    "SecretDestruction",
    "RaftSnapshot",
    "KeyExport",
]

#: The type the engine gives a request entry whose response never came (the request's outcome
#: stays): rules that judge responses judge it once, as the only record of its request.
UNANSWERED_TYPE: Final = "unanswered-response"
_CHANGE_OPS: Final = frozenset({"create", "update", "delete", "patch"})
_MAX_PLAINTEXT_FIELDS: Final = 64
_MAX_GROUPS: Final = 10_000
_HMAC_EXCEPTION_KEYS: Final = ("audit_non_hmac_request_keys", "audit_non_hmac_response_keys")
_MAX_EVENT_IDS: Final = 50
#: ``login-failure-burst``: sources (addresses and /24s) remembered, and rising counts kept per window.
_MAX_SOURCES: Final = 50_000
_MAX_PENDING_PEAKS: Final = 16
#: Distinct identities remembered per vouched source (enough to tell one machine from a proxy).
_MAX_VOUCHERS: Final = 8
# PKI endpoints that return a generated private key: .../(root|intermediate|keys)/generate/exported,
# issuers/generate/(root|intermediate)/exported, root/rotate/exported.
_PKI_EXPORTED: Final = re.compile(r"/(?:generate|rotate)/(?:(?:root|intermediate)/)?exported$")


class RulesConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Rule thresholds (durations in the unit their name says, event time).

    >>> RulesConfig.from_dict({"token_max_ttl_hours": 12, "risk_threshold": 80}).token_max_ttl_hours
    12.0
    """

    #: ``token-excessive-ttl``: a token created with a longer TTL alerts (Datadog uses 25 h).
    token_max_ttl_hours: float = 25.0
    #: ``login-failure-burst``: failures per target. Spraying (distinct failing accounts per source
    #: address within ``spray_window_minutes``) adapts to the source's own history: it alerts at
    #: ``max(floor, spray_history_factor x`` the most the source or its /24 reached in an earlier
    #: window``)``, where the floor is ``spray_min_targets`` for an unvouched source and
    #: ``spray_known_factor`` times that for a shared one: an address (or /24) from which at least
    #: ``spray_known_identities`` distinct identities authenticated successfully (a proxy, a NAT, an
    #: office; one identity's success vouches only for that identity's own machine).
    login_failure_threshold: int = 5
    login_failure_window_minutes: float = 5.0
    spray_min_targets: int = 5
    spray_history_factor: float = 2.0
    spray_known_factor: float = 2.0
    spray_known_identities: int = 3
    spray_window_minutes: float = 10.0
    #: ``permission-denied-burst``: denials per identity, or distinct denied paths per identity.
    denied_threshold: int = 20
    denied_distinct_paths: int = 5
    denied_window_minutes: float = 5.0
    #: ``list-sweep``: distinct paths listed by one identity.
    list_sweep_threshold: int = 20
    list_sweep_window_minutes: float = 2.0
    #: ``secret-destruction``: how many earlier deletions of the same kind make it a habit, and
    #: how many destructions in a window are an alert whatever the habit.
    destruction_habit_min: int = 3
    mass_destruction_threshold: int = 10
    mass_destruction_window_minutes: float = 10.0
    access_model_enabled: bool = True
    rotation_enabled: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RulesConfig:
        """Build from a mapping, ignoring keys that other detectors own."""
        return convert_positive(cls, data, "rule setting")


def default_rules(config: dict[str, Any] | None = None) -> list[Detector]:
    """Every rule, plus the access model and rotation tracker, configured from ``config``.

    ``config`` is the flat detection settings mapping (see :class:`RulesConfig`); it may also hold
    ``policy``, the access model and rotation schedule as data: an
    :class:`~detect.policy.AccessPolicy` (from :func:`~detect.policy.parse_policy`), or absent for
    the packaged :func:`~detect.policy.default_policy`. Detection reads no files: a
    ``policy_file`` key is refused with :class:`~detect.errors.ConfigError` (the shell reads the
    file, ``vaultwatch.settings.load_policy``, and passes the parsed policy).
    """
    if config and "policy_file" in config:
        raise ConfigError(
            "detect reads no files: load policy_file in the caller (vaultwatch.settings.load_policy) "
            "and pass the parsed AccessPolicy as config['policy']"
        )
    cfg = RulesConfig.from_dict(config)
    admin_work = AdminWork()  # one book: what each policy set is seen administering
    rules: list[Detector] = [
        RootTokenUse(cfg),
        AuditTampering(cfg),
        PolicyChange(cfg, admin_work),
        AuthMethodChange(cfg, admin_work),
        SecretsEngineChange(cfg, admin_work),
        PlaintextSecretInAudit(cfg),
        TokenExcessiveTtl(cfg),
        OrphanToken(cfg),
        TokenPrivilegeEscalation(cfg),
        LoginFailureBurst(cfg),
        PermissionDeniedBurst(cfg),
        ListSweep(cfg),
        SecretDestruction(cfg),
        RaftSnapshot(cfg),
        KeyExport(cfg),
        *correlate_rules(config),
        *completeness_rules(config),
    ]
    if cfg.access_model_enabled or cfg.rotation_enabled:
        given = (config or {}).get("policy")
        if given is None:
            policy = default_policy()
        elif isinstance(given, AccessPolicy):
            policy = given
        else:
            raise ConfigError(f"config['policy'] must be an AccessPolicy, got {type(given).__name__}")
        if cfg.access_model_enabled:
            rules.append(AccessModelDetector(policy))
        if cfg.rotation_enabled:
            rules.append(RotationTracker(policy))
    rules.append(SensitiveFirstAccess(config))
    return rules


# -- shared helpers -------------------------------------------------------------------------------
def who(ident: Identity) -> str:
    """The identity as a person reads it (see :func:`detect.explain.person`).

    >>> who(Identity(key="e:1", kind="entity", display_name="approle", metadata={"role_name": "api"}))
    'AppRole role api'
    """
    return person(ident)


class _Rule(RuleBase):
    """A rule of this module: :class:`~detect.rulebase.RuleBase` with the rules' configuration."""

    def __init__(self, config: RulesConfig | None = None) -> None:
        self.cfg = config or RulesConfig()


class _PairedRule(_Rule):
    """A rule that also judges request entries, reporting each request (and kind) once."""

    def __init__(self, config: RulesConfig | None = None) -> None:
        super().__init__(config)
        self._reported = _Recent(20_000, ttl=600.0)

    def _first(self, event: AuditEvent, kinds: list[str]) -> str | None:
        """The first of ``kinds`` not yet reported for this request; marks all of them reported."""
        if not event.request_id:
            return kinds[0] if kinds else None
        chosen = None
        for kind in kinds:
            if self._reported.add(f"{event.request_id}:{kind}", event.ts) and chosen is None:
                chosen = kind
        return chosen

    def state(self) -> dict[str, Any]:
        """Plain-data state: request ids already reported."""
        return {"reported": self._reported.dump()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._reported.restore(state.get("reported", {}))


def _verdict(event: AuditEvent) -> str:
    verdict = {"ok": "succeeded", "pending": "attempted", "denied": "denied"}.get(event.outcome, "failed")
    return f"{verdict}, no response logged" if event.type == UNANSWERED_TYPE else verdict


def _policies(policies: tuple[str, ...] | set[str] | list[str]) -> str:
    """An issued policy set as text, Vault's ``default`` and ``response-wrapping`` left out."""
    return ",".join(sorted(p for p in policies if p not in ("default", "response-wrapping"))) or "default"


def _root_name(ident: Identity) -> str:
    """``Root token`` or ``Root token <name>`` when the token carries a name of its own."""
    dn = ident.display_name or ""
    return "Root token" if dn in ("", "root", "token") else f"Root token {dn}"


# -- rules ----------------------------------------------------------------------------------------
class RootTokenUse(_PairedRule):
    """``root-token-use``: a root token used, generated or created.

    Catches standing root tokens in use (they bypass every policy and should exist only during
    break-glass), ``sys/generate-root`` attempts (minting a root token from unseal key shares) and
    ``auth/token/create`` issuing a token with the ``root`` policy.

    Reads: ``identity.is_root`` / ``identity.key``, the namespace-relative ``request.path``,
    ``response.auth.policies``, ``outcome``; request and response entries.
    """

    name = "root-token-use"

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report the most severe root fact of the entry not yet reported for its request."""
        rel = _rel(event)
        resp = event.response
        ra = resp.auth if resp is not None else None
        kinds: list[str] = []
        if rel.startswith("sys/generate-root"):
            kinds.append("generate")
        if ra is not None and rel.startswith("auth/token/create") and "root" in (ra.policies or ()):
            kinds.append("create")
        if event.identity.is_root:
            kinds.append("use")
        kind = self._first(event, kinds) if kinds else None
        if kind is None:
            return []
        ident = event.identity
        if kind == "generate":
            return [
                self._make(
                    event,
                    title=f"Root token generation {_verdict(event)} by {who(ident)}: {event.operation} {rel}",
                    severity="critical",
                    key="generate-root",
                    reasons=[
                        Reason("path", rel, "root generation is break-glass only", 1.0),
                        Reason("outcome", event.outcome, "never outside a declared emergency", 0.5),
                    ],
                )
            ]
        if kind == "create":
            return [
                self._make(
                    event,
                    title=f"Root token created by {who(ident)} via {rel}",
                    severity="critical",
                    key="create",
                    reasons=[
                        Reason("issued_policies", "root", "non-root policies", 1.0),
                        Reason("creator", ident.key, "root tokens are not issued in normal operation", 0.6),
                    ],
                )
            ]
        return [
            self._make(
                event,
                title=f"{_root_name(ident)} used: {event.operation} {_where(event)}",
                severity="high",
                key=f"use:{event.auth.accessor or '-'}",
                reasons=[
                    Reason("policies", "root", "no standing root token in use", 1.0),
                    Reason("operation", f"{event.operation} {_where(event)}", "break-glass only", 0.5),
                ],
            )
        ]


class AuditTampering(_PairedRule):
    """``audit-tampering``: audit devices or audited headers changed, or an attempt to.

    Catches an attacker blinding the audit trail: disabling a device (critical, reported on the
    request entry: disabling the last device loses its response), changing a device's options
    (re-enabling a path that exists or existed: critical), adding a device (medium: an admin adds
    one on purpose, an attacker adds one that ships to them, a SOC must see both), changing which
    request headers are audited (high). An attempt without the right (denied) is high whatever
    the act. The device's own start-up test (``sys/audit/test`` with no token and no caller) is
    not an attack; ``sys/audit`` listing and ``sys/audit-hash`` are read-only.

    Reads: namespace-relative ``request.path``, ``operation``, ``auth.client_token`` /
    ``auth.accessor`` / ``remote_ip`` (to recognise the test message), ``outcome``; request
    entries of disables, response entries (or a request never answered) of the rest. State: the
    device paths seen enabled or disabled.
    """

    only_operations: ClassVar[frozenset[str] | None] = _CHANGE_OPS
    #: An enable whose response never came is still judged (see :data:`UNANSWERED_TYPE`).
    judges_unanswered: ClassVar[bool] = True

    name = "audit-tampering"
    _MAX_DEVICES: ClassVar[int] = 1024

    def __init__(self, config: RulesConfig | None = None) -> None:
        super().__init__(config)
        self._devices: dict[str, float] = {}

    def state(self) -> dict[str, Any]:
        """Plain-data state: reported requests and the known device paths."""
        return {**super().state(), "devices": dict(self._devices)}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        super().load(state)
        self._devices = {str(k): float(v) for k, v in dict(state.get("devices") or {}).items()}

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report a change or attempted change to audit devices or audited headers."""
        rel = _rel(event)
        op = event.operation or ""
        if op not in _CHANGE_OPS:
            return []
        ns = event.namespace or ""
        denied = event.outcome == "denied"
        if rel.startswith("sys/audit/"):
            device = rel[len("sys/audit/") :]
            if device == "test" and not (event.auth.client_token or event.auth.accessor or event.remote_ip):
                return []  # the device's own test message written when it is enabled
            known = f"{ns}{device}" in self._devices
            if op == "delete":
                kind, severity, act = "disable", "critical", f"audit device {device!r} disabled"
            elif not (event.is_response or denied):
                return []  # an enable is judged on its outcome (or when it never gets one)
            elif known:
                kind, severity = "change", "critical"
                act = f"audit device {device!r} re-enabled with other options"
            else:
                kind, severity, act = "add", "medium", f"audit device {device!r} added"
            if event.outcome in ("ok", "pending") and len(self._devices) < self._MAX_DEVICES or known:
                self._devices[f"{ns}{device}"] = event.ts
        elif rel.startswith("sys/config/auditing/"):
            if not (event.is_response or denied):
                return []
            header = rel.rsplit("/", 1)[-1]
            kind, severity = "headers", "high"
            act = f"audited header {header!r} {'removed' if op == 'delete' else 'changed'}"
        else:
            return []
        if denied:
            severity = "high"
        # One request is one finding (its request and response entries, or the request alone).
        if self._first(event, ["change"]) is None:
            return []
        head = act[0].upper() + act[1:] if kind == "add" else f"Audit tampering: {act}"
        return [
            self._make(
                event,
                title=f"{head} ({_verdict(event)}) by {who(event.identity)}",
                severity=severity,
                key=rel,
                reasons=[
                    Reason(
                        "operation",
                        f"{op} {rel}",
                        "audit configuration is changed only by declared change",
                        1.0,
                    ),
                    Reason(
                        "device" if kind != "headers" else "header",
                        "known device path" if kind in ("change", "disable") and known else kind,
                        "a new device adds a copy of the trail; disabling or changing one removes it",
                        0.6,
                    ),
                    Reason("outcome", event.outcome, "any attempt shows intent", 0.5),
                ],
                labels={"outcome": event.outcome, "kind": kind},
            )
        ]


class AdminWork:
    """Which policy sets are seen administering Vault: the capability *as the entries show it*.

    A policy, auth method or secrets engine changed successfully by a non-root token proves that
    the token's policy set grants that change. The *other* identities holding the same set (its
    peer group, ``default`` aside) are administrators by capability from the next day (UTC) on,
    whatever the policies are named: a security team's second administrator writing a policy for
    the first time is doing what the team's grant is for. An identity that read Vault's own
    configuration successfully (policies, auth methods, mounts: :meth:`record_read`) on an earlier
    day holds a grant on ``sys/`` that developers and services lack: an administrator too. An
    identity's own earlier admin *changes* are its habit, judged by the engine
    (:mod:`detect.habit`), not here. Shared by ``policy-change``
    and the mount rules (one book, dumped by each; loading it twice is harmless). Bounded, plain
    data, event time.

    >>> book = AdminWork()
    >>> ana = Identity(key="entity:a", kind="entity", display_name="sso-ana", policies=("default", "sec"))
    >>> bo = Identity(key="entity:b", kind="entity", display_name="sso-bo", policies=("sec", "default"))
    >>> book.record(ana, 0.0)
    >>> book.evidence(bo, 3600.0), book.evidence(ana, 86400.0), book.evidence(bo, 86400.0)[:28]
    ('', '', 'peers holding the same polic')
    """

    _MAX_GROUPS: ClassVar[int] = 10_000
    _MAX_MEMBERS: ClassVar[int] = 16
    _MAX_DAYS: ClassVar[int] = 32

    def __init__(self) -> None:
        #: peer group -> {identity key: [name as a person reads it, [distinct UTC days of admin work]]}
        self._groups: dict[str, dict[str, list[Any]]] = {}
        #: identity key -> distinct UTC days on which it read Vault's configuration successfully
        self._readers: dict[str, list[int]] = {}

    @staticmethod
    def group(ident: Identity) -> str:
        """The identity's peer group: its policy set without ``default`` ("" for root or none)."""
        if ident.is_root:
            return ""
        return ",".join(sorted(p for p in ident.policies if p not in ("default", "response-wrapping")))

    def record(self, ident: Identity, ts: float) -> None:
        """Remember one successful administrative change by ``ident`` at ``ts``."""
        group = self.group(ident)
        if not group:
            return
        members = self._groups.pop(group, None) or {}
        self._groups[group] = members  # most recently active group last
        row = members.get(ident.key)
        if row is None:
            if len(members) >= self._MAX_MEMBERS:
                return
            row = members[ident.key] = [person(ident), []]
        day = int(ts // 86400.0)
        if day not in row[1]:
            row[1] = [*row[1], day][-self._MAX_DAYS :]
        while len(self._groups) > self._MAX_GROUPS:
            del self._groups[next(iter(self._groups))]

    def record_read(self, ident: Identity, ts: float) -> None:
        """Remember that ``ident`` read Vault's configuration (policies, auth methods, mounts)
        successfully at ``ts``."""
        if ident.is_root or not ident.policies:
            return
        days = self._readers.pop(ident.key, None) or []
        self._readers[ident.key] = days  # most recently active last
        day = int(ts // 86400.0)
        if day not in days:
            days.append(day)
            del days[: -self._MAX_DAYS]
        while len(self._readers) > self._MAX_GROUPS:
            del self._readers[next(iter(self._readers))]

    def evidence(self, ident: Identity, ts: float) -> str:
        """Why ``ident`` administers, by what *other* holders of its policy set were seen doing on
        earlier days, or by its own successful reads of Vault's configuration on earlier days (its
        grant covers ``sys/policies``, ``sys/auth`` or ``sys/mounts``: a developer's or a
        service's does not), or ""."""
        today = int(ts // 86400.0)
        read_days = sum(1 for d in self._readers.get(ident.key, ()) if d < today)
        own = (
            f"it read Vault's configuration (policies, auth methods, mounts) successfully on {read_days} "
            "earlier day(s): its grant covers sys/"
            if read_days
            else ""
        )
        group = self.group(ident)
        members = self._groups.get(group) if group else None
        if not members:
            return own
        names: list[str] = []
        days: set[int] = set()
        for key, (name, worked) in members.items():
            earlier = [d for d in worked if d < today]
            if key != ident.key and earlier:
                names.append(name)
                days.update(earlier)
        if not days:
            return own
        peers = (
            f"peers holding the same policies ({group}): {', '.join(names[:4])} changed policies or "
            f"mounts successfully on {len(days)} earlier day(s)"
        )
        return f"{peers}; {own}" if own else peers

    def dump(self) -> dict[str, Any]:
        """Plain data."""
        return {
            "groups": {g: {k: [r[0], list(r[1])] for k, r in m.items()} for g, m in self._groups.items()},
            "readers": {k: list(v) for k, v in self._readers.items()},
        }

    def load(self, data: dict[str, Any]) -> None:
        """Restore :meth:`dump` output."""
        data = dict(data or {})
        self._groups = {
            str(g): {str(k): [str(r[0]), [int(d) for d in r[1]]] for k, r in dict(m).items()}
            for g, m in dict(data.get("groups") or {}).items()
        }
        self._readers = {str(k): [int(d) for d in v] for k, v in dict(data.get("readers") or {}).items()}


def _admin_why(book: AdminWork, event: AuditEvent, ctx: DetectContext) -> tuple[str, str]:
    """(why the writer is an administrator or "", where the answer came from).

    Vault's own answer first (the shell's capability mapping, or a root token); otherwise what the
    writer's policy set was seen doing (:class:`AdminWork`), from a network the writer used before:
    the same grant used from a place the identity never worked from is not vouched for.
    """
    ident = event.identity
    why = admin_by_capability(ctx.config, ident)
    if why is not None:
        return why, "Vault's policies"
    seen = book.evidence(ident, event.ts)
    if not seen:
        return "", "entries seen (no Vault policies)"
    ip = event.remote_ip
    if ip and ctx.baselines.count(ident.key, "subnet", subnet_of(ip)) <= 0:
        if ctx.baselines.total(ident.key) <= 0:
            return "", f"entries seen; {seen}, but this identity has no history of its own yet"
        return "", f"entries seen; {seen}, but from {subnet_of(ip)}, a network this identity never used"
    return seen, "entries seen (no Vault policies)"


#: Vault's own configuration (policies, auth methods, secrets engines): reading it successfully
#: shows a grant that default, application and developer policies do not include.
_CONFIG_PREFIXES: Final = ("sys/policy", "sys/policies/", "sys/auth", "sys/mounts")


def _policy_name(rel: str) -> str | None:
    for prefix in ("sys/policy/", "sys/policies/acl/", "sys/policies/rgp/", "sys/policies/egp/",
                   "sys/policies/password/"):  # fmt: skip
        if rel.startswith(prefix) and len(rel) > len(prefix):
            kind = prefix.split("/")[-2]
            return f"{kind}/{rel[len(prefix) :]}"
    return None


_ADMIN_MEANS: Final = (
    "administrators: identities whose policies grant changes to policies, auth methods or mounts "
    "(Vault's answer, or holders of the same policies seen making such changes on earlier days)"
)


class PolicyChange(_Rule):
    """``policy-change``: an ACL, Sentinel or password policy written or deleted.

    Catches privilege escalation by policy edit (widening one's own policy) and the removal of
    policies that restrict. Every change is reported; the severity says how unusual it is:

    * high: the writer holds the policy it changed and is no administrator (self-escalation), or
      it is the first policy change by an identity that is no administrator, or a denied attempt
      (someone without the right tried);
    * medium: a change made with a root token; a policy deleted by an administrator (a delete
      removes what restricts; the engine lowers a habitual one); a change by an identity that has
      changed policies before (the engine lowers a change to the same policy it made on two
      earlier days to low: its habit);
    * low: a policy written by an administrator, and a change Vault rejected as invalid (nothing
      changed).

    *Administrator* is told by what the writer's policies grant, never by their names: Vault's
    answer where the shell resolved the policies (``[vault]``: ``config["capability_roles"]``, see
    :mod:`detect.policy`), otherwise what the entries show the writer's policy set doing
    (:class:`AdminWork`: other holders of the same set changed policies or mounts successfully on
    an earlier day, or the writer itself read Vault's configuration (policies, auth methods,
    mounts) successfully on an earlier day: its grant covers ``sys/``), from a network the writer
    used before. The explanation says which. The writer's own repeated work is its habit (the
    engine lowers it, :mod:`detect.habit`).

    A write logged only as a request (its response lost) is judged as an attempt.

    Reads: namespace-relative ``request.path`` (the policy name is in the path, never HMAC'd),
    ``operation``, ``outcome``, the writer's ``identity.policies``, ``remote_ip``; response
    entries (or a request never answered). State: when each identity last changed a policy, and
    the :class:`AdminWork` book.
    """

    only_responses: ClassVar[bool] = True
    #: Reads and lists too: a successful read of Vault's configuration (policies, auth methods,
    #: mounts) shows what the reader's grant covers (:meth:`AdminWork.record_read`); only changes
    #: are reported.
    only_operations: ClassVar[frozenset[str] | None] = _CHANGE_OPS | {"read", "list"}

    name = "policy-change"

    def __init__(self, config: RulesConfig | None = None, admin_work: AdminWork | None = None) -> None:
        super().__init__(config)
        self._writers: dict[str, float] = {}
        self.admin_work = admin_work or AdminWork()

    def state(self) -> dict[str, Any]:
        return {"writers": dict(self._writers), "admin_work": self.admin_work.dump()}

    def load(self, state: dict[str, Any]) -> None:
        self._writers = {str(k): float(v) for k, v in (state.get("writers") or {}).items()}
        if "admin_work" in state:
            self.admin_work.load(state["admin_work"])

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report a policy write or delete (and learn who reads Vault's configuration)."""
        op = event.operation or ""
        if not event.is_response:
            return []
        rel = _rel(event)
        if op not in _CHANGE_OPS:
            if op in ("read", "list") and event.outcome == "ok" and rel.startswith(_CONFIG_PREFIXES):
                self.admin_work.record_read(event.identity, event.ts)
            return []
        policy = _policy_name(rel)
        if policy is None:
            return []
        ident = event.identity
        held = set(ident.policies)
        admin_why, source = _admin_why(self.admin_work, event, ctx)
        admin = bool(admin_why)
        own = policy.rsplit("/", 1)[-1] in held
        delete = event.operation == "delete"
        if event.outcome == "denied":
            severity, writer = "high", "denied: the writer lacks the right to change policies"
        elif event.outcome not in ("ok", "pending"):
            severity, writer = "low", "rejected by Vault: nothing changed"
        elif ident.is_root:
            severity, writer = "medium", "written with a root token"
        elif own and not admin:
            severity, writer = "high", "the writer holds this policy and is no administrator: self-escalation"
        elif admin and delete:
            severity, writer = "medium", "an administrator deleted a policy (what it restricted is gone)"
        elif admin:
            severity, writer = "low", "an administrator's change"
        elif ident.key in self._writers:
            severity, writer = "medium", "this identity has changed policies before"
        else:
            severity, writer = "high", "first policy change by an identity that is no administrator"
        if event.outcome == "ok":
            self._writers[ident.key] = event.ts
            self.admin_work.record(ident, event.ts)
        verb = "deleted" if delete else "written"
        ns = f" in namespace {event.namespace}" if event.namespace else ""
        labels = {"policy": policy, HABIT_LABEL: f"{verb} {event.namespace or ''}{policy}"}
        if not delete and not own:
            # Routine for an administrator by behaviour (detect.habit): a policy written that the
            # writer does not hold itself (a delete or a self-grant never is).
            labels[HABIT_SCOPE_LABEL] = ADMIN_SCOPE
        return [
            self._make(
                event,
                title=f"Policy {policy}{ns} {verb} ({_verdict(event)}) by {who(ident)}",
                severity=severity,
                key=f"{event.namespace or ''}{policy}",
                reasons=[
                    Reason("policy", policy, "policies change only through reviewed changes", 1.0),
                    Reason(
                        "writer",
                        writer,
                        f"administrator: {admin_why}" if admin else _ADMIN_MEANS,
                        0.8,
                    ),
                    Reason("role_from", source, "", 0.4),
                    Reason("operation", event.operation or "", "read", 0.5),
                    Reason("outcome", event.outcome, "ok", 0.3),
                ],
                labels=labels,
            )
        ]


def _hmac_exceptions(data: dict[str, Any] | None) -> list[str]:
    """Which ``audit_non_hmac_*`` keys a mount enable/tune sets to a non-empty value.

    Map keys are never HMAC'd, so their presence is visible even though the listed field names are.
    """
    if not data:
        return []
    found = []
    for where in (data, data.get("config")):
        if not isinstance(where, dict):
            continue
        for key in _HMAC_EXCEPTION_KEYS:
            value = where.get(key)
            if value and isinstance(value, (list, str)):
                found.append(key)
    return found


class _MountChange(_Rule):
    only_responses: ClassVar[bool] = True
    only_operations: ClassVar[frozenset[str] | None] = _CHANGE_OPS
    prefixes: ClassVar[tuple[str, ...]] = ()
    noun: ClassVar[str] = ""
    #: Whether enabling one is routine work for an administrator by behaviour (a new secrets
    #: engine is; a new auth method is a new way in, never routine).
    routine_enable: ClassVar[bool] = False

    def __init__(self, config: RulesConfig | None = None, admin_work: AdminWork | None = None) -> None:
        super().__init__(config)
        self.admin_work = admin_work or AdminWork()

    def state(self) -> dict[str, Any]:
        """Plain-data state: the shared :class:`AdminWork` book."""
        return {"admin_work": self.admin_work.dump()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        if "admin_work" in state:
            self.admin_work.load(state["admin_work"])

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report an enable, disable, move or tune (critical when it disables audit HMAC).

        Routine configuration (an enable where enabling is routine, a tune that keeps HMAC on) by
        an administrator by capability (:func:`_admin_why`) who did it successfully is ``low``:
        stored, in reports, not paged. A disable, a move, a tune that turns HMAC off never is."""
        op = event.operation or ""
        if not event.is_response or op not in _CHANGE_OPS:
            return []
        rel = _rel(event)
        prefix = next((p for p in self.prefixes if rel.startswith(p)), None)
        if prefix is None:
            return []
        target = rel[len(prefix) :] or rel
        tune = target.endswith("/tune")
        mount = target.removesuffix("/tune")
        exceptions = _hmac_exceptions(event.request.data)
        reasons: list[Reason] = []
        if exceptions and event.outcome in ("ok", "pending"):
            severity = "critical"
            kinds = " and ".join(k.split("_")[3] for k in exceptions)
            title = f"{self.noun} {mount} set to audit {kinds} fields in clear"
            reasons.append(
                Reason(
                    "hmac_exceptions", ", ".join(exceptions), "none: every value HMAC'd in the audit log", 1.0
                )
            )
        elif op == "delete" and not tune:
            severity = "high"
            title = f"{self.noun} {mount} disabled ({_verdict(event)})"
        else:
            action = "tuned" if tune else "enabled or moved"
            severity = "medium"
            title = f"{self.noun} {mount} {action} ({_verdict(event)})"
        if event.outcome == "denied" and severity != "critical":
            severity = "high"
        elif event.outcome not in ("ok", "pending", "denied") and severity != "critical":
            severity = "low"
        title = f"{title} by {who(event.identity)}"
        labels = {"mount": mount}
        routine = False
        if not exceptions:
            # A habit: the same change to the same mount (a planned tune) done again and again.
            labels[HABIT_LABEL] = f"{'tune' if tune else op} {event.namespace or ''}{mount}"
            if op != "delete" and prefix != "sys/remount" and (tune or self.routine_enable):
                # Routine for an administrator by behaviour (detect.habit): a tune, or an enable
                # where enabling is routine (never a disable, a move, a tune that turns HMAC off).
                labels[HABIT_SCOPE_LABEL] = ADMIN_SCOPE
                routine = True
        reasons.append(Reason("operation", f"{op} {rel}", "mounts change only through reviewed changes", 0.8))
        reasons.append(Reason("outcome", event.outcome, "ok", 0.3))
        if routine and event.outcome == "ok" and severity == "medium" and not event.identity.is_root:
            admin_why, source = _admin_why(self.admin_work, event, ctx)
            if admin_why:
                severity = "low"
                title = f"{title} (an administrator's routine change)"
            reasons.append(
                Reason(
                    "writer",
                    f"administrator: {admin_why}" if admin_why else "no administrator by capability",
                    f"{_ADMIN_MEANS} (told from {source})",
                    0.6,
                )
            )
        if event.outcome == "ok":
            self.admin_work.record(event.identity, event.ts)
        return [
            self._make(
                event,
                title=title,
                severity=severity,
                key=f"{event.namespace or ''}{mount}:{'hmac' if exceptions else op}",
                reasons=reasons,
                labels=labels,
            )
        ]


class AuthMethodChange(_MountChange):
    """``auth-method-change``: an auth method enabled, disabled or tuned.

    Catches backdoor login paths (a new userpass or JWT mount), disabling an auth method (revokes
    its tokens) and tunes; a tune that sets ``audit_non_hmac_request_keys`` or
    ``audit_non_hmac_response_keys`` is critical: Vault will then log those fields in clear.

    Reads: namespace-relative ``request.path`` (``sys/auth/<mount>[/tune]``), ``operation``,
    the *keys* of ``request.data`` (and ``request.data.config``), ``outcome``; response entries.
    """

    name = "auth-method-change"
    prefixes = ("sys/auth/",)
    noun = "Auth method"


class SecretsEngineChange(_MountChange):
    """``secrets-engine-change``: a secrets engine enabled, disabled, moved or tuned.

    Catches unsanctioned engines, disabling an engine (which destroys its data), remounts that
    move secrets out of policy reach, and tunes; a tune (or an enable with ``config``) setting
    ``audit_non_hmac_*_keys`` is critical: Vault will log those fields in clear.

    Reads: namespace-relative ``request.path`` (``sys/mounts/<mount>[/tune]``, ``sys/remount``),
    ``operation``, the *keys* of ``request.data`` (and ``request.data.config``), ``outcome``;
    response entries.
    """

    name = "secrets-engine-change"
    prefixes = ("sys/mounts/", "sys/remount")
    noun = "Secrets engine"
    routine_enable = True


class PlaintextSecretInAudit(_Rule):
    """``plaintext-secret-in-audit``: the audit log itself holds secret values in clear.

    Catches a ``log_raw`` device, mounts tuned with ``audit_non_hmac_*_keys`` and audited request
    headers carrying credentials: anyone who can read the log can read the secrets. The parser has
    already redacted the values; only the field paths are reported.

    Grouped per log source, mount and identity: each alert is about one caller's entries, and
    lists every field path those entries wrote in clear so far (the union, bounded), next to the
    fields of the entry that raised it.

    Reads: ``plaintext_fields``, ``source``, ``mount_point``, ``identity``; response entries (they
    repeat the request's fields). State: the field paths seen per group.
    """

    only_responses: ClassVar[bool] = True

    name = "plaintext-secret-in-audit"

    def __init__(self, config: RulesConfig | None = None) -> None:
        super().__init__(config)
        self._fields: dict[str, list[str]] = {}

    def state(self) -> dict[str, Any]:
        """Plain-data state: the field paths seen per source, mount and identity."""
        return {"fields": {k: list(v) for k, v in self._fields.items()}}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._fields = {str(k): [str(f) for f in v] for k, v in dict(state.get("fields") or {}).items()}

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report the field paths that were written unhashed."""
        if not event.is_response or not event.plaintext_fields:
            return []
        fields = sorted(set(event.plaintext_fields))
        mount = event.mount_point or "-"
        source = event.source or "audit log"
        group = f"{source}\x1f{mount}\x1f{event.identity.key}"
        seen = self._fields.pop(group, [])
        self._fields[group] = seen  # most recently active group last
        for f in fields:
            if f not in seen and len(seen) < _MAX_PLAINTEXT_FIELDS:
                seen.append(f)
        seen.sort()
        if len(self._fields) > _MAX_GROUPS:
            del self._fields[next(iter(self._fields))]
        headers_only = all(f.startswith("request.headers.") for f in seen)
        tokens = [f for f in seen if f.endswith(("client_token", ".token"))]
        more = "" if len(seen) < _MAX_PLAINTEXT_FIELDS else " (and more)"
        reasons = [
            Reason("plaintext_fields", ", ".join(seen) + more, "none (all values HMAC'd)", 1.0),
            Reason("this_entry", ", ".join(fields[:16]), "", 0.5),
        ]
        if tokens:
            reasons.append(Reason("tokens_in_clear", str(len(tokens)), "0", 0.8))
        return [
            self._make(
                event,
                title=f"{len(seen)} secret field(s) of {who(event.identity)} written in clear to "
                f"{source} (mount {mount})",
                severity="high" if headers_only else "critical",
                key=f"{source}:{mount}",
                reasons=reasons,
                labels={"mount": mount},
            )
        ]


def _issued(event: AuditEvent) -> tuple[tuple[str, ...], int | None] | None:
    """(policies, ttl) of a token created through ``auth/token/create*``, or None."""
    if not event.is_response or event.outcome != "ok" or not _rel(event).startswith("auth/token/create"):
        return None
    resp = event.response
    ra = resp.auth if resp is not None else None
    if ra is None:
        return None
    return tuple(ra.policies or ()), ra.token_ttl


class TokenExcessiveTtl(_Rule):
    """``token-excessive-ttl``: a token created with a TTL over the configured maximum.

    Catches persistence: a long-lived token outlives the incident response that revokes the
    attacker's login. Root tokens (no TTL at all) are reported by ``root-token-use``.

    Reads: ``response.auth.token_ttl`` (a number, never HMAC'd) and ``response.auth.policies`` of
    ``auth/token/create*`` responses, ``outcome``.
    """

    only_responses: ClassVar[bool] = True
    only_outcomes: ClassVar[frozenset[str] | None] = frozenset({"ok"})

    name = "token-excessive-ttl"

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report a token issued with a TTL over ``token_max_ttl_hours``."""
        issued = _issued(event)
        if issued is None:
            return []
        policies, ttl = issued
        limit = self.cfg.token_max_ttl_hours * 3600.0
        if not ttl or ttl <= limit:
            return []
        return [
            self._make(
                event,
                title=f"Token with TTL {_human(ttl)} (maximum {_human(limit)}) created by "
                f"{who(event.identity)} for policies {_policies(policies)}",
                severity="high" if ttl >= 10 * limit else "medium",
                key=",".join(sorted(policies)),
                reasons=[
                    Reason("token_ttl", _human(ttl), f"at most {_human(limit)}", 1.0),
                    Reason("issued_policies", ", ".join(policies) or "-", "", 0.3),
                ],
                labels={HABIT_LABEL: f"ttl {_human(ttl)} {_policies(policies)}"},
            )
        ]


class OrphanToken(_Rule):
    """``orphan-token``: an orphan token created (no parent).

    Catches persistence: an orphan survives the revocation of the token that created it, so
    revoking a compromised login does not revoke what it minted.

    A request whose response was never logged (:data:`UNANSWERED_TYPE`, outcome ``pending``) is
    judged as an attempt from what the request says (the path or ``no_parent``); the issued
    policies are unknown then (the requested ones are HMAC'd).

    Reads: namespace-relative ``request.path`` (``auth/token/create-orphan``),
    ``request.data.no_parent`` (a bool, never HMAC'd), ``response.auth`` presence, ``outcome``.
    """

    only_responses: ClassVar[bool] = True
    only_outcomes: ClassVar[frozenset[str] | None] = frozenset({"ok", "pending"})

    name = "orphan-token"

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report the creation of an orphan token (or an attempt whose response is lost)."""
        rel = _rel(event)
        if event.outcome == "pending" and event.is_response and rel.startswith("auth/token/create"):
            issued: tuple[tuple[str, ...], int | None] | None = ((), None)
        else:
            issued = _issued(event)
        if issued is None:
            return []
        via_path = rel.startswith("auth/token/create-orphan")
        via_flag = (event.request.data or {}).get("no_parent") is True
        if not (via_path or via_flag):
            return []
        policies, ttl = issued
        made = "created" if event.outcome == "ok" else f"requested ({_verdict(event)})"
        return [
            self._make(
                event,
                title=f"Orphan token for policies {_policies(policies) if policies else '(not logged)'} "
                f"{made} by {who(event.identity)}",
                severity="medium",
                key=",".join(sorted(policies)),
                reasons=[
                    Reason("orphan", "create-orphan" if via_path else "no_parent=true", "child tokens", 1.0),
                    Reason("token_ttl", _human(ttl) if ttl else "none", "", 0.3),
                ],
                labels={HABIT_LABEL: f"orphan {_policies(policies)}"},
            )
        ]


class TokenPrivilegeEscalation(_Rule):
    """``token-privilege-escalation``: a token issued with more privilege than its creator holds
    or normally grants.

    Catches a compromised token or token role minting broader access: policies the creator does
    not hold itself (high), or a policy the creator has never granted before once its habits are
    known (medium). Root creators are left to ``root-token-use``.

    Reads: ``auth.policies`` (the creator's), ``response.auth.policies`` of ``auth/token/create*``
    responses, ``identity.key``; asks ``ctx.baselines.count(identity, "granted_policy", p)`` and
    ``in_learning``, and keeps its own per-creator record of granted policies.
    """

    only_responses: ClassVar[bool] = True
    only_outcomes: ClassVar[frozenset[str] | None] = frozenset({"ok"})

    name = "token-privilege-escalation"
    _MAX_CREATORS: ClassVar[int] = 10_000
    _MAX_POLICIES: ClassVar[int] = 64

    def __init__(self, config: RulesConfig | None = None) -> None:
        super().__init__(config)
        self._granted: dict[str, dict[str, int]] = {}

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Compare the issued policies with the creator's own and with what it usually grants."""
        issued = _issued(event)
        if issued is None or event.identity.is_root:
            return []
        creator = event.identity
        policies = {p for p in issued[0] if p not in ("default", "response-wrapping")}
        own = set(event.auth.policies or ())
        history = self._granted.get(creator.key)
        out: list[Finding] = []
        beyond = sorted(policies - own)
        if beyond:
            out.append(
                self._make(
                    event,
                    title=f"{who(creator)} issued a token with policies it does not hold: "
                    f"{', '.join(beyond)}",
                    severity="high",
                    key="beyond-own:" + ",".join(beyond),
                    reasons=[
                        Reason(
                            "issued_policies", ", ".join(sorted(policies)), "a subset of the creator's", 1.0
                        ),
                        Reason("creator_policies", ", ".join(sorted(own)) or "-", "", 0.6),
                        Reason("via", _rel(event), "auth/token/create", 0.3),
                    ],
                    labels={HABIT_LABEL: f"issue {_policies(policies)}"},
                )
            )
        else:
            known = history is not None or not ctx.baselines.in_learning(creator.key, event.ts)
            novel = sorted(
                p
                for p in policies
                if not (history or {}).get(p) and ctx.baselines.count(creator.key, "granted_policy", p) <= 0
            )
            if known and novel:
                usual = ", ".join(sorted(history or {})) or "none recorded"
                out.append(
                    self._make(
                        event,
                        title=f"{who(creator)} issued a token with a policy it never granted: "
                        f"{', '.join(novel)}",
                        severity="medium",
                        key="novel:" + ",".join(novel),
                        reasons=[
                            Reason("granted_policy", ", ".join(novel), f"usually grants: {usual}", 1.0),
                            Reason("via", _rel(event), "", 0.3),
                        ],
                        labels={HABIT_LABEL: f"issue {_policies(policies)}"},
                    )
                )
        self._remember(creator.key, policies)
        return out

    def _remember(self, creator: str, policies: set[str]) -> None:
        granted = self._granted.pop(creator, {})
        self._granted[creator] = granted  # most recently active creator last
        for p in policies:
            if p in granted or len(granted) < self._MAX_POLICIES:
                granted[p] = granted.get(p, 0) + 1
        if len(self._granted) > self._MAX_CREATORS:
            del self._granted[next(iter(self._granted))]

    def state(self) -> dict[str, Any]:
        """Plain-data state: per creator, how often each policy was granted."""
        return {"granted": {k: dict(v) for k, v in self._granted.items()}}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._granted = {
            str(k): {str(p): int(n) for p, n in dict(v).items()}
            for k, v in dict(state.get("granted", {})).items()
        }


class LoginFailureBurst(_Rule):
    """``login-failure-burst``: brute force against one account, password spraying across many,
    and a success right after a burst.

    Catches online guessing: at least ``login_failure_threshold`` failures for one target within
    the window (whatever the source), password spraying from one source address, and a successful
    login to a target still inside its failure burst (critical: the guess may have worked). One
    typo is never a burst.

    Spraying is judged against the source's own history, not a fixed count: the distinct accounts
    failing from one address within ``spray_window_minutes`` alert when they reach
    ``max(floor, spray_history_factor x peak)``, where *peak* is the most distinct failing
    accounts that address, or any address of its /24, reached in an earlier window (the current
    window never raises its own bar). The floor is ``spray_min_targets`` for an unvouched source
    and ``spray_known_factor`` times that for a shared one: an address, or /24, from which at least
    ``spray_known_identities`` distinct identities authenticated successfully, each on two UTC
    days (a corporate proxy, NAT or office where many people mistype). One identity's success
    vouches for nothing but its own machine, a success on one day only (what a stuffed or guessed
    password gives) vouches for nothing, and root tokens never vouch: an attacker who logged in
    with stolen passwords from a neighbouring address does not make the network a trusted proxy.
    No account, mount or address name is known in advance.

    Reads: ``outcome`` (``login_failed`` / ``ok``), ``identity.key`` (``login:<mount>:<name>``) and
    ``identity.kind``, ``remote_ip``, ``path`` + ``request`` (login target of a success),
    ``request_id``, ``ts``; response entries.
    """

    only_responses: ClassVar[bool] = True
    only_outcomes: ClassVar[frozenset[str] | None] = frozenset({"ok", "login_failed"})

    name = "login-failure-burst"

    def __init__(self, config: RulesConfig | None = None) -> None:
        super().__init__(config)
        c = self.cfg
        self._per_target = SlidingCount(c.login_failure_window_minutes * 60.0)
        self._per_source = DistinctCount(c.spray_window_minutes * 60.0)
        #: the request ids of each source's failures in the spraying window (the alert's evidence)
        self._source_ids = SlidingCount(c.spray_window_minutes * 60.0)
        self._cooldown = Cooldown(max(c.login_failure_window_minutes, c.spray_window_minutes) * 60.0)
        #: address or /24 -> [closed peak, [[ts, distinct] still inside their window, rising]]
        self._peaks: dict[str, list[Any]] = {}
        #: addresses and /24s that authenticated successfully: [last success (event time),
        #: [distinct identity keys that did, bounded]]
        self._known: dict[str, list[Any]] = {}

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Count failures per target and per source; report a burst at the threshold and update it
        with every further failure (one alert whose evidence counts them all)."""
        if not event.is_response:
            return []
        if event.outcome == "ok":
            self._learn_success(event)
            return self._success_after_burst(event)
        if event.outcome != "login_failed":
            return []
        out: list[Finding] = []
        c = self.cfg
        target = event.identity.key
        n = self._per_target.add(target, event.ts, event.request_id or "")
        if n >= c.login_failure_threshold:
            # Every failure past the threshold updates the burst's alert (same dedup key), so its
            # title and evidence count all of them, not only the first ``threshold``.
            self._cooldown.ready(f"t:{target}", event.ts)
            ids = tuple(self._per_target.tags(target, event.ts)[-_MAX_EVENT_IDS:])
            window = _human(c.login_failure_window_minutes * 60.0)
            out.append(
                self._make(
                    event,
                    title=f"{n} failed logins for {who(event.identity)} within {window}",
                    severity="high",
                    key="target",
                    reasons=[
                        Reason("login_failures", str(n), f"< {c.login_failure_threshold} per {window}", 1.0),
                        Reason("source", event.remote_ip or "-", "", 0.3),
                    ],
                    event_ids=ids,
                )
            )
        ip = event.remote_ip
        if ip:
            out.extend(self._spray(event, ip, target))
        return out

    def spray_threshold(self, ip: str, now: float) -> tuple[int, int, bool]:
        """``(threshold, earlier peak, known)`` for failures from ``ip`` at ``now`` (see the class)."""
        c = self.cfg
        net = subnet_of(ip)
        peak = max(self._closed_peak(ip, now), self._closed_peak(net, now))
        known = any(len(self._known.get(k, (0.0, ()))[1]) >= c.spray_known_identities for k in (ip, net))
        floor = c.spray_min_targets * (c.spray_known_factor if known else 1.0)
        return max(math.ceil(floor), math.ceil(c.spray_history_factor * peak)), peak, known

    def _spray(self, event: AuditEvent, ip: str, target: str) -> list[Finding]:
        c = self.cfg
        d = self._per_source.add(ip, target, event.ts)
        self._source_ids.add(ip, event.ts, event.request_id or "")
        threshold, peak, known = self.spray_threshold(ip, event.ts)
        for key in (ip, subnet_of(ip)):
            self._note_peak(key, event.ts, d)
        if d < threshold or not self._cooldown.ready(f"s:{ip}", event.ts):
            return []
        window = _human(c.spray_window_minutes * 60.0)
        targets = self._per_source.values(ip)
        source = Identity(key=f"anon:{ip}", kind="anonymous")
        history = f"at most {peak} in an earlier window" if peak else "no earlier failures"
        vouched = (
            f"{c.spray_known_identities}+ identities authenticated successfully from it before (shared)"
            if known
            else f"fewer than {c.spray_known_identities} identities ever authenticated from it"
        )
        return [
            self._make(
                event,
                title=f"Password spraying from {ip}: {d} accounts failed within {window}",
                severity="high",
                key="spray",
                identity=source,
                reasons=[
                    Reason("distinct_targets", str(d), f"< {threshold} per {window} ({history})", 1.0),
                    Reason("source_history", vouched, "", 0.5 if known else 0.8),
                    Reason("targets", ", ".join(targets[-8:]), "", 0.4),
                ],
                event_ids=tuple(self._source_ids.tags(ip, event.ts)[-_MAX_EVENT_IDS:]),
            )
        ]

    def _closed_peak(self, key: str, now: float) -> int:
        """The most distinct failing accounts ``key`` reached in windows over before ``now``."""
        row = self._peaks.get(key)
        if row is None:
            return 0
        horizon = now - self.cfg.spray_window_minutes * 60.0
        pending: list[list[float]] = row[1]
        while pending and pending[0][0] <= horizon:
            row[0] = max(row[0], int(pending.pop(0)[1]))
        return int(row[0])

    def _note_peak(self, key: str, ts: float, d: int) -> None:
        row = self._peaks.pop(key, None)
        if row is None:
            row = [0, []]
        self._peaks[key] = row  # re-inserted: ordered by last failure, oldest evicted first
        pending: list[list[float]] = row[1]
        # Only a rise is kept: a lower count later in the window folds no higher than the rise
        # before it, which closes first.
        if d > row[0] and (not pending or d > pending[-1][1]):
            pending.append([ts, float(d)])
            del pending[:-_MAX_PENDING_PEAKS]
        while len(self._peaks) > _MAX_SOURCES:
            del self._peaks[next(iter(self._peaks))]

    def _learn_success(self, event: AuditEvent) -> None:
        ip = event.remote_ip
        if not ip or event.identity.kind == "anonymous":
            return
        if event.identity.kind == "login" and (event.response is None or event.response.auth is None):
            return
        if event.identity.kind == "root":
            return  # a root token is no one's habit: it vouches for no network
        who = event.identity.key
        day = int(event.ts // 86400)
        for key in (ip, subnet_of(ip)):
            row = self._known.pop(key, None) or [event.ts, [], []]
            if len(row) < 3:
                row.append([])
            self._known[key] = row  # re-inserted: ordered by last success, oldest evicted first
            row[0] = event.ts
            ids: list[str] = row[1]
            if who in ids or len(ids) >= _MAX_VOUCHERS:
                continue
            # An identity vouches for a source once it succeeded from there on two UTC days: one
            # day is what an attacker who just stuffed or guessed a password also has.
            firsts: list[str] = row[2]
            if "\x1f" in who:
                mark = next((m for m in firsts if m.split("\x1f", 1)[0] == who), None)
            else:  # the same test without a split (and a list) per mark
                lead = who + "\x1f"
                mark = next((m for m in firsts if m.startswith(lead)), None)
            if mark is None:
                if len(firsts) < _MAX_VOUCHERS:
                    firsts.append(f"{who}\x1f{day}")
            elif int(mark.split("\x1f", 1)[1]) < day:
                firsts.remove(mark)
                ids.append(who)
        while len(self._known) > _MAX_SOURCES:
            del self._known[next(iter(self._known))]

    def _success_after_burst(self, event: AuditEvent) -> list[Finding]:
        resp = event.response
        if resp is None or resp.auth is None:
            return []
        tgt = login_target(_rel(event), event.request)
        if tgt is None:
            return []
        key = f"login:{tgt[0]}:{tgt[1]}"
        n = self._per_target.count(key, event.ts)
        if n < self.cfg.login_failure_threshold:
            return []
        ids = (*self._per_target.tags(key, event.ts)[-(_MAX_EVENT_IDS - 1) :], event.request_id or "")
        return [
            self._make(
                event,
                title=f"Login to {tgt[1]} succeeded right after {n} failures",
                severity="critical",
                key=f"success-after:{key}",
                reasons=[
                    Reason("login_failures_before", str(n), f"< {self.cfg.login_failure_threshold}", 1.0),
                    Reason("source", event.remote_ip or "-", "", 0.4),
                ],
                event_ids=tuple(i for i in ids if i),
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: the two windows, the cooldowns, source peaks and known sources."""
        return {
            "per_target": self._per_target.state(),
            "per_source": self._per_source.state(),
            "source_ids": self._source_ids.state(),
            "cooldown": self._cooldown.state(),
            "peaks": {k: [r[0], [list(p) for p in r[1]]] for k, r in self._peaks.items()},
            "known": {
                k: [r[0], list(r[1]), list(r[2]) if len(r) > 2 else []] for k, r in self._known.items()
            },
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._per_target.load(state.get("per_target", {}))
        self._per_source.load(state.get("per_source", {}))
        self._source_ids.load(state.get("source_ids", {}))
        self._cooldown.load(state.get("cooldown", {}))
        self._peaks = {
            str(k): [int(r[0]), [[float(p[0]), float(p[1])] for p in r[1]]]
            for k, r in dict(state.get("peaks", {})).items()
        }
        self._known = {
            str(k): [float(v[0]), [str(i) for i in v[1]], [str(i) for i in (v[2] if len(v) > 2 else [])]]
            if isinstance(v, list)
            else [float(v), [], []]
            for k, v in dict(state.get("known", {})).items()
        }


class PermissionDeniedBurst(_Rule):
    """``permission-denied-burst``: one identity (or one source with bad tokens) denied again and
    again, or across many paths.

    Catches probing with a stolen or low-privilege token (many distinct denied paths) and token
    guessing or replay of revoked tokens (``anon:<address>`` identities). A single denial (a
    typo, a misconfigured capability) stays quiet.

    Reads: ``outcome`` (``denied``), ``identity.key``, ``path``, ``request_id``, ``ts``; response
    entries.
    """

    only_responses: ClassVar[bool] = True
    only_outcomes: ClassVar[frozenset[str] | None] = frozenset({"denied"})

    name = "permission-denied-burst"

    def __init__(self, config: RulesConfig | None = None) -> None:
        super().__init__(config)
        window = self.cfg.denied_window_minutes * 60.0
        self._count = SlidingCount(window)
        self._paths = DistinctCount(window)
        self._cooldown = Cooldown(window)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Count denials per identity; report a burst once per window."""
        if not event.is_response or event.outcome != "denied":
            return []
        c = self.cfg
        key = event.identity.key
        n = self._count.add(key, event.ts, event.request_id or "")
        d = self._paths.add(key, _where(event), event.ts)
        if (n < c.denied_threshold and d < c.denied_distinct_paths) or not self._cooldown.ready(
            key, event.ts
        ):
            return []
        window = _human(c.denied_window_minutes * 60.0)
        return [
            self._make(
                event,
                title=f"{n} permission denials for {who(event.identity)} across {d} path(s) within {window}",
                severity="high" if d >= 4 * c.denied_distinct_paths else "medium",
                key="burst",
                reasons=[
                    Reason("denied_paths", str(d), f"< {c.denied_distinct_paths} per {window}", 1.0),
                    Reason("denials", str(n), f"< {c.denied_threshold} per {window}", 0.8),
                    Reason("recent_paths", ", ".join(self._paths.values(key)[-6:]), "", 0.3),
                ],
                event_ids=tuple(self._count.tags(key, event.ts)[-_MAX_EVENT_IDS:]),
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: windows and cooldowns."""
        return {
            "count": self._count.state(),
            "paths": self._paths.state(),
            "cooldown": self._cooldown.state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._count.load(state.get("count", {}))
        self._paths.load(state.get("paths", {}))
        self._cooldown.load(state.get("cooldown", {}))


class ListSweep(_Rule):
    """``list-sweep``: enumeration, many LIST operations over distinct paths in a short window.

    Catches secret discovery (walking a KV tree, listing roles, accessors or entities) by a script
    with a stolen token. A person browsing lists a handful of paths.

    Reads: ``operation`` (``list``), ``identity.key``, ``path``, ``ts``; response entries of any
    outcome (denied lists are enumeration too).
    """

    only_responses: ClassVar[bool] = True
    only_operations: ClassVar[frozenset[str] | None] = frozenset({"list"})

    name = "list-sweep"

    def __init__(self, config: RulesConfig | None = None) -> None:
        super().__init__(config)
        window = self.cfg.list_sweep_window_minutes * 60.0
        self._paths = DistinctCount(window)
        self._ids = SlidingCount(window)
        self._cooldown = Cooldown(window)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Count distinct listed paths per identity; report a sweep once per window."""
        if not event.is_response or event.operation != "list":
            return []
        c = self.cfg
        key = event.identity.key
        d = self._paths.add(key, _where(event), event.ts)
        self._ids.add(key, event.ts, event.request_id or "")
        if d < c.list_sweep_threshold or not self._cooldown.ready(key, event.ts):
            return []
        window = _human(c.list_sweep_window_minutes * 60.0)
        return [
            self._make(
                event,
                title=f"Enumeration by {who(event.identity)}: {d} distinct paths listed within {window}",
                severity="medium",
                key="sweep",
                reasons=[
                    Reason("distinct_listed_paths", str(d), f"< {c.list_sweep_threshold} per {window}", 1.0),
                    Reason("recent_paths", ", ".join(self._paths.values(key)[-6:]), "", 0.3),
                ],
                event_ids=tuple(self._ids.tags(key, event.ts)[-_MAX_EVENT_IDS:]),
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: windows and cooldowns."""
        return {"paths": self._paths.state(), "ids": self._ids.state(), "cooldown": self._cooldown.state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._paths.load(state.get("paths", {}))
        self._ids.load(state.get("ids", {}))
        self._cooldown.load(state.get("cooldown", {}))


class SecretDestruction(_Rule):
    """``secret-destruction``: secrets deleted or destroyed outside the identity's habit.

    Catches sabotage and ransom-style destruction: KV v2 ``destroy/`` and ``metadata/`` deletes
    (permanent, high), soft deletes (``delete/`` or DELETE on ``data/``, medium) and KV v1 deletes
    (permanent, high), unless the identity has done the same kind of deletion on the same mount at
    least ``destruction_habit_min`` times before. Many destructions in a short window are critical
    whatever the habit.

    Reads: ``path``/``operation``/``mount_point``/``mount_type`` (KV API segment), ``outcome``,
    ``identity.key``; asks ``ctx.baselines.count(identity, "op_template", "<op> <path template>")``
    and keeps its own per-identity counts of ``"<kind> <mount>"``; response entries.
    """

    only_responses: ClassVar[bool] = True
    #: ``pending``: a request whose response was never logged is judged as the attempt it records.
    only_outcomes: ClassVar[frozenset[str] | None] = frozenset({"ok", "pending"})

    name = "secret-destruction"
    _MAX_IDENTITIES: ClassVar[int] = 10_000

    def __init__(self, config: RulesConfig | None = None) -> None:
        super().__init__(config)
        window = self.cfg.mass_destruction_window_minutes * 60.0
        self._habits: dict[str, dict[str, int]] = {}
        self._mass = SlidingCount(window)
        self._cooldown = Cooldown(window)

    @staticmethod
    def _kind(event: AuditEvent) -> tuple[str, bool] | None:
        """(kind, permanent) of a KV deletion, or None."""
        if event.mount_type != "kv":
            return None
        target = secret_target(event)
        if target.api == "destroy":
            return "destroy", True
        if target.api == "metadata" and target.op == "delete":
            return "delete-all-versions", True
        if target.api == "delete" or (target.api == "data" and target.op == "delete"):
            return "soft-delete", False
        if target.api == "plain" and target.op == "delete":
            return "delete", True
        return None

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report a deletion the identity does not usually make, and mass destruction."""
        if not event.is_response or event.outcome not in ("ok", "pending"):
            return []
        kind = self._kind(event)
        if kind is None:
            return []
        what, permanent = kind
        c = self.cfg
        ident = event.identity
        template = f"{what} {event.mount_point or ''}"
        habit = self._habits.get(ident.key, {})
        # The engine's baseline counts exact op templates ("update logos/destroy/app/x"); the
        # mount-level habit ("destroy logos/") is kept here.
        exact = f"{event.operation} {template_path(event.path, own_names(ident.display_name))}"
        seen = max(habit.get(template, 0), ctx.baselines.count(ident.key, "op_template", exact))
        target = secret_target(event).path
        out: list[Finding] = []
        n = self._mass.add(ident.key, event.ts, event.request_id or "")
        if n >= c.mass_destruction_threshold and self._cooldown.ready(ident.key, event.ts):
            window = _human(c.mass_destruction_window_minutes * 60.0)
            out.append(
                self._make(
                    event,
                    title=f"Mass secret destruction by {who(ident)}: {n} deletions within {window}",
                    severity="critical",
                    key="mass",
                    reasons=[
                        Reason("deletions", str(n), f"< {c.mass_destruction_threshold} per {window}", 1.0),
                        Reason("latest", f"{what} {target}", "", 0.4),
                    ],
                    event_ids=tuple(self._mass.tags(ident.key, event.ts)[-_MAX_EVENT_IDS:]),
                )
            )
        elif seen < c.destruction_habit_min:
            out.append(
                self._make(
                    event,
                    title=f"Secret {'destroyed' if permanent else 'deleted'}"
                    f"{'' if event.outcome == 'ok' else ' (' + _verdict(event) + ')'} by {who(ident)}: "
                    f"{what} {target}",
                    severity="high" if permanent else "medium",
                    key=target,
                    reasons=[
                        Reason(
                            "operation", f"{what} {target}", "permanent" if permanent else "recoverable", 1.0
                        ),
                        Reason(
                            "habit",
                            f"{seen:g} earlier {what} on {event.mount_point}",
                            f">= {c.destruction_habit_min} to be routine",
                            0.6,
                        ),
                    ],  # fmt: skip
                    labels={"kind": what},
                )
            )
        if event.outcome == "ok":  # an attempt whose outcome is unknown is no habit
            self._remember(ident.key, template)
        return out

    def _remember(self, key: str, template: str) -> None:
        habit = self._habits.pop(key, {})
        self._habits[key] = habit
        if template in habit or len(habit) < 64:
            habit[template] = habit.get(template, 0) + 1
        if len(self._habits) > self._MAX_IDENTITIES:
            del self._habits[next(iter(self._habits))]

    def state(self) -> dict[str, Any]:
        """Plain-data state: per-identity deletion habits, the mass window and cooldowns."""
        return {
            "habits": {k: dict(v) for k, v in self._habits.items()},
            "mass": self._mass.state(),
            "cooldown": self._cooldown.state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._habits = {
            str(k): {str(t): int(n) for t, n in dict(v).items()}
            for k, v in dict(state.get("habits", {})).items()
        }
        self._mass.load(state.get("mass", {}))
        self._cooldown.load(state.get("cooldown", {}))


class RaftSnapshot(_Rule):
    """``raft-snapshot``: a Raft storage snapshot taken or restored, or its automation changed.

    Catches wholesale exfiltration (a snapshot holds every secret, encrypted under the barrier
    keyring an attacker may also hold) and rollback or planting of storage by restore.

    Reads: namespace-relative ``request.path`` (``sys/storage/raft/snapshot*``), ``operation``,
    ``outcome``; response entries.
    """

    only_responses: ClassVar[bool] = True

    name = "raft-snapshot"

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report snapshot reads, restores and automatic-snapshot configuration."""
        rel = _rel(event)
        if not event.is_response or not rel.startswith("sys/storage/raft/snapshot"):
            return []
        op = event.operation or ""
        if rel.startswith("sys/storage/raft/snapshot-auto"):
            if op not in _CHANGE_OPS:
                return []
            what, severity = "automatic snapshot configuration changed", "high"
        elif op == "read":
            what, severity = "snapshot taken", "critical"
        else:
            what, severity = "snapshot restore", "critical"
        if event.outcome != "ok" and severity == "critical":
            severity = "high"
        return [
            self._make(
                event,
                title=f"Raft {what} ({_verdict(event)}) by {who(event.identity)}",
                severity=severity,
                key=rel,
                reasons=[
                    Reason("operation", f"{op} {rel}", "snapshots only by the backup job", 1.0),
                    Reason("outcome", event.outcome, "", 0.4),
                ],
            )
        ]


class KeyExport(_Rule):
    """``key-export``: key material leaving the server.

    Catches transit key export (``export/``, ``byok-export/``), plaintext key backups
    (``backup/``), a transit key being made exportable (the step before export, irreversible),
    PKI keys generated with ``exported`` (the CA's private key is returned to the caller), backups
    of the encrypted unseal keys (``sys/rekey/backup``) and raw storage access (``sys/raw``).
    Denied attempts are still reported (high).

    Reads: ``mount_type``/``mount_point``, namespace-relative ``request.path``, ``operation``,
    ``request.data.exportable`` / ``allow_plaintext_backup`` (bools, never HMAC'd), ``outcome``;
    response entries.
    """

    only_responses: ClassVar[bool] = True

    name = "key-export"

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report key export, backup, exportability and raw storage access."""
        if not event.is_response:
            return []
        rel = _rel(event)
        what: str | None = None
        severity = "critical"
        if rel.startswith("sys/raw"):
            what = f"raw storage access ({event.operation} {rel})"
        elif rel.startswith(("sys/rekey/backup", "sys/rekey-recovery-key/backup")):
            if event.operation in ("read", "delete"):
                what = f"unseal key backup {'read' if event.operation == 'read' else 'deleted'} ({rel})"
        elif (
            event.mount_type == "pki"
            and event.operation in ("create", "update")
            and _PKI_EXPORTED.search(rel)
        ):
            what = f"PKI private key generated for export ({rel})"
        elif event.mount_type == "transit" and event.mount_point and event.path.startswith(event.mount_point):
            sub = event.path[len(event.mount_point) :]
            segment = sub.split("/", 1)[0]
            if segment in ("export", "byok-export") and event.operation == "read":
                what = f"transit key export ({sub})"
            elif segment == "backup" and event.operation == "read":
                what = f"transit key backup ({sub})"
            elif segment == "keys" and event.operation in ("create", "update"):
                data = event.request.data or {}
                flags = [k for k in ("exportable", "allow_plaintext_backup") if data.get(k) is True]
                if flags:
                    what, severity = f"transit key made {' and '.join(flags)} ({sub})", "high"
        if what is None:
            return []
        if event.outcome != "ok":
            severity = "high" if severity == "critical" else "medium"
        return [
            self._make(
                event,
                title=f"Key material export {_verdict(event)} by {who(event.identity)}: {what}",
                severity=severity,
                key=_where(event),
                reasons=[
                    Reason("operation", what, "keys never leave the server", 1.0),
                    Reason("outcome", event.outcome, "", 0.4),
                ],
            )
        ]
