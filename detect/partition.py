"""Which detector state is keyed by what: the split between per-identity and cross-identity work.

``vaultwatch run`` consumes a topic keyed by identity, so one partition's engine sees only its own
identities. That is right for a detector whose state is keyed by the event's identity; it is wrong
for one whose state is keyed by something several identities share. This module is the one place
that says which is which (an audit of :func:`detect.rules.default_rules`), and gives, for each
cross-identity *scope*, the key an event is correlated under. It is pure: no I/O, no clock.

Scopes (the key of each, for one event):

=============  ================================================================================
``identity``   the event's identity (the stage-1 partition key): partition-local is correct
``address``    the /24 (IPv4) or /64 (IPv6) of the source address: spraying from one source and
               its neighbours across many accounts, and the sources that authenticated
``account``    the login target account (``login:<mount>:<name>``) of a failure *and* of a
               success: a failure burst against one account, and a success right after it (the
               success is filed under the entity that logged in, another identity)
``peers``      the peer group (policy set without ``default``, :func:`detect.correlate.peer_group`),
               or the identity when it has none: habits counted per identity *and* per peer group
``roles``      the access model's peer group (:func:`detect.policy.peer_group`): roles inferred
               from what a group's members did
``global``     one key: organisation-wide state (familiar addresses of credential stuffing, area
               ownership across groups, rotation deadlines moved by any deploy, audit streams)
=============  ================================================================================

The audit (detector → scopes):

* identity: ``root-token-use``, ``audit-tampering``, ``policy-change``, ``auth-method-change``,
  ``secrets-engine-change``, ``plaintext-secret-in-audit``, ``token-excessive-ttl``,
  ``orphan-token``, ``token-privilege-escalation`` (asks the creator's baseline),
  ``permission-denied-burst`` (keyed by the identity, ``anon:<address>`` for bad tokens),
  ``list-sweep``, ``secret-destruction``, ``raft-snapshot``, ``key-export``, ``session-hijack`` (a
  token is used by one identity: its accessor, networks and pair habits are the identity's),
  ``seal-attempt`` (habits: but step-downs are rare and by administrators; see below), and any
  detector this table does not name (the access model's drift watch, plug-ins).
* ``login-failure-burst``: ``account`` for its per-account burst and success-after-burst findings,
  ``address`` for spraying (its per-source windows, peaks per address and /24, known sources).
  The detector runs once per scope; each copy keeps only its own scope's findings
  (:data:`FINDING_FILTERS`).
* ``peers``: ``accessor-enumeration``, ``capability-probing``, ``mass-revocation``,
  ``approle-role-change``, ``identity-change``, ``dynamic-credential-burst``, ``seal-attempt``.
* ``global``: ``credential-stuffing``, ``secret-id-minting`` (the other minters of a role),
  ``sensitive-first-access``, ``rotation-overdue``, ``audit-device-gap``,
  ``audit-stream-silence``.
* ``roles``: ``access-model-violation``.

Facts a cross detector asks of the *identity's* baseline (``ctx.baselines``: the subnet novelty of
``session``-style habit checks, ``in_learning``) live in the stage-1 engine that owns the identity;
:func:`facts_of` reads them there, before the engine learns the event (exactly when a single engine
would ask), and :class:`CarriedBaselines` answers the same questions from the carried facts.

What the behavioural core needs from other identities (peer-group and organisation priors, the
organisation's networks used by :meth:`detect.engine.Engine._habit`) is not a detector's state and
is not split here: that is the priors job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from ingest.event import AuditEvent
from ingest.identity import login_target

from .correlate import peer_group as correlate_peer_group
from .policy import peer_group as policy_peer_group
from .templates import subnet_of
from .types import BaselineView, DetectContext, Detector, Finding

__all__ = [
    "ACCOUNT",
    "ADDRESS",
    "CROSS_SCOPES",
    "CarriedBaselines",
    "FINDING_FILTERS",
    "Facts",
    "GLOBAL",
    "IDENTITY",
    "PEERS",
    "ROLES",
    "SCOPES",
    "Scoped",
    "correlation_keys",
    "facts_of",
    "needed_scopes",
    "scopes_of",
    "split",
]

IDENTITY: Final = "identity"
ADDRESS: Final = "address"
ACCOUNT: Final = "account"
PEERS: Final = "peers"
ROLES: Final = "roles"
GLOBAL: Final = "global"
#: The cross-identity scopes, in the order their engines run.
CROSS_SCOPES: Final = (ADDRESS, ACCOUNT, PEERS, ROLES, GLOBAL)

#: Detector name → the scopes its state is keyed by (a name not listed is ``identity``).
SCOPES: Final[Mapping[str, tuple[str, ...]]] = {
    "login-failure-burst": (ACCOUNT, ADDRESS),
    "credential-stuffing": (GLOBAL,),
    "accessor-enumeration": (PEERS,),
    "capability-probing": (PEERS,),
    "mass-revocation": (PEERS,),
    "secret-id-minting": (GLOBAL,),
    "approle-role-change": (PEERS,),
    "identity-change": (PEERS,),
    "dynamic-credential-burst": (PEERS,),
    "seal-attempt": (PEERS,),
    "sensitive-first-access": (GLOBAL,),
    "access-model-violation": (ROLES,),
    "rotation-overdue": (GLOBAL,),
    "audit-device-gap": (GLOBAL,),
    "audit-stream-silence": (GLOBAL,),
}


def _spray(f: Finding) -> bool:
    return f.dedup_key.endswith(":spray")


#: ``(detector, scope)`` → which of the copy's findings belong to that scope (all when absent).
FINDING_FILTERS: Final[Mapping[tuple[str, str], Callable[[Finding], bool]]] = {
    ("login-failure-burst", ADDRESS): _spray,
    ("login-failure-burst", ACCOUNT): lambda f: not _spray(f),
}

#: Scopes that judge request entries too (the others judge responses only: every detector in
#: them declares ``only_responses``).
_REQUESTS: Final = frozenset({PEERS, GLOBAL})


def scopes_of(name: str) -> tuple[str, ...]:
    """The scopes of detector ``name`` (``("identity",)`` when it is not a cross detector)."""
    return SCOPES.get(name, (IDENTITY,))


def correlation_keys(scope: str, event: AuditEvent) -> tuple[str, ...]:
    """The keys ``event`` is correlated under in ``scope`` (empty: no detector of the scope needs it).

    ``global`` is one key, ``*``; ``address`` the source's /24; ``peers`` and ``roles`` ``g:<group>``
    (``i:<identity>`` without a group); ``account`` ``login:<mount>:<name>``.
    """
    resp = event.is_response
    if scope == GLOBAL:
        return ("*",)
    if scope in (PEERS, ROLES):
        ident = event.identity
        group = correlate_peer_group(ident) if scope == PEERS else policy_peer_group(ident)
        if not resp and scope not in _REQUESTS:
            return ()
        return (f"g:{group}" if group else f"i:{ident.key}",)
    if not resp:
        return ()
    if scope == ADDRESS:
        ip = event.remote_ip
        return (subnet_of(ip),) if ip and event.outcome in ("ok", "login_failed") else ()
    if scope == ACCOUNT:
        if event.outcome == "login_failed":
            return (event.identity.key,)
        if event.outcome == "ok" and event.response is not None and event.response.auth is not None:
            tgt = login_target(event.request.path or event.path, event.request)
            return (f"login:{tgt[0]}:{tgt[1]}",) if tgt is not None else ()
        return ()
    raise ValueError(f"unknown scope {scope!r}")


class Facts(msgspec.Struct, frozen=True, array_like=True):
    """What the stage-1 engine's baseline says of the event's identity, before learning it."""

    total: float = 0.0
    subnet: float = 0.0
    learning: bool = True


def facts_of(event: AuditEvent, baselines: BaselineView) -> Facts:
    """The baseline facts cross detectors ask about ``event``'s identity (see the module)."""
    key = event.identity.key
    ip = event.remote_ip
    total = baselines.total(key)
    subnet = baselines.count(key, "subnet", subnet_of(ip)) if ip and total > 0 else 0.0
    return Facts(total=total, subnet=subnet, learning=baselines.in_learning(key, event.ts))


