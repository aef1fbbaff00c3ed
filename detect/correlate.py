"""Cross-identity and habit-aware detectors for the threat kinds the single-entry rules miss.

One module for all the detectors that correlate acts across tokens, sources, roles and identities:
they share the window, habit and network helpers at its top, which is why it is long.

Each detector is a small class like those of :mod:`detect.rules` (``name``, ``family``,
``observe``, plain-data ``state``/``load``, bounded memory, event time only). None keys on a
policy, role or mount *name*: they read what the entry itself says (operation, outcome, the shape
of the path inside its mount, the mount *type*, token fields, the source address) and compare it
with what the same identity, or its peer group (identities holding the same policy set, ``default``
aside), has done before.

* ``session-hijack``: one token used from two distant networks within minutes;
* ``credential-stuffing``: failed password logins from many unfamiliar addresses on many accounts;
* ``accessor-enumeration``: listing token accessors, or bursts of accessor lookups;
* ``capability-probing``: bursts of capability checks over many distinct paths;
* ``mass-revocation``: bursts of token or lease revocations, and prefix/force revocations;
* ``secret-id-minting``: an AppRole secret-id minted for a role the identity never minted for;
* ``approle-role-change``: an AppRole role written by an identity that does not write roles;
* ``identity-change``: entity, alias and group changes (attaching a login to another entity,
  merging entities, growing a group's or entity's policies);
* ``dynamic-credential-burst``: dynamic credentials issued far beyond the identity's habit;
* ``seal-attempt``: ``sys/seal`` and ``sys/step-down``, attempted or done.

"Habit" is counted by the detectors themselves from the acts they judge (one earlier act by the
identity, or ``habit_min`` by its peers). During the warm-up after a detector's first judged entry
(``warmup_hours``), acts establish habit and are reported at ``low`` (stored, not paged). A
habitual act stays ``low`` unless something else is unusual: it
comes from a network the identity never used (``ctx.baselines.count(key, "subnet", ...)``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections import deque
from typing import Any, ClassVar, Final

import msgspec

from detect.alert import Reason
from ingest.event import AuditEvent, Identity
from ingest.identity import login_target

from .config import convert_positive
from .explain import person
from .policy import _human, _Recent
from .rulebase import RuleBase
from .rulebase import rel_path as _rel
from .templates import subnet_of
from .types import DetectContext, Detector, Finding
from .windows import Cooldown, DistinctCount, SlidingCount

__all__ = [
    "CorrelateConfig",
    "correlate_rules",
    "SessionHijack",
    "CredentialStuffing",
    "AccessorEnumeration",
    "CapabilityProbing",
    "MassRevocation",
    "SecretIdMinting",
    "AppRoleRoleChange",
    "IdentityChange",
    "DynamicCredentialBurst",
    "SealAttempt",
    "network_of",
]

_CHANGE_OPS: Final = frozenset({"create", "update", "delete", "patch"})
_MAX_EVENT_IDS: Final = 50
_MAX_KEYS: Final = 20_000
_MAX_ACTS: Final = 64
_DAY: Final = 86400.0


class CorrelateConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the correlating detectors (durations in the unit their name says, event time)."""

    #: ``session-hijack``: how close in time two uses of one token from distant networks must be,
    #: and how many earlier tokens of the identity must have shown the same pair to be a habit.
    hijack_window_minutes: float = 120.0
    hijack_habit_tokens: int = 1
    #: ``credential-stuffing``: distinct unfamiliar sources, distinct accounts and failures.
    stuffing_sources: int = 3
    stuffing_accounts: int = 3
    stuffing_failures: int = 2
    stuffing_window_minutes: float = 30.0
    #: Acts by an identity's peers before they are a habit of the peer group (one by the identity
    #: itself is its habit).
    habit_min: int = 3
    #: Hours after a detector's first judged entry during which acts establish habit (``low``):
    #: when monitoring starts, everyone's routine is a "first time"; a week sees weekly routines.
    warmup_hours: float = 168.0
    #: Volume bursts: at least this many in the window, and ``burst_factor`` times the identity's
    #: (or its peers') largest earlier window.
    burst_factor: float = 4.0
    burst_window_minutes: float = 10.0
    accessor_lookup_burst: int = 10
    capability_probe_paths: int = 10
    revocation_burst: int = 5
    dynamic_credential_burst: int = 20

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CorrelateConfig:
        """Build from a mapping, ignoring keys that other detectors own."""
        return convert_positive(cls, data, "correlation setting")


def correlate_rules(config: dict[str, Any] | None = None) -> list[Detector]:
    """Every correlating detector, configured from the flat detection settings ``config``."""
    cfg = CorrelateConfig.from_dict(config)
    return [
        SessionHijack(cfg),
        CredentialStuffing(cfg),
        AccessorEnumeration(cfg),
        CapabilityProbing(cfg),
        MassRevocation(cfg),
        SecretIdMinting(cfg),
        AppRoleRoleChange(cfg),
        IdentityChange(cfg),
        DynamicCredentialBurst(cfg),
        SealAttempt(cfg),
    ]


# -- helpers ----------------------------------------------------------------------------------------
def network_of(ip: str | None) -> str | None:
    """The /16 of an IPv4 address or the /48 of an IPv6 address, or None when not a routable
    address (loopback, link-local and unspecified addresses are the host itself or an agent on it).

    Answers are cached per address (a pure function of its argument; addresses repeat on almost
    every entry, and parsing them was a measurable share of replay time).

    >>> network_of("10.1.2.3"), network_of("2001:db8:1:2::5"), network_of("127.0.0.1"), network_of("x")
    ('10.1.0.0/16', '2001:db8:1::/48', None, None)
    """
    if not ip:
        return None
    return _network_of(ip)


@functools.lru_cache(maxsize=65_536)
def _network_of(ip: str) -> str | None:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback or addr.is_link_local or addr.is_unspecified:
        return None
    bits = 16 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def _sub(event: AuditEvent) -> str | None:
    """The path inside its mount (namespace-relative), or None when the mount is unknown."""
    mount = event.mount_point
    rel = _rel(event)
    if not mount:
        return None
    if rel.startswith(mount):
        return rel[len(mount) :]
    ns = event.namespace or ""
    full = event.path or rel
    if full.startswith(ns + mount):
        return full[len(ns + mount) :]
    return None


def peer_group(ident: Identity) -> str:
    """The peer group of an identity: its policy set without ``default`` (empty: no group)."""
    return ",".join(sorted(p for p in ident.policies if p != "default"))


def _who(ident: Identity) -> str:
    """The identity as a person reads it (AppRole role, user and auth mount, token name)."""
    return person(ident)


def _verdict(event: AuditEvent) -> str:
    return {"ok": "succeeded", "pending": "attempted", "denied": "denied"}.get(event.outcome, "failed")


def _lru_touch(store: dict[str, Any], key: str, default: Any, limit: int = _MAX_KEYS) -> Any:
    """``store[key]`` (created from ``default``), moved to the most-recent end; oldest key evicted."""
    value = store.pop(key, None)
    if value is None:
        value = default
    store[key] = value
    if len(store) > limit:
        del store[next(iter(store))]
    return value


class _Acts:
    """How often each identity, and each peer group, did each act (bounded, plain data)."""

    def __init__(self) -> None:
        self.by_ident: dict[str, dict[str, int]] = {}
        self.by_group: dict[str, dict[str, int]] = {}

    def seen(self, ident: Identity, act: str) -> tuple[int, int]:
        """(identity count, peer-group count) of ``act`` before now."""
        own = self.by_ident.get(ident.key, {}).get(act, 0)
        group = peer_group(ident)
        peers = self.by_group.get(group, {}).get(act, 0) if group else 0
        return own, peers

    def known(self, ident: Identity) -> bool:
        """True when the identity has any recorded act."""
        return bool(self.by_ident.get(ident.key))

    def add(self, ident: Identity, act: str) -> None:
        for store, key in ((self.by_ident, ident.key), (self.by_group, peer_group(ident))):
            if not key:
                continue
            acts: dict[str, int] = _lru_touch(store, key, {})
            if act in acts or len(acts) < _MAX_ACTS:
                acts[act] = acts.get(act, 0) + 1

    def state(self) -> dict[str, Any]:
        return {
            "ident": {k: dict(v) for k, v in self.by_ident.items()},
            "group": {k: dict(v) for k, v in self.by_group.items()},
        }

    def load(self, state: dict[str, Any]) -> None:
        def conv(d: Any) -> dict[str, dict[str, int]]:
            return {str(k): {str(a): int(n) for a, n in dict(v).items()} for k, v in dict(d or {}).items()}

        self.by_ident = conv(state.get("ident"))
        self.by_group = conv(state.get("group"))


