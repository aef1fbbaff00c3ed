"""Behavioural signals: what an identity does against its own, its peers' and the org's habits.

One module, longer than most: every signal reads and updates the same identity, peer and
organisation baselines in a single pass per event; split, the pass would walk them twice.

:class:`Behaviour` owns every baseline (identities, peer groups, organisation) and turns each
behaviour event (a response entry, or a request entry that never got one) into signals. Each
signal is a calibrated tail probability ``p`` reported as *surprise* ``-log10(p)``, so "observed
vs typical" is part of every signal. Signals are :class:`~detect.types.Finding` objects with
``alerting=False``; the engine accumulates them into per-identity risk.

Signals (family → what it catches, fields read):

* ``novelty`` — first-seen mount, directory, operation on a path template, subnet or address for
  the identity, weighed by how often this identity (and its peer group, and the org) sees new
  values; catches stolen credentials used from elsewhere, a developer reading runtime secrets,
  slow harvesting. Reads ``path``, ``operation``, ``mount_point``, ``remote_ip``.
* ``rarity`` — a directory or subnet known long-term but unused for weeks.
* ``time`` — an active hour whose hour-of-week this identity is rarely active in (tail
  probability over its hour-of-week histogram); catches off-hours use of stolen credentials.
* ``volume`` — events, distinct secrets read and LIST calls per hour, and first-seen templates
  per day, against the identity's own distribution (log-normal tail); catches mass reads,
  enumeration and slow-and-low harvesting. Reads ``operation``, ``path``.
* ``error`` — errors and denials per hour against the identity's own rate; catches probing.
  Reads ``outcome``.

Threat signals (families in :data:`THREAT_FAMILIES`), each judged whole and reaching the alert
level on its own, with a title that says what happened to whom; they run once an identity is
settled (past its learning days, active on a few days), a sparse one with its peers' habits:

* ``credential`` — the credential used from an address it never used, scored for the network
  (its own /24 or /64, its peers', its neighbourhood, its auth mount's, the organisation's, or
  nobody's), the hour (hours from its and its peers' active hours of the day) and, once those
  are unusual together, what the use touches (a secret read weighs more than housekeeping). A
  settled identity's networks are judged here, not as novelty.
* ``denial`` — a handful of denials within an hour on directories it and its peers never use
  (a single one, or a typo in a known directory, is not probing).
* ``exfiltration`` — first-time secret reads over three days (another user's per-user path
  counts double, one its peers read counts a quarter) against a Poisson model of its own and
  its peers' rate of first reads: slow harvesting below every per-hour threshold.

While an identity is learning (new, or back from dormancy), only signals that are new for its
peer group count; they never alert on their own (the engine enforces that).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from ingest.event import AuditEvent, Identity

from .baseline import (
    FEATURES,
    GROUP_FEATURES,
    METRICS,
    Baseline,
    Clock,
    GroupBaseline,
    Mark,
    Suspect,
    TopK,
    Window,
    hour_of_week,
    pack_rid,
)
from .config import DetectConfig
from .explain import THREAT_FAMILIES, fmt_count
from .templates import area_of, directory_of, net_of, other_names, own_names, subnet_of, template_path

__all__ = ["Behaviour", "BehaviourState", "Signal", "WindowRow", "THREAT_FAMILIES", "group_key", "extract"]

_MAX_READS = 2048
_MAX_IDS = 20
_MAX_MEMBERS = 200
_PEER_SCAN = 50
_ERRORS = frozenset({"denied", "error", "login_failed"})
#: Prior for per-hour metrics of an identity with little history: log1p means and spreads.
_PRIOR_MEAN = (math.log1p(10), math.log1p(3), math.log1p(1), math.log1p(0.5))
_PRIOR_SD = (1.2, 1.0, 1.0, 1.0)
_PRIOR_HOURS = 4.0
_MIN_SD = 0.35
_DAY_PRIOR_MEAN = math.log1p(3)
#: Strings kept in the state (paths, addresses) are interned where they are stored: sharing one
#: object between identities saves most of their memory (counters intern their values too).
_intern = sys.intern
_OP_TEMPLATES: dict[str, dict[str, str]] = {}
_MAX_OP_TEMPLATES = 65_536
#: Points at which a threat signal alone makes an alert (the engine's default risk threshold is 75).
_ALERT_POINTS = 80.0
_UPDATE_POINTS = 10.0
#: A use of the credential from a new address lasts while requests keep coming from it.
_SUSPECT_GAP = 2 * 3600.0
#: Network and hour must together be this unusual before what is touched is counted at all.
_SITUATION = 40.0
#: Earlier requests a signal names as its evidence, at most.
_MAX_EVIDENCE = 16
#: Days of activity before an identity's addresses and hours are habits worth judging.
_MIN_DAYS = 3
_MAX_NAMES = 4096
_MAX_MOUNTS = 256
_MAX_DISTRUSTED = 4096
_MAX_MARKS = 64
_DENIAL_WINDOW = 3600.0
_DENIAL_POINTS = 16.0
_EXFIL_WINDOW = 3 * 86400.0
_EXFIL_MIN = 4.0
_EXFIL_FLOOR = 0.3
#: Paths that are the token's own housekeeping, never "touching" anything.
_HOUSEKEEPING = (
    "auth/token/lookup-self",
    "auth/token/renew-self",
    "auth/token/revoke-self",
    "sys/capabilities-self",
    "sys/internal/ui/",
    "sys/health",
    "sys/seal-status",
    "sys/leader",
)
_SYSTEM = ("sys/", "auth/", "identity/", "cubbyhole/")
_WRITES = frozenset({"create", "update", "delete", "patch"})


class Signal(NamedTuple):
    family: str
    signal: str
    feature: str
    value: str
    surprise: float
    observed: str
    baseline: str
    #: Request ids of earlier acts the signal is about (besides the event that raised it).
    evidence: tuple[str, ...] = ()


class WindowRow(NamedTuple):
    """One closed identity-hour for the model: features and the events behind them."""

    identity: Identity
    hour: int
    features: tuple[float, ...]
    event_ids: tuple[str, ...]
    first_ts: float
    last_ts: float


class BehaviourState(msgspec.Struct, kw_only=True):
    """All baselines, as plain data."""

    clock: Clock
    identities: dict[str, Baseline] = msgspec.field(default_factory=dict)
    groups: dict[str, GroupBaseline] = msgspec.field(default_factory=dict)
    org: GroupBaseline = msgspec.field(default_factory=lambda: GroupBaseline(key="org"))
    last_identity: dict[str, Identity] = msgspec.field(default_factory=dict)
    #: People's own names (from their logins) and whose they are: a path segment equal to one
    #: of them, read by someone else, is another user's per-user path.
    user_names: dict[str, str] = msgspec.field(default_factory=dict)
    #: Networks taken up by identities of each auth mount (people of one login method, the
    #: machines of one AppRole mount): a network others log in from the same way is no stranger.
    mount_subnets: dict[str, TopK] = msgspec.field(default_factory=dict)
    #: Networks seen in alerted activity (a takeover, a brute force), until when: whatever the
    #: organisation, its peers or a login method learned from them vouches for nothing there.
    distrusted: dict[str, float] = msgspec.field(default_factory=dict)


def group_key(identity: Identity) -> str:
    """Peer group: the sorted policy set without ``default``, else the auth role or kind."""
    pol = sorted(p for p in identity.policies if p != "default")
    if pol:
        return "policies:" + ",".join(pol)
    dn = identity.display_name or ""
    if identity.kind in ("token", "entity") and "-" in dn:
        return "role:" + dn.split("-", 1)[0]
    return "kind:" + identity.kind


def extract(ev: AuditEvent, names: tuple[str, ...]) -> dict[str, str]:
    """Feature values of one event (see :data:`~detect.baseline.FEATURES`)."""
    path = ev.path
    tpl = template_path(path, names)
    op = ev.operation or "?"
    mount = ev.mount_point or (path.split("/", 1)[0] + "/")
    by_tpl = _OP_TEMPLATES.get(op)
    if by_tpl is None:
        by_tpl = _OP_TEMPLATES[op] = {}
    op_tpl = by_tpl.get(tpl)
    if op_tpl is None:
        if len(by_tpl) >= _MAX_OP_TEMPLATES:
            by_tpl.clear()
        op_tpl = by_tpl[tpl] = f"{op} {tpl}"
    out = {
        "dir": directory_of(tpl),
        "area": area_of(tpl),
        "op_template": op_tpl,
        "mount": mount,
    }
    ip = ev.remote_ip
    if ip:
        out["address"] = ip
        out["subnet"] = subnet_of(ip)
    return out


def how_tail(h: list[float], how: int) -> float:
    """Tail probability of an active hour in hour-of-week ``how`` given the histogram ``h``.

    The estimate mixes the joint histogram (smoothed with the neighbouring hours: 09:59 and
    10:00 are the same habit) with the product of the day-of-week and hour-of-day marginals, so
    an identity active at all hours is not surprised by an empty cell that is only sampling
    noise, while a nine-to-five identity is by 03:00. The tail is the total probability of the
    hours no more likely than this one.
    """
    total = sum(h)
    if total <= 0:
        return 1.0
    days = [sum(h[d * 24 : d * 24 + 24]) for d in range(7)]
    hod = [sum(h[d * 24 + i] for d in range(7)) for i in range(24)]
    q = [0.0] * 168
    for i in range(168):
        joint = (h[i] + 0.5 * (h[i - 1] + h[(i + 1) % 168])) / (2 * total)
        indep = (
            days[i // 24]
            * (hod[i % 24] + 0.5 * (hod[(i - 1) % 24] + hod[(i + 1) % 24]))
            / (2 * total * total)
        )
        q[i] = 0.5 * joint + 0.5 * indep + 1e-6
    norm = sum(q)
    mine = q[how]
    return min(1.0, sum(x for x in q if x <= mine) / norm)


def _learn(
    feats: dict[str, TopK],
    values: dict[str, str],
    which: tuple[str, ...],
    k: dict[str, int],
    wl: float,
    ws: float,
) -> None:
    # The hot path: an inlined TopK.observe (most values are already present).
    # Counters of one identity mostly hold equal sums (every feature counts every event; a
    # feature with one value counts it as often as in total). An equal result reuses the float
    # object already made for it, which keeps one boxed float where there were up to a dozen.
    pl: float | None = None
    ps: float | None = None
    nl: float | None = None
    ns: float | None = None
    for f in which:
        v = values.get(f)
        if v is None:
            continue
        c = feats.get(f)
        if c is None:
            c = feats[f] = TopK(k=k[f])
        tl = c.tot_l + wl
        if tl == pl:
            tl = pl
        c.tot_l = pl = tl
        ts = c.tot_s + ws
        if ts == ps:
            ts = ps
        c.tot_s = ps = ts
        t = c.table
        if t is None:
            cells = c.cells
            try:
                i = cells[::4].index(v) << 2
            except ValueError:
                i = -1
            if i >= 0:
                il = cells[i + 1] + wl
                cells[i + 1] = tl if il == tl else il
                is_ = cells[i + 2] + ws
                cells[i + 2] = ts if is_ == ts else is_
                continue
        else:
            it = t.get(v)
            if it is not None:
                il = it[0] + wl
                it[0] = tl if il == tl else il
                is_ = it[1] + ws
                it[1] = ts if is_ == ts else is_
                continue
        c.insert(v, wl, ws)
        if c.new_l == nl:
            c.new_l = nl
        nl = c.new_l
        if c.new_s == ns:
            c.new_s = ns
        ns = c.new_s


def _first_use(feats: dict[str, TopK], f: str, v: str, k: int, wl: float, ws: float) -> None:
    c = feats.get(f)
    if c is None:
        c = feats[f] = TopK(k=k)
    if not c.bump(v, wl, ws):
        c.insert(v, wl, ws)


def _tail_normal(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class Behaviour:
    """Baselines plus behavioural signals. ``observe`` scores an event, then learns from it."""

    name = "behaviour"

    def __init__(self, cfg: DetectConfig, state: BehaviourState | None = None) -> None:
        self.cfg = cfg
        self.state = state or BehaviourState(
            clock=Clock(
                t0=0.0, tau_short=cfg.short_horizon_days * 86400, tau_long=cfg.long_horizon_days * 86400
            )
        )
        self._k = {
            "dir": cfg.k_dir,
            "area": cfg.k_area,
            "op_template": cfg.k_op,
            "mount": cfg.k_mount,
            "address": cfg.k_address,
            "subnet": cfg.k_subnet,
        }
        self._started = bool(self.state.identities)
        self._min_volume = min(
            cfg.volume_min_events, cfg.volume_min_distinct, cfg.volume_min_lists, cfg.error_min_errors
        )

    # -- BaselineView ---------------------------------------------------------------------------
    def in_learning(self, identity_key: str, now: float) -> bool:
        """True while the identity is new or back from dormancy."""
        b = self.state.identities.get(identity_key)
        if b is None:
            return True
        if now - b.last_ts > self.cfg.dormant_days * 86400:
            return True
        return self._learning(b, now)

    def count(self, identity_key: str, feature: str, value: str, horizon: str = "long") -> float:
        """Decayed count of ``value`` for ``feature`` (``op_template`` values are ``"op tpl"``)."""
        b = self.state.identities.get(identity_key)
        if b is None or feature not in b.feats:
            return 0.0
        c = b.feats[feature]
        sl, ss = self.state.clock.scale(b.last_ts)
        return c.lower(value) * sl if horizon == "long" else c.short(value) * ss

    def total(self, identity_key: str, horizon: str = "long") -> float:
        """Decayed number of events seen for the identity."""
        b = self.state.identities.get(identity_key)
        if b is None or "mount" not in b.feats:
            return 0.0
        c = b.feats["mount"]
        sl, ss = self.state.clock.scale(b.last_ts)
        return c.tot_l * sl if horizon == "long" else c.tot_s * ss

    # -- internals ------------------------------------------------------------------------------
    def _learning(self, b: Baseline, now: float) -> bool:
        c = self.cfg
        return b.learning(now, c.learning_days, c.learning_min_events, c.learning_events, c.learning_min_days)

    def _counter(self, feats: dict[str, TopK], feature: str, k: int) -> TopK:
        c = feats.get(feature)
        if c is None:
            c = feats[feature] = TopK(k=k)
        return c

    def _identity(self, ev: AuditEvent) -> Baseline:
        st = self.state
        ident = ev.identity
        key = ident.key
        b = st.identities.get(key)
        ts = ev.ts
        if not self._started:
            # The forward-decay landmark: the first event seen.
            st.clock.t0 = ts
            self._started = True
        if b is None:
            b = st.identities[key] = Baseline(key=key, first_ts=ts, last_ts=ts, learn_start=ts)
        elif ts - b.last_ts > self.cfg.dormant_days * 86400:
            b.learn_start = ts
            b.learn_n = 0
        prev = st.last_identity.get(key)
        if (
            prev is None
            or prev.display_name != ident.display_name
            or prev.policies != ident.policies
            or prev.role_name != ident.role_name
        ):
            # Identities are immutable and shared by the parser: keep the event's own when it
            # carries no metadata (the common case) rather than a copy per identity.
            st.last_identity[key] = (
                ident if ident.metadata is None else msgspec.structs.replace(ident, metadata=None)
            )
            self._name(b, ident)
            g = _intern(group_key(ident))
            if g != b.group:
                if b.group and b.group in st.groups and key in st.groups[b.group].members:
                    st.groups[b.group].members.remove(key)
                b.group = g
                grp = st.groups.get(g)
                if grp is None:
                    grp = st.groups[g] = GroupBaseline(key=g)
                if len(grp.members) < _MAX_MEMBERS:
                    grp.members.append(key)
        elif ident.metadata is not None and not b.who.startswith("role "):
            md = ident.metadata
            if isinstance(md.get("role_name"), str) or isinstance(md.get("username"), str):
                self._name(b, ident)
        if b.group not in st.groups:
            # A baseline restored on its own (partial snapshot) joins its group here.
            st.groups[b.group] = GroupBaseline(key=b.group, members=[key])
        return b

    def _name(self, b: Baseline, ident: Identity) -> None:
        """The identity's own names (for ``{user}`` templates) and how a person names it."""
        md = ident.metadata or {}
        user = md.get("username")
        role = md.get("role_name")
        b.names = own_names(ident.display_name, user if isinstance(user, str) else None, ident.auth_mount)
        dn = ident.display_name or ""
        if isinstance(role, str) and role:
            # The instances of one role share the words (one string, not one per identity).
            b.who = _intern(f"role {role} ({dn})" if dn else f"role {role}")
        else:
            b.who = dn or ident.key
        if ident.kind == "entity" and b.names:
            names = self.state.user_names
            for n in b.names:
                if n not in names and len(names) < _MAX_NAMES:
                    names[_intern(n)] = ident.key

    def adopt(self, clock: Clock, identities: dict[str, Baseline], last: dict[str, Identity]) -> None:
        """Merge baselines saved under another landmark ``clock`` (a partial snapshot)."""
        st = self.state
        if not self._started:
            st.clock.t0 = clock.t0
            self._started = True
        else:
            d = clock.t0 - st.clock.t0
            fl, fs = math.exp(d / st.clock.tau_long), math.exp(d / st.clock.tau_short)
            for b in identities.values():
                b.rescale(fl, fs)
        st.identities.update(identities)
        st.last_identity.update(last)

    def peers_with(self, b: Baseline, feature: str, value: str) -> tuple[int, int]:
        """How many of the identity's peers (other group members) have seen ``value``."""
        grp = self.state.groups.get(b.group)
        if grp is None:
            return 0, 0
        k = n = 0
        for m in grp.members[:_PEER_SCAN]:
            if m == b.key:
                continue
            pb = self.state.identities.get(m)
            if pb is None or pb.n < self.cfg.learning_min_events:
                continue
            n += 1
            c = pb.feats.get(feature)
            if c is not None and value in c:
                k += 1
        return k, n

    def rebase_if_needed(self, ts: float) -> None:
        """Move the forward-decay landmark before stored weights could overflow."""
        clock = self.state.clock
        if not clock.needs_rebase(ts):
            return
        fl, fs = clock.scale(ts)
        clock.t0 = ts
        for b in self.state.identities.values():
            b.rescale(fl, fs)
        for g in self.state.groups.values():
            g.rescale(fl, fs)
        self.state.org.rescale(fl, fs)
        for c in self.state.mount_subnets.values():
            c.rescale(fl, fs)

    # -- the per-event work ---------------------------------------------------------------------
    def observe(self, ev: AuditEvent) -> tuple[list[Signal], Baseline, list[WindowRow]]:
        """Score ``ev`` against the baselines, then learn it. Returns signals and closed windows."""
        self.rebase_if_needed(ev.ts)
        b = self._identity(ev)
        st = self.state
        ts = ev.ts
        wl, ws = st.clock.weights(ts)
        learning = self._learning(b, ts)
        signals: list[Signal] = []
        rows: list[WindowRow] = []
        hour = int(ts // 3600)
        win = b.window
        fresh: tuple[int, float] | None = None
        if hour > win.hour:  # a late event joins the current window
            if win.hour >= 0 and win.events:
                rows.append(self._close_window(b, ws))
            win = b.window = Window(hour=hour, first_ts=ts)
            if not learning:
                self._time_signal(b, ts, signals)
            how = hour_of_week(ts)
            b.add_hour(how, wl)
            b.how_total += wl
            fresh = (how, wl)
        day = int(ts // 86400)
        if day > b.day:
            b.days_seen += 1
            if b.day >= 0:
                x = math.log1p(b.day_new)
                b.day_s0 += ws
                b.day_s1 += ws * x
                b.day_s2 += ws * x * x
            b.day = day
            b.day_new = 0

        values = extract(ev, b.names)
        feats = b.feats
        grp = st.groups[b.group]
        org = st.org
        new = {f: (f not in feats or v not in feats[f]) for f, v in values.items()}
        any_new = any(new.values())
        settled = self._settled(b, ts)
        if any_new:
            # A settled identity's denials are judged by the denial detector (a handful outside
            # its habit), never one by one as novelty.
            if not (settled and ev.outcome == "denied"):
                self._novelty(b, grp, values, new, learning, ws, signals, settled)
        elif not learning and b.taint_until <= ts:
            self._rarity(b, values, ws, ts, signals)
        if settled:
            self._threats(ev, b, grp, values, new, fresh, signals)
        elif ev.remote_ip and (new.get("address") or b.suspect is not None):
            peers = self._settled_peers(b, grp, ts)
            if peers is not None:
                self._threats(ev, b, grp, values, new, fresh, signals, peers)

        # The hourly window (volume, errors, the model's features).
        win.events += 1
        win.last_ts = ts
        op = ev.operation
        if op == "list":
            win.lists += 1
        elif op == "read" and ev.outcome == "ok" and win.distinct_reads() < _MAX_READS:
            win.add_read(_intern(ev.path))
        if ev.outcome in _ERRORS:
            win.errors += 1
        if new["op_template"]:
            win.new_values += 1
            b.day_new += 1
            nt = b.new_times
            if nt is None:
                b.new_times = [ts]
            elif len(nt) < _MAX_READS:
                nt.append(ts)
        ip = ev.remote_ip
        if ip and ip not in win.addresses and len(win.addresses) < 32:
            win.addresses.append(_intern(ip))
        if ev.request_id and len(win.event_ids) < _MAX_IDS:
            win.event_ids.append(pack_rid(ev.request_id))
        self._volume(b, ws, learning, signals)

        # Learn (an identity confirmed compromised stays out of its own baseline).
        b.last_ts = max(b.last_ts, ts)
        b.n += 1
        b.learn_n += 1
        if b.taint_until <= ts:
            _learn(feats, values, FEATURES, self._k, wl, ws)
            grp.n += 1
            grp.tot_l += wl
            grp.tot_s += ws
            org.n += 1
            org.tot_l += wl
            org.tot_s += ws
            # What peers, the auth mount and the organisation count as familiar is taught only by
            # requests Vault granted: refused logins and denied probes from a network (a spray, a
            # scan) must not vouch for it when a stolen credential later succeeds from there.
            if any_new and ev.outcome == "ok":
                for f, is_new in new.items():
                    if is_new:
                        v = values[f]
                        if f in GROUP_FEATURES:
                            _first_use(grp.feats, f, v, self.cfg.k_group, wl, ws)
                        _first_use(org.feats, f, v, self.cfg.k_org, wl, ws)
                if new.get("subnet") and ev.identity.auth_mount:
                    self._mount_subnet(ev.identity.auth_mount, values["subnet"], wl, ws)
        return signals, b, rows

    def fold(self, key: str, feature: str, value: str, ts: float) -> None:
        """Count ``value`` as normal for the identity (analyst said: false positive)."""
        b = self.state.identities.get(key)
        if b is None or feature not in self._k:
            return
        wl, ws = self.state.clock.weights(ts)
        c = self._counter(b.feats, feature, self._k[feature])
        for _ in range(3):
            c.observe(value, wl, ws)

    # -- signals --------------------------------------------------------------------------------
    def _novelty(
        self,
        b: Baseline,
        grp: GroupBaseline,
        values: dict[str, str],
        new: dict[str, bool],
        learning: bool,
        ws: float,
        out: list[Signal],
        settled: bool = False,
    ) -> None:
        org = self.state.org
        # Only the broadest new thing is reported: a new mount implies a new directory. Networks
        # of a settled identity are judged by the credential detector (network, peers, hour and
        # what is touched together), not as novelty on their own.
        chains: tuple[tuple[str, ...], ...] = (("mount", "area", "dir", "op_template"),)
        if not settled:
            chains += (("subnet", "address"),)
        for chain in chains:
            for f in chain:
                if f not in values or not new[f]:
                    continue
                v = values[f]
                mine = b.feats.get(f)
                gc = grp.feats.get(f)
                oc = org.feats.get(f)
                group_new = gc is None or v not in gc
                org_new = oc is None or v not in oc
                if learning and not group_new:
                    break
                p_id = mine.novelty_rate(ws) if mine is not None else 1.0
                damp = 1.0
                if f in ("address", "op_template"):
                    damp = 0.5  # addresses churn within a subnet; a new op on a known area is mild
                if not group_new and len(grp.members) > 1:
                    damp *= 0.5  # peers do this already
                if not org_new and f in ("subnet", "address"):
                    damp *= 0.6  # a known office / VPN range
                s = -math.log10(max(p_id, 1e-12)) * damp
                if group_new and len(grp.members) > 2 and gc is not None:
                    s = max(s, -math.log10(max(grp.novelty_rate(f, ws), 1e-12)))
                if org_new and oc is not None:
                    s_org = -math.log10(max(org.novelty_rate(f, ws), 1e-12))
                    # A network nobody in the organisation has used adds to the identity's own
                    # surprise; for paths, org-wide novelty is mostly typos and probing.
                    s = s + 0.6 * s_org if f in ("subnet", "address") else max(s, 0.8 * s_org)
                if f == "op_template":
                    # A new secret in a familiar directory is everyday work; only a very
                    # unusual one counts (harvesting is caught by the per-day volume signal).
                    s *= 0.6
                if learning:
                    s *= 0.5
                if s < self.cfg.min_surprise:
                    break
                seen = b.n
                baseline = f"never in {self.cfg.long_horizon_days:.0f} d ({seen} events)"
                if f in ("dir", "area", "mount", "op_template"):
                    k, n = self.peers_with(b, f, v)
                    if n:
                        baseline += f"; peers: {k} of {n}"
                if org_new:
                    baseline += "; first in the organisation"
                what = {
                    "dir": "access under",
                    "area": "access in area",
                    "mount": "use of mount",
                    "op_template": "request",
                    "subnet": "request from network",
                    "address": "request from address",
                }[f]
                out.append(
                    Signal("novelty", f"novelty.{f}", f, v, s, f"first {what} {v} by this identity", baseline)
                )
                break

    # -- threat detectors: a stolen credential, denials outside habit, slow exfiltration ---------
    def _settled(self, b: Baseline, ts: float) -> bool:
        """Habits old enough to judge against: past the learning days (counted from the first
        event, or from the return after dormancy), active on a few days, a handful of requests.

        Not the event-count part of learning: a person who logs in once a day is settled after a
        week even with forty requests.
        """
        return (
            b.taint_until <= ts
            and ts - b.learn_start >= self.cfg.learning_days * 86400
            and b.days_seen >= _MIN_DAYS
            and b.learn_n >= 10
        )

    def _settled_peers(self, b: Baseline, grp: GroupBaseline, ts: float) -> list[Baseline] | None:
        """For a sparse identity (a pipeline that ran on two days this week), past its learning
        days itself, its settled peers, whose habits are added to its own; None while it is new.
        """
        if (
            b.taint_until > ts
            or ts - b.learn_start < self.cfg.learning_days * 86400
            or b.learn_n < 3
            or b.days_seen < 2
        ):
            return None
        out = []
        for m in grp.members[:_PEER_SCAN]:
            pb = self.state.identities.get(m)
            if pb is not None and m != b.key and self._settled(pb, ts):
                out.append(pb)
        return out

    def _threats(
        self,
        ev: AuditEvent,
        b: Baseline,
        grp: GroupBaseline,
        values: dict[str, str],
        new: dict[str, bool],
        fresh: tuple[int, float] | None,
        out: list[Signal],
        peers: list[Baseline] | None = None,
    ) -> None:
        """Run the threat detectors; with ``peers`` (a sparse identity, judged with its settled
        peers' habits added to its own) only the stolen-credential one."""
        ts = ev.ts
        ip = ev.remote_ip
        s = b.suspect
        if s is not None and ts - s.last_ts > _SUSPECT_GAP:
            s = b.suspect = None
        if ip:
            if s is not None and ip == s.address:
                self._suspect_act(ev, b, s, out)
            elif new.get("address"):
                opened = self._open_suspect(ev, b, grp, values, new, fresh, peers)
                if opened is not None and (s is None or not s.emitted):
                    b.suspect = opened
                    self._suspect_act(ev, b, opened, out)
        if peers is not None:
            return
        if ev.outcome == "denied":
            self._denial(ev, b, grp, values, new, out)
        if ev.operation == "read" and _secret_path(ev):
            self._first_read(ev, b, grp, values, new, out)

    def distrust(self, subnet: str, until: float) -> None:
        """Count ``subnet`` as no one's familiar network until ``until`` (it carried alerted
        activity); bounded, the entry ending soonest leaves first."""
        d = self.state.distrusted
        if subnet not in d and len(d) >= _MAX_DISTRUSTED:
            del d[min(d, key=d.__getitem__)]
        d[_intern(subnet)] = max(d.get(subnet, 0.0), until)

    def _trusted(self, subnet: str, ts: float) -> bool:
        return self.state.distrusted.get(subnet, 0.0) <= ts

    def _mount_subnet(self, mount: str, subnet: str, wl: float, ws: float) -> None:
        ms = self.state.mount_subnets
        c = ms.get(mount)
        if c is None:
            if len(ms) >= _MAX_MOUNTS:
                return
            c = ms[_intern(mount)] = TopK(k=self.cfg.k_group)
        c.observe(subnet, wl, ws)

    def _points(self, pts: float) -> float:
        """The surprise that the engine turns into ``pts`` risk points."""
        return 1.0 + pts / self.cfg.points_per_surprise

    def _open_suspect(
        self,
        ev: AuditEvent,
        b: Baseline,
        grp: GroupBaseline,
        values: dict[str, str],
        new: dict[str, bool],
        fresh: tuple[int, float] | None,
        peers: list[Baseline] | None = None,
    ) -> Suspect | None:
        """A use from a new address, scored for its network and hour; None when both are usual."""
        ip = ev.remote_ip or ""
        sub = values["subnet"]
        mine = b.feats.get("subnet")
        gc = grp.feats.get("subnet")
        beside = False
        vouched = self._trusted(sub, ev.ts)
        if not new.get("subnet"):
            net, note = 0.0, f"new address in its usual {sub}"
        elif vouched and len(grp.members) > 1 and gc is not None and sub in gc:
            net, note = 10.0, f"{sub} new for it, used by its peers"
        else:
            hood = net_of(sub)
            near = any(net_of(x) == hood for x in (mine if mine is not None else ())) or (
                gc is not None and any(net_of(x) == hood for x in gc)
            )
            oc = self.state.org.feats.get("subnet")
            mc = self.state.mount_subnets.get(ev.identity.auth_mount or "")
            # A machine or person that only ever used one or two networks moving to a network
            # of strangers is a stronger sign than one that roams.
            steady = 20.0 if mine is not None and len(mine) <= 2 else 0.0
            if near:
                beside = True
                net, note = 10.0, f"{sub} new for it, beside its usual networks"
            elif vouched and mc is not None and sub in mc:
                net, note = 15.0, f"{sub} new for it, used by others of {ev.identity.auth_mount}"
            elif vouched and oc is not None and sub in oc:
                net, note = 25.0 + steady, f"{sub} new for it and its peers"
                if steady:
                    note += f"; it used only {len(mine) if mine is not None else 0} before"
            elif not vouched:
                net, note = 60.0, f"{sub}, a network alerted activity came from in the last days"
            else:
                net, note = 60.0, f"{sub}, never seen in the organisation"
        hour, hour_note = self._odd_hour(b, ev.ts, fresh, peers or ())
        if hour and beside:
            # A network beside the ones it uses (the next subnet of its own range) is where a
            # scaled-out instance or a new pod appears, at whatever hour it starts: the hour is
            # half the news it would be from elsewhere.
            hour *= 0.5
            hour_note += " (weighed half: a network beside its own)"
        if net + hour < _SITUATION:
            return None
        at = rfc_hm(ev.ts)
        return Suspect(
            address=_intern(ip),
            subnet=sub,
            first_ts=ev.ts,
            last_ts=ev.ts,
            net=net,
            hour=hour,
            net_note=note,
            hour_note=hour_note,
            at=at,
        )

    def _odd_hour(
        self, b: Baseline, ts: float, fresh: tuple[int, float] | None, peers: Iterable[Baseline] = ()
    ) -> tuple[float, str]:
        """Points for an hour of the day the identity (with ``peers``: nor its peers) is never
        active in, and why.

        The distance, in hours, to the nearest hour of the day holding at least 3% of the active
        hours: 0-1 h is usual; each further hour adds 14 points (up to 60), in proportion to how
        much habit there is (five days and six active hours for full weight).
        """
        hod = [0.0] * 24
        days = b.days_seen
        for i, x in b.hour_items():
            hod[i % 24] += x
        if fresh is not None:
            hod[fresh[0] % 24] -= fresh[1]
        for pb in peers:
            days = max(days, pb.days_seen)
            for i, x in pb.hour_items():
                hod[i % 24] += x
        total = sum(hod)
        sl, _ = self.state.clock.scale(ts)
        if total <= 0 or total * sl < 1.5:
            return 0.0, ""
        active = [i for i in range(24) if hod[i] >= 0.03 * total]
        cur = int(ts // 3600) % 24
        d = min(min((cur - i) % 24, (i - cur) % 24) for i in active)
        if d <= 1:
            return 0.0, ""
        # Full weight with five days and six active hours of habit; a sparse one weighs less.
        pts = min(60.0, 14.0 * (d - 1)) * min(1.0, days / 5.0) * min(1.0, total * sl / 6.0)
        whose = "its peers'" if peers else "its"
        return pts, f"{d} h from {whose} usual hours ({_span(active)} UTC)"

    def _suspect_act(self, ev: AuditEvent, b: Baseline, s: Suspect, out: list[Signal]) -> None:
        """Count what the suspect use touches; report when network, hour and acts add up."""
        s.last_ts = ev.ts
        path = ev.path
        op = ev.operation or ""
        if _is_login(path):
            s.logins += 1
        elif path.startswith(_HOUSEKEEPING):
            pass
        elif path.startswith(_SYSTEM):
            s.admin += 1
        elif op == "read":
            if path not in s.reads and len(s.reads) < 32:
                s.reads.append(_intern(path))
        elif op == "list":
            s.lists += 1
        elif op in _WRITES:
            s.writes += 1
        if ev.outcome in _ERRORS:
            s.denied += 1
        n = len(s.reads)
        acts = (
            5.0 * min(s.logins, 1)
            + (20.0 + 6.0 * min(n - 1, 5) if n else 0.0)
            + 10.0 * min(s.writes, 2)
            + 3.0 * min(s.lists, 3)
            + 4.0 * min(s.denied, 3)
            + 10.0 * min(s.admin, 2)
        )
        total = s.net + s.hour + acts
        if not s.emitted:
            if total < _ALERT_POINTS:
                # Below the alert level: a zero-point mark keeps the request in the evidence.
                out.append(self._suspect_signal(b, s, 0.0))
                return
            s.emitted = total
            s.told = len(s.reads) + s.writes + s.admin + s.denied
            out.append(self._suspect_signal(b, s, total))
            return
        told = len(s.reads) + s.writes + s.admin + s.denied
        if told == s.told:
            return
        # The use goes on: the alert is updated with what it touched since (at least the
        # engine's update weight, so the update is not dropped).
        s.told = told
        delta = max(total - s.emitted, _UPDATE_POINTS)
        s.emitted += delta
        out.append(self._suspect_signal(b, s, delta))

    def _suspect_signal(self, b: Baseline, s: Suspect, pts: float) -> Signal:
        did = []
        if s.reads:
            did.append(f"reading {len(s.reads)} secret{'s' if len(s.reads) > 1 else ''}")
        if s.writes:
            did.append(f"{s.writes} write{'s' if s.writes > 1 else ''}")
        if s.admin:
            did.append(f"{s.admin} system request{'s' if s.admin > 1 else ''}")
        if s.denied:
            did.append(f"{s.denied} denied")
        if not did:
            did.append("logging in" if s.logins else "")
        when = f"at {s.at} UTC" + (f", {s.hour_note}" if s.hour_note else "")
        what = ", ".join(x for x in did if x)
        observed = f"first use of {b.who or b.key}'s credential from {s.address} ({s.net_note}) {when}" + (
            f", {what}" if what else ""
        )
        addrs = b.feats.get("address")
        subs = b.feats.get("subnet")
        known = sorted(subs, key=lambda v: -subs.long(v))[:3] if subs is not None else []
        baseline = (
            f"{len(addrs) if addrs is not None else 0} known addresses in "
            f"{len(subs) if subs is not None else 0} networks ({', '.join(known)}); "
            f"{b.days_seen} active days; network {s.net:.0f} + hour {s.hour:.0f} points"
        )
        return Signal(
            "credential",
            "credential.new_address",
            "address",
            s.address,
            self._points(pts),
            observed,
            baseline,
        )

    def _denial(
        self,
        ev: AuditEvent,
        b: Baseline,
        grp: GroupBaseline,
        values: dict[str, str],
        new: dict[str, bool],
        out: list[Signal],
    ) -> None:
        """Denials on paths the identity and its peers never touch: probing with its credential."""
        d = values["dir"]
        if not new["dir"]:
            return
        gc = grp.feats.get("dir")
        if len(grp.members) > 1 and gc is not None and d in gc:
            return
        ts = ev.ts
        marks = [m for m in b.denials or () if m.ts >= ts - _DENIAL_WINDOW]
        if not marks:
            b.denials_emitted = 0.0
        tpl = values["op_template"]
        if any(m.what == tpl for m in marks):
            b.denials = marks
            return
        if len(marks) < _MAX_MARKS:
            marks.append(Mark(ts=ts, what=tpl))
        b.denials = marks
        total = _DENIAL_POINTS * len(marks)
        if total < _ALERT_POINTS or total - b.denials_emitted < _DENIAL_POINTS:
            return
        delta = total - b.denials_emitted
        b.denials_emitted = total
        mins = max(1, round((ts - marks[0].ts) / 60))
        dirs = sorted({directory_of(m.what.split(" ", 1)[-1]) for m in marks})
        observed = (
            f"{b.who or b.key} denied on {len(marks)} paths outside its habit in {mins} min "
            f"({', '.join(dirs[:3])}{', ...' if len(dirs) > 3 else ''})"
        )
        baseline = (
            f"neither it ({b.n} requests, {b.days_seen} active days) nor its "
            f"{max(len(grp.members) - 1, 0)} peers ever used these directories"
        )
        out.append(
            Signal(
                "denial",
                "denial.outside_habit",
                "denials",
                f"{_DENIAL_WINDOW / 3600:.0f}h",
                self._points(delta),
                observed,
                baseline,
            )
        )

    def _first_read(
        self,
        ev: AuditEvent,
        b: Baseline,
        grp: GroupBaseline,
        values: dict[str, str],
        new: dict[str, bool],
        out: list[Signal],
    ) -> None:
        """Slow exfiltration: first-time secret reads, counted over days, against the norm."""
        ts = ev.ts
        if not b.first_from:
            b.first_from = ts
        if not new["op_template"]:
            return
        tpl = values["op_template"].split(" ", 1)[-1]
        feats = b.feats.get("op_template")
        if feats is not None and any(f"{op} {tpl}" in feats for op in ("create", "update", "patch")):
            return  # it wrote this one: reading back its own secret
        names = self.state.user_names
        others = other_names(ev.path, names, b.names)
        gc = grp.feats.get("op_template")
        if others:
            weight = 2.0
        elif len(grp.members) > 1 and gc is not None and values["op_template"] in gc:
            weight = 0.25  # its peers read it: a colleague's habit, not a harvest
        else:
            weight = 1.0
        marks = [m for m in b.firsts or () if m.ts >= ts - _EXFIL_WINDOW]
        if len(marks) >= _MAX_MARKS:
            marks = marks[1:]
        marks.append(Mark(ts=ts, what=_intern(ev.path), weight=weight, rid=ev.request_id or ""))
        b.firsts = marks
        b.first_total += weight
        w = sum(m.weight for m in marks)
        if b.first_fired and w < 0.5 * b.first_fired:
            b.first_fired = 0.0  # the earlier run of first reads has left the window
        if w < _EXFIL_MIN or (b.first_fired and w < b.first_fired + 1.0):
            return
        days = max((ts - b.first_from) / 86400.0, 1.0)
        own = max(b.first_total - w, 0.0) / days
        peers = self._peer_first_rate(b, grp, ts)
        lam = max(_EXFIL_FLOOR, (_EXFIL_WINDOW / 86400.0) * max(own, peers))
        p = _poisson_tail(int(w), lam)
        s = -math.log10(max(p, 1e-300))
        pts = min(self.cfg.points_per_surprise * (s - 1.0), 150.0)
        if not b.first_fired:
            if pts < _ALERT_POINTS:
                return
            emit = pts
        else:
            emit = _UPDATE_POINTS
        b.first_fired = w
        whose = sorted({n for m in marks if m.weight >= 2.0 for n in other_names(m.what, names, b.names)})
        hours = (ts - marks[0].ts) / 3600.0
        span = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} h"
        observed = f"{b.who or b.key} read {len(marks)} secrets it never read before in {span}"
        if whose:
            shown = ", ".join(whose[:4]) + (", ..." if len(whose) > 4 else "")
            observed += f", under other users' own paths ({shown})"
        baseline = (
            f"its norm {own:.2f} first reads a day, its peers' {peers:.2f}; "
            f"expected {lam:.1f} in {_EXFIL_WINDOW / 86400:.0f} days (p={p:.1g})"
        )
        out.append(
            Signal(
                "exfiltration",
                "exfiltration.first_reads",
                "first_reads",
                f"{_EXFIL_WINDOW / 3600:.0f}h",
                self._points(emit),
                observed,
                baseline,
                tuple(m.rid for m in marks if m.rid)[-_MAX_EVIDENCE:],
            )
        )

    def _peer_first_rate(self, b: Baseline, grp: GroupBaseline, ts: float) -> float:
        """Mean first-read rate per day of the identity's settled peers (0 when it has none)."""
        total = days = 0.0
        for m in grp.members[:_PEER_SCAN]:
            if m == b.key:
                continue
            pb = self.state.identities.get(m)
            if pb is None or not pb.first_from:
                continue
            total += pb.first_total
            days += max((ts - pb.first_from) / 86400.0, 1.0)
        return total / days if days else 0.0

    def _rarity(self, b: Baseline, values: dict[str, str], ws: float, ts: float, out: list[Signal]) -> None:
        win = b.window
        for f in ("dir", "subnet"):
            v = values.get(f)
            c = b.feats.get(f)
            if v is None or c is None or c.tot_s <= 0:
                continue
            p = (c.short(v) + 0.01 * ws) / (c.tot_s + ws)
            if p >= 1e-3:
                continue
            sl, ss = self.state.clock.scale(ts)
            long_n = c.lower(v) * sl
            # Rare *and old*: used a few times long ago, hardly at all within the short horizon.
            if long_n < 2.0 or c.short(v) * ss > 0.2 * long_n:
                continue
            tag = f"rarity.{f}:{v}"
            fired = win.fired
            if fired is None:
                fired = win.fired = {}
            elif tag in fired:
                continue
            fired[tag] = 1
            s = -math.log10(p) * 0.6
            if s < self.cfg.min_surprise:
                continue
            out.append(
                Signal(
                    "rarity",
                    f"rarity.{f}",
                    f,
                    v,
                    s,
                    f"{v} used again after weeks",
                    f"{fmt_count(c.short(v) * ss)} of {fmt_count(c.tot_s * ss)} "
                    f"events in {self.cfg.short_horizon_days:.0f} d",
                )
            )

    def _time_signal(self, b: Baseline, ts: float, out: list[Signal]) -> None:
        sl, _ = self.state.clock.scale(ts)
        hours = b.how_total * sl
        # Two full weeks of history before an hour-of-week can be called rare for anyone.
        if hours < self.cfg.time_min_hours or ts - b.first_ts < 14 * 86400:
            return
        how = hour_of_week(ts)
        # Cheap bound first: the tail includes this hour's own share (at least a quarter of its
        # histogram share), so a habitual hour can never be rare enough to report.
        mine = b.hour(how)
        if 0.25 * mine >= b.how_total * 10 ** (-self.cfg.min_surprise):
            return
        # Never more confident than "not once in all these hours" allows (rule of succession).
        p = max(how_tail(b.hours_dense(), how), 0.5 / (hours + 1.0))
        s = -math.log10(p)
        if s < self.cfg.min_surprise:
            return
        day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[how // 24]
        label = f"{day} {how % 24:02d}:00 UTC"
        out.append(
            Signal(
                "time",
                "time.hour_of_week",
                "hour_of_week",
                label,
                s,
                f"active {label}",
                f"{fmt_count(mine * sl)} of {fmt_count(hours)} active hours in this hour-of-week; "
                f"p={p:.2g} ({self.cfg.long_horizon_days:.0f} d)",
            )
        )

    def _volume(self, b: Baseline, ws: float, learning: bool, out: list[Signal]) -> None:
        cfg = self.cfg
        win = b.window
        if win.events < self._min_volume and len(b.new_times or ()) < cfg.day_new_min and not b.new_fired:
            return  # the common case: a quiet hour cannot be a volume anomaly
        vec = win.vector()
        mins = (cfg.volume_min_events, cfg.volume_min_distinct, cfg.volume_min_lists, cfg.error_min_errors)
        hs = b.hstats
        _, ss = self.state.clock.scale(win.last_ts)
        n_eff = hs.s0 * ss
        for i, name in enumerate(METRICS):
            x = vec[i]
            if x < mins[i]:
                continue
            last = win.fired.get(name, 0) if win.fired is not None else 0
            if last and x < 2 * last:
                continue
            mean, sd = hs.moments(i)
            w = n_eff / (n_eff + _PRIOR_HOURS)
            mu = w * mean + (1 - w) * _PRIOR_MEAN[i]
            sig = max(w * sd + (1 - w) * _PRIOR_SD[i], _MIN_SD)
            z = (math.log1p(x) - mu) / sig
            p = _tail_normal(z)
            s = -math.log10(max(p, 1e-300))
            if learning:
                s *= 0.7
            if s < 3.0:
                continue
            if win.fired is None:
                win.fired = {}
            win.fired[name] = x
            typical = math.expm1(mu)
            family = "error" if name == "errors" else "volume"
            label = {
                "events": "requests",
                "distinct": "distinct secrets read",
                "lists": "LIST requests",
                "errors": "errors and denials",
            }[name]
            out.append(
                Signal(
                    family,
                    f"{family}.{name}",
                    name,
                    str(x),
                    min(s, 12.0),
                    f"{x} {label} in one hour",
                    f"typically {typical:.1f} per active hour ({hs.hours} hours)",
                )
            )
        # Slow harvesting: many first-seen templates within the last 24 hours (rolling, so a
        # harvest straddling midnight counts whole).
        times = b.new_times
        if times and times[0] < win.last_ts - 86400:
            times = [t for t in times if t >= win.last_ts - 86400]
            b.new_times = times or None
        dn = len(times or ())
        if dn < cfg.day_new_min:
            b.new_fired = 0
        elif not learning:
            last = b.new_fired
            if not last or dn >= 2 * last:
                n_days = b.day_s0 * ss
                w = n_days / (n_days + 3.0)
                mean = b.day_s1 / b.day_s0 if b.day_s0 > 0 else _DAY_PRIOR_MEAN
                var = max(b.day_s2 / b.day_s0 - mean * mean, 0.0) if b.day_s0 > 0 else 1.0
                mu = w * mean + (1 - w) * _DAY_PRIOR_MEAN
                sig = max(w * math.sqrt(var) + (1 - w) * 1.0, _MIN_SD)
                p = _tail_normal((math.log1p(dn) - mu) / sig)
                s = -math.log10(max(p, 1e-300))
                if s >= 3.0:
                    b.new_fired = dn
                    out.append(
                        Signal(
                            "volume",
                            "volume.day_new",
                            "new_templates_per_day",
                            str(dn),
                            min(s, 12.0),
                            f"{dn} first-seen paths in 24 hours",
                            f"typically {math.expm1(mu):.1f} per day",
                        )
                    )

    def _close_window(self, b: Baseline, ws: float) -> WindowRow:
        win = b.window
        vec = win.vector()
        b.hstats.add(vec, ws)
        hw = hour_of_week(win.first_ts)
        feats = (
            math.log1p(vec[0]),
            math.log1p(vec[1]),
            math.log1p(vec[2]),
            vec[3] / max(vec[0], 1),
            math.log1p(win.new_values),
            float(len(win.addresses)),
            math.sin(2 * math.pi * hw / 168),
            math.cos(2 * math.pi * hw / 168),
            math.sin(2 * math.pi * (hw % 24) / 24),
            math.cos(2 * math.pi * (hw % 24) / 24),
        )
        ident = self.state.last_identity.get(b.key) or Identity(key=b.key, kind="unknown")
        return WindowRow(ident, win.hour, feats, win.request_ids(), win.first_ts, win.last_ts)

    def close_idle(self, now: float) -> list[WindowRow]:
        """Close every window whose hour has passed at ``now`` (end of stream, quiet identities)."""
        if not self.state.identities:
            # Nothing to close; and before the first event the decay landmark is unset, so a
            # weight at ``now`` could overflow.
            return []
        hour = int(now // 3600)
        rows: list[WindowRow] = []
        _, ws = self.state.clock.weights(now)
        for key in sorted(self.state.identities):
            b = self.state.identities[key]
            if 0 <= b.window.hour < hour and b.window.events:
                rows.append(self._close_window(b, ws))
                b.window = Window(hour=b.window.hour)
        return rows

    def summary(self, key: str, now: float | None = None) -> dict[str, Any]:
        """Baseline summary of one identity for the UI/API."""
        b = self.state.identities.get(key)
        if b is None:
            return {}
        at = b.last_ts if now is None else now
        sl, ss = self.state.clock.scale(at)
        feats = {f: (b.feats[f].top(10, sl) if f in b.feats else []) for f in FEATURES}
        mean, _ = b.hstats.moments(0)
        return {
            "key": key,
            "group": b.group,
            "first_seen": b.first_ts,
            "last_active": b.last_ts,
            "events": b.n,
            "learning": self.in_learning(key, at),
            "top_templates": feats["op_template"],
            "top_directories": feats["dir"],
            "top_areas": feats["area"],
            "top_operations": feats["op_template"],
            "mounts": feats["mount"],
            "addresses": feats["address"],
            "subnets": feats["subnet"],
            "hour_of_week": [round(x * sl, 3) for x in b.hours_dense()],
            "rate_per_active_hour": round(math.expm1(mean), 3) if b.hstats.hours else 0.0,
            "active_hours": b.hstats.hours,
            "error_rate": _error_rate(b),
        }


def _error_rate(b: Baseline) -> float:
    hs = b.hstats
    if not hs.hours:
        return 0.0
    ev, _ = hs.moments(0)
    er, _ = hs.moments(3)
    return round(math.expm1(er) / max(math.expm1(ev), 1.0), 4)


def rfc_hm(ts: float) -> str:
    """``HH:MM`` of ``ts`` in UTC (event time)."""
    sec = int(ts) % 86400
    return f"{sec // 3600:02d}:{sec % 3600 // 60:02d}"


def _span(active: list[int]) -> str:
    """Active hours of the day as one range, around the longest idle gap: ``16:00-01:59``.

    >>> _span([16, 17, 23, 0, 1]), _span([9, 10, 11])
    ('16:00-01:59', '09:00-11:59')
    """
    hours = sorted(set(active))
    if len(hours) >= 23:
        return "all day"
    best, first, last = -1, hours[0], hours[-1]
    for i, h in enumerate(hours):
        nxt = hours[(i + 1) % len(hours)]
        gap = (nxt - h) % 24 or 24
        if gap > best:
            best, first, last = gap, nxt, h
    return f"{first:02d}:00-{last:02d}:59"


def _is_login(path: str) -> bool:
    if not path.startswith("auth/"):
        return False
    parts = path.split("/")
    return "login" in parts[1:]


def _secret_path(ev: AuditEvent) -> bool:
    """A read of secret material: not the system, auth or identity backends, not KV metadata."""
    path = ev.path
    if path.startswith(_SYSTEM):
        return False
    mount = ev.mount_point or ""
    rest = path[len(mount) :] if mount and path.startswith(mount) else path.split("/", 1)[-1]
    return not rest.startswith("metadata/")


def _poisson_tail(n: int, lam: float) -> float:
    """P(X >= n) for X ~ Poisson(lam), summed from ``n`` up (no cancellation in the far tail).

    >>> f"{_poisson_tail(5, 0.3):.2g}", _poisson_tail(0, 2.0)
    ('1.6e-05', 1.0)
    """
    if n <= 0:
        return 1.0
    term = math.exp(-lam + n * math.log(lam) - math.lgamma(n + 1))
    tail = 0.0
    k = n
    while term > 1e-300 * max(tail, 1e-300) and k < n + 400:
        tail += term
        k += 1
        term *= lam / k
    return min(1.0, max(tail, 1e-300))