class CarriedBaselines:
    """A :class:`~detect.types.BaselineView` answering from :class:`Facts` carried with the event.

    It knows the current event's identity only; any other question answers "never seen".
    """

    def __init__(self) -> None:
        self.key = ""
        self.ip: str | None = None
        self.facts = Facts()

    def set(self, event: AuditEvent, facts: Facts) -> None:
        self.key, self.ip, self.facts = event.identity.key, event.remote_ip, facts

    def in_learning(self, identity_key: str, now: float) -> bool:
        return self.facts.learning if identity_key == self.key else True

    def count(self, identity_key: str, feature: str, value: str, horizon: str = "long") -> float:
        if identity_key != self.key or feature != "subnet" or not self.ip or value != subnet_of(self.ip):
            return 0.0
        return self.facts.subnet

    def total(self, identity_key: str, horizon: str = "long") -> float:
        return self.facts.total if identity_key == self.key else 0.0


class _Context:
    def __init__(self, baselines: BaselineView, config: dict[str, Any]) -> None:
        self._baselines = baselines
        self._config = config

    @property
    def baselines(self) -> BaselineView:
        return self._baselines

    @property
    def config(self) -> dict[str, Any]:
        return self._config


class Scoped:
    """One detector's copy for one scope: observes with carried facts and keeps its scope's findings.

    Everything else (name, entry filters, ``state``/``load``, ``due``, ``witness``) is the
    detector's own.
    """

    def __init__(self, inner: Detector, scope: str, baselines: CarriedBaselines) -> None:
        self.inner = inner
        self.scope = scope
        self.name = inner.name
        self._baselines = baselines
        self._keep = FINDING_FILTERS.get((inner.name, scope))
        for attr in ("only_responses", "only_operations", "only_outcomes", "judges_unanswered"):
            if hasattr(inner, attr):
                setattr(self, attr, getattr(inner, attr))
        for attr in ("due", "witness"):
            fn = getattr(inner, attr, None)
            if fn is not None:
                setattr(self, attr, self._filtered(fn) if attr == "due" else fn)

    def _filtered(self, fn: Callable[..., list[Finding]]) -> Callable[..., list[Finding]]:
        keep = self._keep

        def call(*args: Any) -> list[Finding]:
            found = fn(*args)
            return found if keep is None else [f for f in found if keep(f)]

        return call

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        found = self.inner.observe(event, _Context(self._baselines, ctx.config))
        keep = self._keep
        return found if keep is None else [f for f in found if keep(f)]

    def state(self) -> dict[str, Any]:
        return self.inner.state()

    def load(self, state: dict[str, Any]) -> None:
        self.inner.load(state)


def split(
    make: Callable[[], list[Detector]], baselines: CarriedBaselines
) -> tuple[list[Detector], dict[str, list[Detector]]]:
    """The identity-scoped detectors, and per cross scope its (fresh, :class:`Scoped`) copies.

    ``make`` builds a full detector list (``default_rules(config)``); it is called once per scope
    that needs a copy, so no two scopes share a detector's state.
    """
    first = make()
    local = [d for d in first if scopes_of(d.name) == (IDENTITY,)]
    cross: dict[str, list[Detector]] = {}
    for scope in CROSS_SCOPES:
        dets = [d for d in make() if scope in scopes_of(d.name)]
        if dets:
            cross[scope] = [Scoped(d, scope, baselines) for d in dets]
    return local, cross


def needed_scopes(cross: Mapping[str, Iterable[Detector]]) -> tuple[str, ...]:
    """The scopes that have at least one detector, in :data:`CROSS_SCOPES` order."""
    return tuple(s for s in CROSS_SCOPES if any(True for _ in cross.get(s, ())))