class _Seen:
    """A bounded set of strings, most recently added last (plain data: a list)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: dict[str, None] = {}

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items.pop(item, None)
        self._items[item] = None
        if len(self._items) > self.limit:
            del self._items[next(iter(self._items))]

    def dump(self) -> list[str]:
        return list(self._items)

    def restore(self, items: list[str]) -> None:
        self._items = dict.fromkeys(str(i) for i in items)


class _Peaks:
    """Per key, the largest number of acts in any earlier fixed window: a habit of volume.

    Each key holds ``[window index, count in it, largest earlier count, first ts, windows with
    acts]``. The current window never counts toward the peak it is compared with.
    """

    def __init__(self, window: float) -> None:
        self.window = float(window)
        self._keys: dict[str, list[float]] = {}

    def peak(self, key: str) -> tuple[int, float, int]:
        """(largest earlier window count, first act ts, windows with acts) of ``key``."""
        row = self._keys.get(key)
        if row is None:
            return 0, 0.0, 0
        return int(row[2]), row[3], int(row[4])

    def add(self, key: str, ts: float) -> None:
        idx = float(ts // self.window)
        row: list[float] = _lru_touch(self._keys, key, [idx, 0.0, 0.0, ts, 0.0])
        if row[0] != idx:
            row[2] = max(row[2], row[1])
            row[0], row[1] = idx, 0.0
        if row[1] == 0.0:
            row[4] += 1
        row[1] += 1

    def state(self) -> dict[str, Any]:
        return {"keys": {k: list(v) for k, v in self._keys.items()}}

    def load(self, state: dict[str, Any]) -> None:
        self._keys = {str(k): [float(x) for x in v] for k, v in dict(state.get("keys", {})).items()}


class _Base(RuleBase):
    """A detector of this module: :class:`~detect.rulebase.RuleBase` with the correlation
    configuration, a warm-up, and the novelty of the source network."""

    only_responses: ClassVar[bool] = True

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        self.cfg = config or CorrelateConfig()
        self._start: float | None = None

    def state(self) -> dict[str, Any]:
        """Plain-data state (stateless detectors return only their warm-up start)."""
        return self._base_state()

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)

    def _warming(self, event: AuditEvent) -> bool:
        """True during the warm-up after the first entry this detector judged."""
        if self._start is None:
            self._start = event.ts
        return event.ts - self._start < self.cfg.warmup_hours * 3600.0

    def _base_state(self) -> dict[str, Any]:
        return {"start": self._start}

    def _base_load(self, state: dict[str, Any]) -> None:
        start = state.get("start")
        self._start = None if start is None else float(start)

    @staticmethod
    def _new_network(event: AuditEvent, ctx: DetectContext) -> str | None:
        """The source subnet when the (learned) identity never used it before, else None."""
        ip = event.remote_ip
        key = event.identity.key
        if not ip or ctx.baselines.total(key) <= 0:
            return None
        net = subnet_of(ip)
        return net if ctx.baselines.count(key, "subnet", net) <= 0 else None

    def _judged(self, event: AuditEvent) -> bool:
        """Authenticated, non-root callers (root activity is ``root-token-use``'s)."""
        self._warming(event)
        ident = event.identity
        return not ident.is_root and ident.kind not in ("login", "anonymous")

    def _habit_severity(
        self,
        event: AuditEvent,
        ctx: DetectContext,
        acts: _Acts,
        act: str,
        *,
        novel: str,
        reasons: list[Reason],
        what: str,
    ) -> str:
        """Severity of a privileged act judged against the identity's and its peers' habit.

        ``novel`` is the severity of a first-time act by a learned identity; a habitual act (the
        identity or its peers did it ``habit_min`` times) is ``low`` unless it comes from a network
        the identity never used; an identity still learning establishes habit at ``low``. Appends
        the evidence to ``reasons``.
        """
        ident = event.identity
        own, peers = acts.seen(ident, act)
        h = self.cfg.habit_min
        new_net = self._new_network(event, ctx)
        learning = self._warming(event)
        group = peer_group(ident)
        reasons.append(
            Reason(
                "habit",
                f"{own} earlier {what} by this identity; {peers} by its peers ({group or 'no peer group'})",
                f"any by the identity, or >= {h} by its peers, to be routine",
                0.7,
            )
        )
        if event.outcome == "denied":
            severity = "medium"
        elif own or peers >= h:
            severity = "medium" if new_net else "low"
        elif learning:
            severity = "low"
        else:
            severity = novel
        if new_net:
            reasons.append(Reason("network", new_net, "networks this identity used before", 0.6))
        return severity


def _names(accounts: set[str], limit: int = 3) -> str:
    """The first account names of ``mount:name`` keys, for a title (``a, b, c, +2``)."""
    names = sorted(a.split(":", 1)[1] for a in accounts)
    more = f", +{len(names) - limit}" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _bounded_ids(ids: list[str]) -> tuple[str, ...]:
    return tuple(i for i in ids if i)[-_MAX_EVENT_IDS:]


# -- session hijack -----------------------------------------------------------------------------------
class SessionHijack(_Base):
    """``session-hijack``: one token used from two distant networks at once.

    Catches a stolen token replayed while its owner still uses it: the same accessor at addresses
    in different /16 (IPv4) or /48 (IPv6) networks *alternating* within ``hijack_window_minutes``
    (network A, then B, then A again, or B again after A resumed): two clients hold the token at
    the same time. A token that moves once and stays (a laptop leaving the office for the VPN, a
    first day on a new VPN) is one client roaming: stored at ``low``, never paged. Alternation is
    high when at least one of the two networks is new to the identity (it never used it on an
    earlier day, UTC), medium when it used both on earlier days, and not reported when this
    identity's tokens habitually alternate between those two networks (``hijack_habit_tokens``
    earlier tokens showed the same pair: a split-tunnel VPN): what the identity did before decides,
    not any address or network name.

    Reads: ``auth.accessor`` (or the HMAC'd ``auth.client_token`` of batch tokens), ``remote_ip``,
    ``identity``, ``request_id``, ``ts``; response entries of authenticated requests.
    """

    name = "session-hijack"

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        # accessor -> {network: [last ts, last ip, [recent request ids]]}
        self._tokens: dict[str, dict[str, list[Any]]] = {}
        # identity key -> {"netA|netB": tokens that showed the pair}
        self._pairs: dict[str, dict[str, int]] = {}
        # identity key -> {network: the first UTC day (days since the epoch) it was used from there}
        self._nets: dict[str, dict[str, int]] = {}
        self._reported = _Recent(_MAX_KEYS)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Compare this use of the token with its recent uses from other networks."""
        if not event.is_response:
            return []
        token = event.auth.accessor or event.auth.client_token
        net = network_of(event.remote_ip)
        if not token or net is None or event.identity.kind in ("login", "anonymous"):
            return []
        window = self.cfg.hijack_window_minutes * 60.0
        nets: dict[str, list[Any]] = _lru_touch(self._tokens, token, {})
        mine = nets.get(net)
        rid = event.request_id or ""
        out: list[Finding] = []
        for other, (last, other_ip, other_ids) in list(nets.items()):
            if other == net or event.ts - last > window:
                continue
            pair = "|".join(sorted((net, other)))
            # Back on a network this token used before the other one's latest use: two clients.
            both = mine is not None and event.ts - mine[0] <= window and mine[0] < last
            kind = "both" if both else "move"
            if not self._reported.add(f"{token}:{pair}:{kind}", event.ts):
                continue
            out.extend(self._judge(event, pair, net, other, other_ip, last, list(other_ids), both=both))
        self._learn_network(event.identity.key, net, event.ts)
        row = mine
        if row is None:
            row = nets[net] = [event.ts, event.remote_ip, []]
        row[0], row[1] = event.ts, event.remote_ip
        if rid:
            row[2] = [*row[2][-4:], rid]
        for old in [n for n, r in nets.items() if event.ts - r[0] > window]:
            del nets[old]
        while len(nets) > 8:
            del nets[next(iter(nets))]
        return out

    def _judge(
        self,
        event: AuditEvent,
        pair: str,
        net: str,
        other: str,
        other_ip: str,
        last: float,
        other_ids: list[str],
        *,
        both: bool,
    ) -> list[Finding]:
        ident = event.identity
        pairs: dict[str, int] = _lru_touch(self._pairs, ident.key, {})
        if not both:
            # One count per token (at its first switch); alternation compares with earlier tokens.
            habit = pairs.get(pair, 0)
            if pair in pairs or len(pairs) < _MAX_ACTS:
                pairs[pair] = habit + 1
        else:
            habit = max(0, pairs.get(pair, 0) - 1)
        if habit >= self.cfg.hijack_habit_tokens:
            return []
        unknown = [n for n in (other, net) if self._unused_before(ident.key, n, event.ts)]
        gap = _human(max(0.0, event.ts - last))
        who = person(ident)
        if both:
            # Two clients at once: high when a network is new to the identity; medium when it used
            # both on earlier days (an attacker may come back from where it logged in before);
            # a pair this identity's earlier tokens alternated between is its habit (above).
            severity = "high" if unknown else "medium"
            title = (
                f"Session hijack: one token of {who} used at once from {other_ip} and {event.remote_ip} "
                f"(alternating, {gap} apart)"
            )
            seen = f"{other} and {net} alternating within {gap}"
            usual = "one client per token: a token that roams moves once and stays"
        else:
            severity = "low"
            title = f"Token of {who} moved from {other_ip} to {event.remote_ip} ({gap} later)"
            seen = f"{other} then {net} ({gap} later), not back"
            usual = "one network per token session; a single move is a client roaming"
        return [
            self._make(
                event,
                title=title,
                severity=severity,
                key=f"{event.auth.accessor or '-'}:{pair}:{'both' if both else 'move'}",
                reasons=[
                    Reason("networks", seen, usual, 1.0),
                    Reason(
                        "habit",
                        f"{habit} earlier token(s) of this identity used from both",
                        f">= {self.cfg.hijack_habit_tokens} to be routine",
                        0.6,
                    ),
                    Reason("unfamiliar_networks", ", ".join(unknown) or "none", "", 0.4),
                ],
                event_ids=_bounded_ids([*other_ids, event.request_id or ""]),
                first_ts=last,
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: recent networks per token, pair habits, reported pairs."""
        return {
            **self._base_state(),
            "tokens": {
                k: {n: [r[0], r[1], list(r[2])] for n, r in v.items()} for k, v in self._tokens.items()
            },
            "pairs": {k: dict(v) for k, v in self._pairs.items()},
            "nets": {k: dict(v) for k, v in self._nets.items()},
            "reported": self._reported.dump(),
        }

    def _learn_network(self, key: str, net: str, ts: float) -> None:
        nets: dict[str, int] = _lru_touch(self._nets, key, {})
        if net not in nets and len(nets) < _MAX_ACTS:
            nets[net] = int(ts // _DAY)

    def _unused_before(self, key: str, net: str, ts: float) -> bool:
        """True unless the identity used ``net`` on a UTC day before the one of ``ts``."""
        first = self._nets.get(key, {}).get(net)
        return first is None or first >= int(ts // _DAY)

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._tokens = {
            str(k): {str(n): [float(r[0]), str(r[1]), [str(i) for i in r[2]]] for n, r in dict(v).items()}
            for k, v in dict(state.get("tokens", {})).items()
        }
        self._pairs = {
            str(k): {str(p): int(c) for p, c in dict(v).items()}
            for k, v in dict(state.get("pairs", {})).items()
        }
        self._nets = {
            str(k): {str(n): int(d) for n, d in dict(v).items()}
            for k, v in dict(state.get("nets", {})).items()
        }
        self._reported.restore(state.get("reported", {}))


# -- credential stuffing ------------------------------------------------------------------------------
#: Auth methods whose login is a username and a password: what a leaked list replays.
_PASSWORD_METHODS: Final = frozenset({"userpass", "ldap", "okta", "radius"})


def _password_login(event: AuditEvent) -> tuple[str, str] | None:
    """``(mount, account)`` of a username-and-password login entry, else None.

    AppRole, JWT/OIDC, Kubernetes and certificate logins prove a key or a signed token that no
    leaked password list replays, and a fleet of instances logging in from fresh addresses is their
    normal day. The entry's ``mount_type`` says which method it is; without one, only password
    methods name the account in the URL (``auth/<mount>/login/<name>``).
    """
    rel = _rel(event)
    target = login_target(rel, event.request)
    if target is None:
        return None
    kind = event.mount_type
    if kind:
        return target if kind in _PASSWORD_METHODS else None
    return target if rel.endswith(f"/login/{target[1]}") else None


class CredentialStuffing(_Base):
    """``credential-stuffing``: failed password logins from many strange addresses on many accounts.

    Catches leaked-password lists replayed through a botnet: each address tries one or two
    accounts, so neither the per-account burst nor the per-address spraying count of
    ``login-failure-burst`` moves. Only username-and-password logins count (``mount_type``
    userpass, LDAP, Okta, RADIUS); each auth mount is its own set of accounts.

    What separates a list from a large organisation's morning (hundreds of people logging in at
    once, each from an address new to the log) is what the entries say, not how many there are:

    * only *failures* build a wave: people mostly succeed, a list mostly fails; successes never
      dilute or build the wave, so a busy hour neither hides nor fakes one;
    * a failure counts only from an *unfamiliar* address (no authenticated request from it has
      succeeded, organisation-wide) outside the account's habitual networks (the /16 or /48 it
      logged in from on two days or more): not a person at their usual place;
    * a failure the same account then completes from the same network was a typo, and leaves the
      wave.

    A wave is ``stuffing_failures`` such failures from ``stuffing_sources`` addresses on
    ``stuffing_accounts`` accounts within ``stuffing_window_minutes`` (high, once per window per
    mount). A success within the window of a wave, before or after it formed, is critical (a
    stuffed password worked) when it came from a network nobody in the organisation had logged in
    or worked from, and no other account has logged in from since: people joining the morning
    from the office or a VPN pool are not, not even the first one on a pool new to the log.

    Reads: login ``path`` (``auth/<mount>/login[/<name>]``), ``mount_type``, ``outcome``
    (``login_failed`` / ``ok``), ``remote_ip``, ``identity.kind``, ``request_id``, ``ts``; response
    entries.
    """

    name = "credential-stuffing"

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        # Addresses with authenticated, successful work; networks with that or a successful login.
        self._familiar = _Seen(100_000)
        self._networks = _Seen(20_000)
        # ``mount:account|network`` -> UTC day of the account's first success from there, -1 once it
        # logged in from there on another day too: its habit (one day of logins is no habit, and
        # may be an attacker's: a brute-forced password works once).
        self._homes: dict[str, int] = {}
        # Network -> the first account that logged in from it, ``*`` once another did (shared).
        self._pools: dict[str, str] = {}
        # Per auth mount, recent failures from unfamiliar places and successes from new networks:
        # [ts, ip, account, state, request id, network]; state False: a failure, True: a success
        # not reported yet, None: a success reported.
        self._waves: dict[str, deque[list[Any]]] = {}
        self._cooldown = Cooldown(self.cfg.stuffing_window_minutes * 60.0)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Track password logins from unfamiliar places; report a wave and successes within it."""
        if not event.is_response:
            return []
        net = network_of(event.remote_ip)
        if net is None:
            return []  # no address, or the host itself (loopback, link-local): never a botnet
        target = _password_login(event) if event.outcome in ("ok", "login_failed") else None
        if target is None:
            # Authenticated work that succeeded makes its address familiar (learned after judging).
            if event.outcome == "ok" and event.identity.kind not in ("login", "anonymous"):
                self._familiar.add(event.remote_ip or "")
                self._networks.add(net)
            return []
        mount = target[0]
        account = f"{mount}:{target[1]}"
        wave = self._recent(mount, event.ts)
        home = self._homes.get(f"{account}|{net}") == -1
        row: list[Any] = [event.ts, event.remote_ip or "", account, False, event.request_id or "", net]
        if event.outcome != "ok":
            if home or row[1] in self._familiar:
                return []
            wave.append(row)
            return self._judge(event, mount, wave)
        # The person completing a login they mistyped from here: those failures were typos.
        for typo in [r for r in wave if r[2] == account and r[5] == net and r[3] is False]:
            wave.remove(typo)
        if _lru_touch(self._pools, net, account) != account:
            self._pools[net] = "*"
        out: list[Finding] = []
        if not home and net not in self._networks:
            row[3] = True
            wave.append(row)
            out = self._judge(event, mount, wave)
        if not out:
            day = int(event.ts // _DAY)
            if _lru_touch(self._homes, f"{account}|{net}", day, limit=100_000) != day:
                self._homes[f"{account}|{net}"] = -1
            self._networks.add(net)
        return out

    def _recent(self, mount: str, ts: float) -> deque[list[Any]]:
        """The mount's attempts from unfamiliar places within the window (older ones dropped)."""
        window = self.cfg.stuffing_window_minutes * 60.0
        wave: deque[list[Any]] = _lru_touch(self._waves, mount, deque(maxlen=2000), limit=1000)
        while wave and ts - wave[0][0] > window:
            wave.popleft()
        return wave

    def _judge(self, event: AuditEvent, mount: str, wave: deque[list[Any]]) -> list[Finding]:
        c = self.cfg
        window = c.stuffing_window_minutes * 60.0
        failed = [row for row in wave if row[3] is False]
        sources = {row[1] for row in failed}
        accounts = {row[2] for row in failed}
        if (
            len(sources) < c.stuffing_sources
            or len(accounts) < c.stuffing_accounts
            or len(failed) < c.stuffing_failures
        ):
            return []
        wave_id = Identity(key=f"login:{mount}:*", kind="login", auth_mount=mount)
        human_window = _human(window)
        reasons = [
            Reason(
                "unfamiliar_sources",
                f"{len(sources)} addresses in {len({row[5] for row in failed})} networks",
                f"< {c.stuffing_sources} per {human_window} from addresses with no earlier work, "
                "outside the account's networks",
                1.0,
            ),
            Reason("accounts", str(len(accounts)), f"< {c.stuffing_accounts} per {human_window}", 0.8),
            Reason("failures", str(len(failed)), "typos the same account then completed: not counted", 0.5),
            Reason("recent_accounts", ", ".join(sorted(a.split(":", 1)[1] for a in accounts)[:8]), "", 0.3),
        ]
        ids = _bounded_ids([row[4] for row in failed])
        first = wave[0][0]
        out: list[Finding] = []
        if self._cooldown.ready(f"wave:{mount}", event.ts):
            out.append(
                self._make(
                    event,
                    title=(
                        f"Credential stuffing on {mount}: {len(sources)} unfamiliar addresses tried "
                        f"{len(accounts)} accounts ({_names(accounts)}) within {human_window}"
                    ),
                    severity="high",
                    key="wave",
                    identity=wave_id,
                    reasons=reasons,
                    event_ids=ids,
                    first_ts=first,
                )
            )
        for row in wave:
            if row[3] is not True:
                continue
            row[3] = None
            if self._pools.get(row[5]) == "*":
                continue  # other accounts logged in from there since: a place people share
            who, ip = row[2].split(":", 1)[1], row[1]
            out.append(
                self._make(
                    event,
                    title=(
                        f"Login to {who} on {mount} succeeded from unfamiliar {ip} amid credential stuffing"
                    ),
                    severity="critical",
                    key=f"success:{row[2]}",
                    identity=wave_id,
                    reasons=[
                        Reason("login", f"{who} from {ip}", "no success from a new network in a wave", 1.0),
                        *reasons[:3],
                    ],
                    event_ids=_bounded_ids([*ids[-(_MAX_EVENT_IDS - 1) :], row[4]]),
                    first_ts=first,
                )
            )
        return out

    @staticmethod
    def _row(r: list[Any]) -> list[Any]:
        state = None if r[3] is None else bool(r[3])
        return [float(r[0]), str(r[1]), str(r[2]), state, str(r[4]), str(r[5])]

    def state(self) -> dict[str, Any]:
        """Plain-data state: familiar addresses and networks, accounts' homes, waves, cooldown."""
        return {
            **self._base_state(),
            "familiar": self._familiar.dump(),
            "networks": self._networks.dump(),
            "homes": dict(self._homes),
            "pools": dict(self._pools),
            "waves": {m: [list(r) for r in w] for m, w in self._waves.items()},
            "cooldown": self._cooldown.state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._familiar.restore(state.get("familiar", []))
        self._networks.restore(state.get("networks", []))
        self._homes = {str(k): int(v) for k, v in dict(state.get("homes", {})).items()}
        self._pools = {str(k): str(v) for k, v in dict(state.get("pools", {})).items()}
        self._waves = {
            str(m): deque((self._row(r) for r in rows), maxlen=2000)
            for m, rows in dict(state.get("waves", {})).items()
        }
        self._cooldown.load(state.get("cooldown", {}))


# -- volume bursts beyond habit -----------------------------------------------------------------------
class _Volume:
    """Acts per identity in a sliding window, against the identity's and its peers' largest
    earlier window; fires once per window when the count crosses ``max(minimum, factor x habit)``.
    With ``distinct`` the window counts distinct values (paths probed) rather than requests."""

    def __init__(self, cfg: CorrelateConfig, minimum: int, *, distinct: bool = False) -> None:
        self.cfg = cfg
        self.minimum = minimum
        self.window = cfg.burst_window_minutes * 60.0
        self.distinct = distinct
        self.count = SlidingCount(self.window, max_items=max(500, 4 * minimum))
        self.values = DistinctCount(self.window, max_values=max(200, 4 * minimum))
        self.peaks = _Peaks(self.window)
        self.cooldown = Cooldown(self.window)

    def add(self, event: AuditEvent, unit: str, value: str = "") -> tuple[int, int, int, int, float] | None:
        """Record one act; (count, threshold, own peak, peer peak, habit days) when it bursts."""
        ident = event.identity
        key = f"{ident.key}|{unit}"
        group = peer_group(ident)
        gkey = f"g:{group}|{unit}" if group else ""
        own, first, _ = self.peaks.peak(key)
        peers = self.peaks.peak(gkey)[0] if gkey else 0
        n = self.count.add(key, event.ts, event.request_id or "")
        if self.distinct:
            n = self.values.add(key, value, event.ts)
        self.peaks.add(key, event.ts)
        if gkey:
            self.peaks.add(gkey, event.ts)
        threshold = max(self.minimum, int(self.cfg.burst_factor * max(own, peers)) + 1)
        if n < threshold or not self.cooldown.ready(key, event.ts):
            return None
        days = (event.ts - first) / 86400.0 if own else 0.0
        return n, threshold, own, peers, days

    def ids(self, event: AuditEvent, unit: str) -> tuple[str, ...]:
        return _bounded_ids(self.count.tags(f"{event.identity.key}|{unit}", event.ts))

    def habit_text(self, own: int, peers: int, days: float, noun: str) -> str:
        window = _human(self.window)
        mine = f"<= {own} {noun} per {window} over {days:.0f} days" if own else f"no {noun} before"
        return f"its usual: {mine}; its peers': <= {peers} per {window}"

    def state(self) -> dict[str, Any]:
        return {
            "count": self.count.state(),
            "values": self.values.state(),
            "peaks": self.peaks.state(),
            "cooldown": self.cooldown.state(),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.count.load(state.get("count", {}))
        self.values.load(state.get("values", {}))
        self.peaks.load(state.get("peaks", {}))
        self.cooldown.load(state.get("cooldown", {}))


class AccessorEnumeration(_Base):
    """``accessor-enumeration``: token accessors listed, or looked up in bursts, beyond habit.

    Catches the step before token theft or mass revocation: ``LIST auth/token/accessors`` returns
    every token's accessor, and ``auth/token/lookup-accessor`` (or ``auth/token/lookup`` with a
    token in the body) then reveals each token's policies, owner and TTL. A listing by an identity
    (and peers) without that habit is high (medium when denied); lookups alert as a burst of
    ``accessor_lookup_burst`` beyond ``burst_factor`` times the identity's or peers' usual volume.

    Reads: namespace-relative ``request.path`` under ``auth/token/``, ``operation``, ``outcome``,
    ``identity`` (key and policies, for the peer group), ``remote_ip``; response entries.
    """

    name = "accessor-enumeration"
    only_operations: ClassVar[frozenset[str] | None] = frozenset({"list", "read", "update", "create"})

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        self._acts = _Acts()
        self._lookups = _Volume(self.cfg, self.cfg.accessor_lookup_burst)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report an accessor listing outside habit and bursts of token lookups."""
        if not self._judged(event) or not event.is_response or event.identity.kind in ("login", "anonymous"):
            return []
        rel = _rel(event)
        if not rel.startswith("auth/token/"):
            return []
        sub = rel[len("auth/token/") :].rstrip("/")
        if sub == "accessors" and event.operation == "list":
            return self._listing(event, ctx)
        if sub in ("lookup-accessor", "lookup") and event.operation in ("update", "create", "read"):
            return self._lookup(event)
        return []

    def _listing(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        reasons = [Reason("operation", "list auth/token/accessors", "every token's accessor", 1.0)]
        severity = self._habit_severity(
            event, ctx, self._acts, "list-accessors", novel="high", reasons=reasons, what="accessor listings"
        )
        if event.outcome == "ok":
            self._acts.add(event.identity, "list-accessors")
        return [
            self._make(
                event,
                title=f"Token accessors listed by {_who(event.identity)} ({_verdict(event)})",
                severity=severity,
                key="list",
                reasons=reasons,
            )
        ]

    def _lookup(self, event: AuditEvent) -> list[Finding]:
        hit = self._lookups.add(event, "lookup")
        if hit is None:
            return []
        n, threshold, own, peers, days = hit
        window = _human(self._lookups.window)
        return [
            self._make(
                event,
                title=f"Token accessor enumeration: {n} token lookups in {window} by {_who(event.identity)}",
                severity="high",
                key="lookup-burst",
                reasons=[
                    Reason("token_lookups", str(n), f"< {threshold} per {window}", 1.0),
                    Reason("habit", self._lookups.habit_text(own, peers, days, "lookups"), "", 0.6),
                    Reason("outcome", event.outcome, "", 0.3),
                ],
                event_ids=self._lookups.ids(event, "lookup"),
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: listing habits and lookup volumes."""
        return {**self._base_state(), "acts": self._acts.state(), "lookups": self._lookups.state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._acts.load(state.get("acts", {}))
        self._lookups.load(state.get("lookups", {}))


class _SettledPeaks:
    """Per key, the largest count of any *settled* fixed window: one the sliding window being
    judged can no longer overlap (two windows back or more).

    :class:`_Peaks` counts the window just closed, so a burst straddling a window boundary became
    its own habit halfway through (15 probes in 11 seconds: 8 before the boundary made the
    threshold 33 for the other 7). A key may also hold the largest *single* count per window of
    several members (``add(..., most=n)``): a peer group's habit is what one member did, never the
    sum of a hundred instances, so it does not grow with the organisation.

    Each key holds ``[window index, count, previous index, previous count, settled peak, first ts]``.
    """

    def __init__(self, window: float) -> None:
        self.window = float(window)
        self._keys: dict[str, list[float]] = {}

    def peak(self, key: str, ts: float) -> tuple[int, float]:
        """(largest settled window count at ``ts``, first act ts) of ``key``."""
        row = self._keys.get(key)
        if row is None:
            return 0, 0.0
        idx = ts // self.window
        best = row[4]
        for i, n in ((row[0], row[1]), (row[2], row[3])):
            if i <= idx - 2:
                best = max(best, n)
        return int(best), row[5]

    def add(self, key: str, ts: float, most: float | None = None) -> float:
        """Count one act at ``ts`` (or raise the window to ``most``); the window's count."""
        idx = float(ts // self.window)
        row: list[float] = _lru_touch(self._keys, key, [idx, 0.0, -1.0, 0.0, 0.0, ts])
        if row[0] != idx:
            row[4] = max(row[4], row[3])
            row[2], row[3] = row[0], row[1]
            row[0], row[1] = idx, 0.0
        row[1] = row[1] + 1 if most is None else max(row[1], most)
        return row[1]

    def state(self) -> dict[str, Any]:
        return {"keys": {k: list(v) for k, v in self._keys.items()}}

    def load(self, state: dict[str, Any]) -> None:
        rows = dict(state.get("keys", {}))
        self._keys = {str(k): [float(x) for x in v] for k, v in rows.items() if len(v) == 6}


class _SettledVolume(_Volume):
    """:class:`_Volume` judged against settled habit (:class:`_SettledPeaks`): the identity's own
    largest settled window, and the largest settled window of any one member of its peer group."""

    def __init__(self, cfg: CorrelateConfig, minimum: int, *, distinct: bool = False) -> None:
        super().__init__(cfg, minimum, distinct=distinct)
        self.settled = _SettledPeaks(self.window)

    def add(self, event: AuditEvent, unit: str, value: str = "") -> tuple[int, int, int, int, float] | None:
        """Record one act; (count, threshold, own peak, peer peak, habit days) when it bursts."""
        ident = event.identity
        key = f"{ident.key}|{unit}"
        group = peer_group(ident)
        gkey = f"g:{group}|{unit}" if group else ""
        own, first = self.settled.peak(key, event.ts)
        peers = self.settled.peak(gkey, event.ts)[0] if gkey else 0
        n = self.count.add(key, event.ts, event.request_id or "")
        if self.distinct:
            n = self.values.add(key, value, event.ts)
        acts = self.settled.add(key, event.ts)
        if gkey:
            self.settled.add(gkey, event.ts, most=acts)
        threshold = max(self.minimum, int(self.cfg.burst_factor * max(own, peers)) + 1)
        if n < threshold or not self.cooldown.ready(key, event.ts):
            return None
        days = (event.ts - first) / 86400.0 if own else 0.0
        return n, threshold, own, peers, days

    def state(self) -> dict[str, Any]:
        return {**super().state(), "settled": self.settled.state()}

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.settled.load(state.get("settled", {}))


_CAPABILITY_PATHS: Final = (
    "sys/capabilities",
    "sys/capabilities-self",
    "sys/capabilities-accessor",
    "sys/internal/ui/resultant-acl",
)


class CapabilityProbing(_Base):
    """``capability-probing``: capability checks over many distinct paths, beyond habit.

    Catches a stolen token mapping what it may do before acting (``sys/capabilities*``,
    ``sys/internal/ui/resultant-acl``): ``capability_probe_paths`` distinct probed paths within the
    window and ``burst_factor`` times the identity's (or any one peer's) usual number of checks, in
    windows that closed before the burst began (:class:`_SettledPeaks`). The probed paths are HMAC'd
    in the body; their HMACs are still distinct per path.

    Reads: namespace-relative ``request.path``, ``request.data.paths`` / ``path`` (HMACs),
    ``identity``, ``request_id``, ``ts``; response entries of any outcome.
    """

    name = "capability-probing"
    only_operations: ClassVar[frozenset[str] | None] = frozenset({"update", "create", "read"})

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        self._probes = _SettledVolume(self.cfg, self.cfg.capability_probe_paths, distinct=True)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Count distinct probed paths per identity; report a burst once per window."""
        if not self._judged(event) or not event.is_response:
            return []
        rel = _rel(event)
        if rel not in _CAPABILITY_PATHS:
            return []
        data = event.request.data or {}
        probed = data.get("paths", data.get("path"))
        if isinstance(probed, list):
            value = ",".join(sorted(str(p) for p in probed))
        else:
            value = str(probed) if probed is not None else event.request_id or ""
        value = f"{rel}:{value}"
        hit = self._probes.add(event, "probe", value)
        if hit is None:
            return []
        n, threshold, own, peers, days = hit
        window = _human(self._probes.window)
        return [
            self._make(
                event,
                title=f"Capability probing: {n} distinct paths checked in {window} by {_who(event.identity)}",
                severity="high" if n >= 2 * threshold else "medium",
                key="probe",
                reasons=[
                    Reason("probed_paths", str(n), f"< {threshold} per {window}", 1.0),
                    Reason("habit", self._probes.habit_text(own, peers, days, "checks"), "", 0.6),
                    Reason("endpoint", rel, "", 0.3),
                ],
                event_ids=self._probes.ids(event, "probe"),
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: probe volumes."""
        return {**self._base_state(), "probes": self._probes.state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._probes.load(state.get("probes", {}))


_REVOKE_ONE: Final = ("auth/token/revoke", "auth/token/revoke-accessor", "auth/token/revoke-orphan")
_REVOKE_MANY: Final = (
    "sys/leases/revoke-prefix/",
    "sys/leases/revoke-force/",
    "sys/revoke-prefix/",
    "sys/revoke-force/",
)


class MassRevocation(_Base):
    """``mass-revocation``: tokens or leases revoked in bulk, beyond habit.

    Catches disruption (logging every service out, dropping every dynamic credential) and an
    attacker covering tracks: revocations of other tokens and of leases (``auth/token/revoke``,
    ``revoke-accessor``, ``revoke-orphan``, ``sys/leases/revoke``) in a burst of
    ``revocation_burst`` beyond ``burst_factor`` times the identity's or peers' usual volume, and
    any prefix or force revocation (one request, many leases) by an identity without that habit.
    ``auth/token/revoke-self`` (a client logging out) is not counted.

    Reads: namespace-relative ``request.path``, ``operation``, ``outcome``, ``identity``,
    ``request_id``, ``ts``; response entries.
    """

    name = "mass-revocation"
    only_operations: ClassVar[frozenset[str] | None] = frozenset({"update", "create", "delete"})

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        self._acts = _Acts()
        self._revokes = _Volume(self.cfg, self.cfg.revocation_burst)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report revocation bursts and bulk revocations outside habit."""
        if not self._judged(event) or not event.is_response or event.identity.kind in ("login", "anonymous"):
            return []
        rel = _rel(event)
        if rel.startswith(_REVOKE_MANY):
            return self._bulk(event, ctx, rel)
        if not (rel in _REVOKE_ONE or rel.startswith(("sys/leases/revoke", "sys/revoke"))):
            return []
        hit = self._revokes.add(event, "revoke")
        if hit is None:
            return []
        n, threshold, own, peers, days = hit
        window = _human(self._revokes.window)
        return [
            self._make(
                event,
                title=f"Mass revocation: {n} tokens or leases revoked in {window} by {_who(event.identity)}",
                severity="high",
                key="burst",
                reasons=[
                    Reason("revocations", str(n), f"< {threshold} per {window}", 1.0),
                    Reason("habit", self._revokes.habit_text(own, peers, days, "revocations"), "", 0.6),
                    Reason("latest", rel, "", 0.3),
                ],
                event_ids=self._revokes.ids(event, "revoke"),
            )
        ]

    def _bulk(self, event: AuditEvent, ctx: DetectContext, rel: str) -> list[Finding]:
        force = "force" in rel.split("/", 3)[-2] if rel.count("/") >= 2 else False
        kind = "force" if force else "prefix"
        reasons = [Reason("operation", rel, "leases revoked one by one by their holder", 1.0)]
        severity = self._habit_severity(
            event,
            ctx,
            self._acts,
            f"revoke-{kind}",
            novel="high",
            reasons=reasons,
            what=f"{kind} revocations",
        )
        if event.outcome == "ok":
            self._acts.add(event.identity, f"revoke-{kind}")
        return [
            self._make(
                event,
                title=f"Bulk lease revocation ({kind}) {_verdict(event)}: {rel} by {_who(event.identity)}",
                severity=severity,
                key=f"bulk:{rel}",
                reasons=reasons,
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: bulk-revocation habits and revocation volumes."""
        return {**self._base_state(), "acts": self._acts.state(), "revokes": self._revokes.state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._acts.load(state.get("acts", {}))
        self._revokes.load(state.get("revokes", {}))


# -- AppRole --------------------------------------------------------------------------------------------
_APPROLE_FIELDS: Final = frozenset(
    {
        "policies",
        "token-policies",
        "bind-secret-id",
        "secret-id-bound-cidrs",
        "token-bound-cidrs",
        "bound-cidr-list",
        "secret-id-num-uses",
        "secret-id-ttl",
        "token-ttl",
        "token-max-ttl",
        "token-num-uses",
        "period",
        "role-id",
        "local-secret-ids",
    }
)


def _approle_sub(event: AuditEvent) -> tuple[str, list[str]] | None:
    """(auth mount, segments after ``role/``) of a request on an AppRole role, else None.

    The mount is recognised by its type (``approle``); an entry without mount fields is
    recognised by the path shape ``auth/<mount>/role/<role>/(custom-)secret-id`` only.
    """
    rel = _rel(event)
    if not rel.startswith("auth/"):
        return None
    mount = event.mount_point
    if event.mount_type == "approle" and mount and rel.startswith(mount):
        rest = rel[len(mount) :].split("/")
    elif event.mount_type is None:
        parts = rel.split("/")
        if "role" not in parts[2:] or parts[-1] not in ("secret-id", "custom-secret-id"):
            return None
        idx = parts.index("role", 2)
        mount, rest = "/".join(parts[:idx]) + "/", parts[idx:]
    else:
        return None
    if len(rest) < 2 or rest[0] != "role" or not rest[1]:
        return None
    return mount, rest[1:]


class SecretIdMinting(_Base):
    """``secret-id-minting``: an AppRole secret-id minted for a role the identity never minted for.

    Catches an identity turning a role's ``role_id`` (not secret) into a login of that role: a CI
    pipeline or a stolen admin token minting a secret-id for another application's runtime role.
    An identity's first mint for the role is high when other identities mint for that role (it
    is someone else's), medium otherwise; a custom secret-id (chosen by the caller) is high; a
    habitual minter (one earlier mint for this role, or ``habit_min`` by its peers) is low unless
    from a network it never used. Denied attempts are medium.

    Reads: ``mount_type`` (``approle``) and ``mount_point``, namespace-relative ``request.path``
    (``role/<role>/secret-id`` or ``custom-secret-id``), ``operation``, ``outcome``, ``identity``;
    response entries.
    """

    name = "secret-id-minting"
    only_operations: ClassVar[frozenset[str] | None] = frozenset({"update", "create"})

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        self._acts = _Acts()
        # "mint:<mount><role>" -> {identity key: secret-ids minted} (root aside)
        self._minters: dict[str, dict[str, int]] = {}

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report a secret-id minted outside the identity's habit."""
        if not self._judged(event) or not event.is_response or event.outcome not in ("ok", "denied", "error"):
            return []
        found = _approle_sub(event)
        if found is None:
            return []
        mount, rest = found
        if len(rest) != 2 or rest[1] not in ("secret-id", "custom-secret-id"):
            return []
        role, custom = rest[0], rest[1] == "custom-secret-id"
        ident = event.identity
        act = f"mint:{mount}{role}"
        any_mint = any(a.startswith("mint:") for a in self._acts.by_ident.get(ident.key, {}))
        others = sorted(k for k in self._minters.get(act, {}) if k != ident.key)
        reasons = [Reason("role", f"{mount}role/{role}", "roles this identity mints secret-ids for", 1.0)]
        if others:
            reasons.append(
                Reason("role_minters", f"{len(others)} other identit(y/ies) mint for this role", "", 0.8)
            )
        novel = "high" if custom or others else "medium"
        severity = self._habit_severity(
            event, ctx, self._acts, act, novel=novel, reasons=reasons, what=f"secret-ids for {role}"
        )
        if custom and severity == "low" and event.outcome == "ok":
            severity = "medium"
        if not any_mint and severity == "medium" and not others:
            reasons.append(Reason("first_mint", "first secret-id this identity mints", "", 0.5))
        if event.outcome == "ok":
            self._acts.add(ident, act)
            minters: dict[str, int] = _lru_touch(self._minters, act, {})
            if ident.key in minters or len(minters) < _MAX_ACTS:
                minters[ident.key] = minters.get(ident.key, 0) + 1
        kind = "custom secret-id" if custom else "secret-id"
        return [
            self._make(
                event,
                title=f"AppRole {kind} for role {role} minted by {_who(ident)} ({_verdict(event)})",
                severity=severity,
                key=f"{mount}{role}",
                reasons=reasons,
                labels={"role": role},
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: per identity and peer group, roles minted for; minters per role."""
        return {
            **self._base_state(),
            "acts": self._acts.state(),
            "minters": {k: dict(v) for k, v in self._minters.items()},
        }

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._acts.load(state.get("acts", {}))
        self._minters = {
            str(k): {str(i): int(n) for i, n in dict(v).items()}
            for k, v in dict(state.get("minters", {})).items()
        }


class AppRoleRoleChange(_Base):
    """``approle-role-change``: an AppRole role created, changed or deleted outside habit.

    Catches privilege escalation through a machine login: widening a role's ``token_policies``,
    turning ``bind_secret_id`` off (the public role_id alone then logs in), lifting CIDR bounds,
    setting a chosen ``role_id``, or creating a role to attach to someone's entity. The writer is
    judged against its own and its peers' habit of the same act on that mount (creating roles,
    changing existing roles and deleting roles are three habits: onboarding services is no habit
    of rewriting existing roles): high for a learned identity's first such act touching policies,
    ``bind_secret_id``, CIDRs or the role_id, medium for other first acts and denied attempts, low
    when habitual (unless from a new network).

    Reads: ``mount_type`` (``approle``), ``mount_point``, namespace-relative ``request.path``
    (``role/<role>[/<field>]``), the *keys* of ``request.data`` and ``bind_secret_id`` (a bool,
    never HMAC'd), ``operation``, ``outcome``, ``identity``; response entries.
    """

    name = "approle-role-change"
    only_operations: ClassVar[frozenset[str] | None] = _CHANGE_OPS

    _SENSITIVE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"policies", "token_policies", "bind_secret_id", "secret_id_bound_cidrs", "token_bound_cidrs",
         "bound_cidr_list", "role_id"}
    )  # fmt: skip

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        self._acts = _Acts()

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report a role write outside the writer's habit."""
        if not self._judged(event) or not event.is_response or (event.operation or "") not in _CHANGE_OPS:
            return []
        if event.outcome not in ("ok", "denied"):
            return []
        found = _approle_sub(event)
        if found is None:
            return []
        mount, rest = found
        if len(rest) > 2 or (len(rest) == 2 and rest[1] not in _APPROLE_FIELDS):
            return []
        role = rest[0]
        data = event.request.data or {}
        keys = set(data)
        if len(rest) == 2:
            keys.add(rest[1].replace("-", "_"))
        touched = sorted(keys & self._SENSITIVE_KEYS)
        unbound = data.get("bind_secret_id") is False
        op = event.operation or ""
        reasons = [
            Reason("operation", f"{op} {mount}role/{role}", "roles change through reviewed changes", 1.0),
            Reason("fields", ", ".join(sorted(keys)[:10]) or "-", "", 0.5),
        ]
        if unbound:
            reasons.insert(1, Reason("bind_secret_id", "false", "true: role_id alone does not log in", 0.9))
        novel = "high" if touched or op == "delete" else "medium"
        verb = {"delete": "deleted", "create": "created"}.get(op, "changed")
        # Creating roles (onboarding services), changing existing ones and deleting them are
        # different habits: an administrator who creates roles has not thereby shown a habit of
        # rewriting the policies of roles that exist (Vault logs ``create`` for a new role).
        act = f"role-{verb}:{mount}"
        severity = self._habit_severity(
            event, ctx, self._acts, act, novel=novel, reasons=reasons, what=f"roles {verb}"
        )
        if unbound and severity == "low":
            severity = "medium"
        if event.outcome == "ok":
            self._acts.add(event.identity, act)
        extra = f" ({', '.join(touched)})" if touched else ""
        return [
            self._make(
                event,
                title=f"AppRole role {role} {verb}{extra} by {_who(event.identity)} ({_verdict(event)})",
                severity=severity,
                key=f"{mount}{role}",
                reasons=reasons,
                labels={"role": role},
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: per identity and peer group, role writes per mount."""
        return {**self._base_state(), "acts": self._acts.state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._acts.load(state.get("acts", {}))


# -- identity store -------------------------------------------------------------------------------------
def _identity_act(rel: str, op: str, data: dict[str, Any]) -> tuple[str, str, bool] | None:
    """(kind, description, escalating) of a change to the identity store, or None."""
    parts = rel.rstrip("/").split("/")
    if len(parts) < 2 or parts[0] != "identity":
        return None
    area = parts[1]
    keys = set(data)
    if area in ("entity-alias", "alias", "group-alias"):
        attach = bool(keys & {"canonical_id", "entity_id"}) and op != "delete"
        what = (
            "alias attached to an entity" if attach else f"alias {'deleted' if op == 'delete' else 'changed'}"
        )
        return ("group-alias" if area == "group-alias" else "alias"), what, attach or area == "group-alias"
    if area == "entity":
        if len(parts) > 2 and parts[2] == "merge":
            return "entity-merge", "entities merged", True
        if len(parts) > 2 and parts[2] in ("batch-delete",):
            return "entity-delete", "entities deleted", False
        grows = "policies" in keys
        if op == "delete":
            return "entity-delete", "entity deleted", False
        return "entity", "entity policies set" if grows else "entity written", grows
    if area == "group":
        grows = bool(keys & {"policies", "member_entity_ids", "member_group_ids"})
        if op == "delete":
            return "group-delete", "group deleted", False
        return "group", "group policies or members set" if grows else "group written", grows
    return None


class IdentityChange(_Base):
    """``identity-change``: entity, alias and group changes outside the writer's habit.

    Catches identity takeover: attaching a login (an alias) to another person's entity so it
    inherits their entity and group policies, merging entities, and growing an entity's or group's
    policies or members. A learned writer without that habit (itself and its peers, ``habit_min``
    changes of the identity store) is high for escalating changes and medium for others; a
    habitual writer is low unless from a new network; a denied attempt is medium. Lookups
    (``identity/lookup``), OIDC and MFA configuration are not judged here.

    Reads: namespace-relative ``request.path`` (``identity/entity-alias``, ``identity/entity/...``,
    ``identity/group/...``), the *keys* of ``request.data`` (``canonical_id``, ``policies``,
    ``member_entity_ids``; their values are HMAC'd), ``operation``, ``outcome``, ``identity``;
    response entries.
    """

    name = "identity-change"
    only_operations: ClassVar[frozenset[str] | None] = _CHANGE_OPS

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        self._acts = _Acts()

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report an identity-store change outside the writer's habit."""
        op = event.operation or ""
        if (
            not self._judged(event)
            or not event.is_response
            or op not in _CHANGE_OPS
            or event.outcome not in ("ok", "denied")
        ):
            return []
        found = _identity_act(_rel(event), op, event.request.data or {})
        if found is None:
            return []
        kind, what, escalating = found
        reasons = [
            Reason(
                "change", f"{what} ({op} {_rel(event)})", "identity store changed by reviewed changes", 1.0
            ),
            Reason("fields", ", ".join(sorted(event.request.data or {})[:10]) or "-", "", 0.4),
        ]
        severity = self._habit_severity(
            event,
            ctx,
            self._acts,
            "identity-write",
            novel="high" if escalating else "medium",
            reasons=reasons,
            what="identity-store changes",
        )
        if event.outcome == "ok":
            self._acts.add(event.identity, "identity-write")
        return [
            self._make(
                event,
                title=f"Identity change by {_who(event.identity)}: {what} ({_verdict(event)})",
                severity=severity,
                key=f"{kind}:{_rel(event)}",
                reasons=reasons,
                labels={"kind": kind},
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: per identity and peer group, identity-store changes."""
        return {**self._base_state(), "acts": self._acts.state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._acts.load(state.get("acts", {}))


# -- dynamic credentials ----------------------------------------------------------------------------------
#: Path shapes (first segments inside the mount) that issue a new credential, per mount type.
_ISSUING: Final[dict[str, tuple[tuple[str, ...], ...]]] = {
    "database": (("creds",),),
    "pki": (("issue",), ("sign",), ("sign-verbatim",), ("issuer", "*", "issue"), ("issuer", "*", "sign"),
            ("issuer", "*", "sign-verbatim")),
    "aws": (("creds",), ("sts",)),
    "azure": (("creds",),),
    "gcp": (("roleset", "*", "token"), ("roleset", "*", "key"), ("static-account", "*", "token"),
            ("static-account", "*", "key"), ("impersonated-account", "*", "token"), ("token",), ("key",)),
    "ssh": (("creds",), ("sign",), ("issue",)),
    "consul": (("creds",),),
    "nomad": (("creds",),),
    "rabbitmq": (("creds",),),
    "mongodbatlas": (("creds",),),
    "alicloud": (("creds",),),
    "kubernetes": (("creds",),),
    "terraform": (("creds",),),
    "ldap": (("creds",),),
    "openldap": (("creds",),),
    "ad": (("creds",),),
    "kmip": (("scope", "*", "role", "*", "credential", "generate"),),
}  # fmt: skip
_NOUN: Final = {"database": "database credentials", "pki": "certificates", "ssh": "SSH credentials"}


def _issuance(event: AuditEvent) -> tuple[str, str] | None:
    """(mount, mount type) when the entry issues a dynamic credential, else None."""
    mtype = event.mount_type
    shapes = _ISSUING.get(mtype or "")
    if not shapes:
        return None
    sub = _sub(event)
    if sub is None:
        return None
    parts = sub.split("/")
    for shape in shapes:
        if len(parts) > len(shape) and all(s in ("*", p) for s, p in zip(shape, parts, strict=False)):
            return event.mount_point or "", mtype or ""
    return None


class DynamicCredentialBurst(_Base):
    """``dynamic-credential-burst``: dynamic credentials issued far beyond the identity's habit.

    Catches a stolen consumer token (or a compromised service) minting database users, cloud keys
    or certificates in bulk, to hoard access or exhaust the backend. Issuance is recognised by the
    mount *type* and the path shape inside the mount (``database``/``aws``/... ``creds/<role>``,
    ``pki`` ``issue|sign/<role>``, ``ssh``, ``gcp`` ...), never by mount names; a burst is
    ``dynamic_credential_burst`` issuances from one mount within the window, and ``burst_factor``
    times the identity's (or peers') largest earlier window there.

    Reads: ``mount_type``, ``mount_point``, namespace-relative ``request.path``, ``outcome``
    (successful issuance only), ``identity``, ``request_id``, ``ts``; response entries.
    """

    name = "dynamic-credential-burst"
    only_outcomes: ClassVar[frozenset[str] | None] = frozenset({"ok"})

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        self._issued = _Volume(self.cfg, self.cfg.dynamic_credential_burst)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Count issuances per identity and mount; report a burst once per window."""
        if not self._judged(event) or not event.is_response or event.outcome != "ok":
            return []
        found = _issuance(event)
        if found is None:
            return []
        mount, mtype = found
        hit = self._issued.add(event, mount)
        if hit is None:
            return []
        n, threshold, own, peers, days = hit
        noun = _NOUN.get(mtype, f"{mtype} credentials")
        window = _human(self._issued.window)
        who = _who(event.identity)
        return [
            self._make(
                event,
                title=f"{n} {noun} issued in {window} by {who} from {mount}",
                severity="high",
                key=mount,
                reasons=[
                    Reason(
                        "issued", f"{n} {noun} from {mount} ({mtype})", f"< {threshold} per {window}", 1.0
                    ),
                    Reason("habit", self._issued.habit_text(own, peers, days, "issued"), "", 0.7),
                    Reason("latest", _rel(event), "", 0.3),
                ],
                event_ids=self._issued.ids(event, mount),
                labels={"mount": mount, "mount_type": mtype},
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: issuance volumes."""
        return {**self._base_state(), "issued": self._issued.state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._issued.load(state.get("issued", {}))


# -- seal and step-down --------------------------------------------------------------------------------
class SealAttempt(_Base):
    """``seal-attempt``: the server sealed or its active node stepped down, or an attempt to.

    Catches denial of service (a sealed Vault serves nothing until unsealed with key shares) and
    the step-down that forces a leader election. Judged on request entries too (a seal that works
    may leave no response entry), each request once. Seal: critical when it worked, high
    otherwise. Step-down: high, low when the identity habitually steps down (maintenance) and the
    network is known.

    Reads: namespace-relative ``request.path`` (``sys/seal``, ``sys/step-down``), ``operation``,
    ``outcome``, ``identity``, ``request_id``; request and response entries.
    """

    name = "seal-attempt"
    only_responses: ClassVar[bool] = False
    only_operations: ClassVar[frozenset[str] | None] = frozenset({"update", "create"})

    def __init__(self, config: CorrelateConfig | None = None) -> None:
        super().__init__(config)
        self._acts = _Acts()
        self._reported = _Recent(_MAX_KEYS, ttl=600.0)

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        """Report a seal or step-down, attempted or done, once per request."""
        rel = _rel(event).rstrip("/")
        if rel not in ("sys/seal", "sys/step-down"):
            return []
        seal = rel == "sys/seal"
        rid = event.request_id
        if rid and not self._reported.add(rid, event.ts):
            if event.outcome == "ok" and not seal:
                self._acts.add(event.identity, "step-down")
            return []
        reasons = [Reason("operation", f"{event.operation} {rel}", "never outside declared maintenance", 1.0)]
        if seal:
            severity = "critical" if event.outcome == "ok" else "high"
            reasons.append(Reason("outcome", event.outcome, "", 0.5))
        else:
            severity = self._habit_severity(
                event, ctx, self._acts, "step-down", novel="high", reasons=reasons, what="step-downs"
            )
            if event.outcome == "denied":
                severity = "high"
            if event.outcome == "ok":
                self._acts.add(event.identity, "step-down")
        what = "Seal" if seal else "Step-down"
        return [
            self._make(
                event,
                title=f"{what} {_verdict(event)}: {rel} by {_who(event.identity)}",
                severity=severity,
                key=rel,
                reasons=reasons,
            )
        ]

    def state(self) -> dict[str, Any]:
        """Plain-data state: step-down habits, reported requests."""
        return {**self._base_state(), "acts": self._acts.state(), "reported": self._reported.dump()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` output."""
        self._base_load(state)
        self._acts.load(state.get("acts", {}))
        self._reported.restore(state.get("reported", {}))
