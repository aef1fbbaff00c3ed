"""The detection engine: events in, alerts out.

Longer than most modules because routing, aggregation into alerts, habits, verdicts and snapshots
all act on the one engine state and must change together.

For every event, in event-time order:

1. the pluggable detectors (deterministic rules, the access-model policy) observe it; their
   ``alerting=True`` findings become alerts directly (rules always fire, learning or not);
2. the behavioural core (:mod:`detect.behaviour`) scores it against the identity's, its peers'
   and the organisation's baselines, then learns it. Response entries are used (they carry the
   outcome and mount); a request entry counts only when no response arrives for it;
3. closed identity-hours queue for the multivariate model (:mod:`detect.model`), scored in
   batches;
4. behavioural signals add decayed points to the identity's risk (:mod:`detect.risk`); crossing
   the threshold, or enough distinct families within the window, raises one ``behaviour-risk``
   alert with ranked reasons (:mod:`detect.explain`). Findings with the same dedup key inside
   the aggregation window update one alert instead of creating many.

Nothing here reads the wall clock or the network: time is ``event.ts`` (or ``now`` passed to
:meth:`Engine.flush` / :meth:`Engine.verdict`), randomness is the injected seed. The whole
state snapshots to msgpack and restores into an engine that continues exactly where the
snapshot was taken.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from detect.alert import MAX_EVENT_IDS, Alert, AlertIdentity, Reason, Severity, alert_id
from ingest.event import AuditEvent, Identity

from .behaviour import Behaviour, BehaviourState, Signal, WindowRow
from .config import DetectConfig
from .errors import StateError, VerdictError
from .explain import rank_reasons, title_for
from .habit import (
    ADMIN_ACT,
    ADMIN_SCOPE,
    HABIT_LABEL,
    HABIT_SCOPE_LABEL,
    ORG_NETWORK_IDENTITIES,
    HabitBook,
    habit_key,
    network_key,
    normal_act,
)
from .model import ModelRow, ModelState, WindowModel
from .partition import IDENTITY, scopes_of
from .risk import Contribution, RiskState, to_score
from .rules import UNANSWERED_TYPE, default_rules
from .templates import subnet_of
from .types import BaselineView, Detector, Finding

__all__ = ["Engine", "STATE_VERSION", "BEHAVIOUR_DETECTOR"]

log = logging.getLogger(__name__)

STATE_VERSION: Final = 1
BEHAVIOUR_DETECTOR: Final = "behaviour-risk"
_NOVELTY_ONLY: Final = frozenset({"novelty", "rarity", "time"})
_MAX_OPEN: Final = 50_000
_MAX_ALERT_SIGNALS: Final = 20_000
_MAX_PENDING: Final = 100_000
_MAX_ALERT_CONTRIBS: Final = 64
_UPDATE_MIN_POINTS: Final = 10.0
_MAX_ROUTES: Final = 1024
_MAX_UNANSWERED: Final = 50_000
_SEVERITY_SCORE: Final = {"info": 10.0, "low": 30.0, "medium": 55.0, "high": 80.0, "critical": 95.0}


class OpenAlert(msgspec.Struct, kw_only=True):
    """An alert that may still absorb findings (its dedup key inside the aggregation window)."""

    alert: Alert
    last_ts: float
    first_ts: float
    contribs: list[Contribution] = msgspec.field(default_factory=list)


class EngineState(msgspec.Struct, kw_only=True):
    version: int = STATE_VERSION
    partial: bool = False
    behaviour: BehaviourState
    model: ModelState = msgspec.field(default_factory=ModelState)
    risk: dict[str, RiskState] = msgspec.field(default_factory=dict)
    open_alerts: dict[str, OpenAlert] = msgspec.field(default_factory=dict)
    alert_signals: dict[str, list[list[str]]] = msgspec.field(default_factory=dict)
    suppressions: dict[str, float] = msgspec.field(default_factory=dict)
    pending: list[AuditEvent] = msgspec.field(default_factory=list)
    detectors: dict[str, Any] = msgspec.field(default_factory=dict)
    now: float = 0.0
    #: Habit records (:class:`detect.habit.HabitBook` dump) and request ids judged without a
    #: response (so a late response is not judged again), by event time.
    habits: dict[str, Any] = msgspec.field(default_factory=dict)
    unanswered: dict[str, float] = msgspec.field(default_factory=dict)
    #: Event time of the first entry the engine processed (the start of the rules' warm-up).
    started: float | None = None
    #: Per identity, the subnets it used and the day of each first use (a HabitBook dump): what
    #: "an address whose subnet the identity never used" means for a habit.
    networks: dict[str, Any] = msgspec.field(default_factory=dict)


#: Built once, when this module is imported. msgspec builds a type's decoding information the
#: first time it decodes it, and two threads doing that at once for these nested structs crash
#: the interpreter (SIGSEGV): a soak's worker died so when its stage-1 and stage-2 threads
#: restored their engines together at start-up (reproduced 20 times in 40 fresh interpreters).
_STATE_DECODER: Final = msgspec.msgpack.Decoder(EngineState)

_RFC3339: dict[float, str] = {}
_MAX_RFC3339: Final = 4096


def rfc3339(ts: float) -> str:
    """RFC 3339 UTC text of POSIX seconds (microsecond precision)."""
    # Memoised: an alert's times are formatted again at every update (a plain function of ts).
    text = _RFC3339.get(ts)
    if text is None:
        if len(_RFC3339) >= _MAX_RFC3339:
            _RFC3339.clear()
        text = _RFC3339[ts] = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    return text


def _alert_identity(ident: Identity) -> AlertIdentity:
    return AlertIdentity(
        key=ident.key,
        entity_id=ident.entity_id,
        display_name=ident.display_name,
        auth_mount=ident.auth_mount,
        policies=tuple(ident.policies),
        role_name=ident.role_name,
    )


def _merge(old: tuple[str, ...], new: Iterable[str], limit: int) -> tuple[str, ...]:
    if len(old) >= limit:
        return old
    out = list(old)
    seen = set(old)
    for x in new:
        if x and x not in seen:
            seen.add(x)
            out.append(x)
            if len(out) >= limit:
                break
    return tuple(out)


def _admits(allowed: frozenset[str] | None, value: str) -> bool:
    return allowed is None or value in allowed


class Engine:
    """Behavioural detection plus pluggable detectors, with risk-based alerting.

    ``detectors=None`` runs :func:`detect.rules.default_rules` next to the behavioural core;
    pass a list to choose the pluggable detectors yourself (``[]`` for behaviour only). The
    behavioural core is always on unless ``config["behaviour_enabled"]`` is false.

    >>> eng = Engine({"model_enabled": False}, detectors=[])
    >>> eng.flush(0.0), eng.flush(1.8e9)
    ([], [])
    """

    def __init__(
        self, config: dict[str, Any] | None = None, *, seed: int = 0, detectors: list[Detector] | None = None
    ) -> None:
        raw = dict(config or {})
        self.cfg = DetectConfig.from_dict(raw)
        self._config = {**self.cfg.to_dict(), **raw}
        self.seed = seed
        self.behaviour_enabled = bool(raw.get("behaviour_enabled", True))
        self.detectors: list[Detector] = default_rules(self._config) if detectors is None else list(detectors)
        self._behaviour = Behaviour(self.cfg)
        self._model = WindowModel(self.cfg, seed)
        self._state = EngineState(behaviour=self._behaviour.state, model=self._model.state)
        self._pending: OrderedDict[str, AuditEvent] = OrderedDict()
        self._habits = HabitBook()
        self._networks = HabitBook()
        #: The detector list the routes were built for (a copy, compared element by element) and,
        #: when some detector defines its own ``==``, their ids (compared instead).
        self._routed: list[Detector] = []
        self._routed_ids: tuple[int, ...] | None = None
        self._routes: dict[tuple[str, str, str], list[Detector]] = {}
        self._out: dict[str, Alert] = {}
        #: Findings produced by the last call (behavioural signals included), for inspection.
        self.last_findings: list[Finding] = []
        self.stats: dict[str, int] = {"events": 0, "behaviour_events": 0, "findings": 0, "detector_errors": 0}

    # -- DetectContext --------------------------------------------------------------------------
    @property
    def baselines(self) -> BaselineView:
        return self._behaviour

    @property
    def config(self) -> dict[str, Any]:
        return self._config

    # -- processing -----------------------------------------------------------------------------
    def process(self, event: AuditEvent) -> list[Alert]:
        """New or updated alerts caused by ``event`` (final state of each, in creation order)."""
        self._out = {}
        self.last_findings = []
        self._process(event)
        return list(self._out.values())

    def process_batch(self, events: Iterable[AuditEvent]) -> list[Alert]:
        """:meth:`process` over many events; each alert appears once, in its final state."""
        self._out = {}
        self.last_findings = []
        for ev in events:
            self._process(ev)
        return list(self._out.values())

    def flush(self, now: float) -> list[Alert]:
        """Time-driven work at ``now``: late requests, closing idle hours, scoring the model."""
        self._out = {}
        self.last_findings = []
        st = self._state
        st.now = max(st.now, now)
        self._expire_pending(now)
        # Deadline-driven detectors (rotation-overdue) fire on time even when the stream is quiet.
        for det in self.detectors:
            due = getattr(det, "due", None)
            if due is None:
                continue
            try:
                found = due(now)
            except Exception:  # noqa: BLE001 - one faulty detector must not stop detection
                self.stats["detector_errors"] += 1
                log.exception("detector %s failed in due()", getattr(det, "name", det))
                continue
            for f in found:
                self._finding(f)
        if self.behaviour_enabled:
            for row in self._behaviour.close_idle(now):
                self._queue_row(row)
            if self._model.ready() or self._model.overdue(now):
                self._score_model()
        self._prune(now)
        return list(self._out.values())

    def external(self, finding: Finding, now: float, *, evidence: str | None = None) -> list[Alert]:
        """Alerts for a finding made outside the event stream (a Vault metadata scan, say).

        The finding goes through exactly what a detector's finding goes through: analyst
        suppressions, aggregation with an open alert of the same dedup key, the deterministic
        alert id, and the scopes a later :meth:`verdict` acts on; a non-alerting finding feeds
        the identity's risk. ``now`` advances the engine's clock (the finding's ``last_ts``, when
        set, is its time). ``evidence`` names what triggered it when that is not an audit
        request (``"metadata:3"``): it then stands in for the first event id in the alert id.
        """
        self._out = {}
        self.last_findings = []
        st = self._state
        st.now = max(st.now, now)
        self._finding(finding, evidence=evidence)
        return list(self._out.values())

    def _process(self, ev: AuditEvent) -> None:
        st = self._state
        ts = ev.ts
        if ts > st.now:
            st.now = ts
        if st.started is None:
            st.started = ts
        self.stats["events"] += 1
        rid = ev.request_id
        if rid and ev.is_response and st.unanswered.pop(rid, None) is not None:
            # The request was already judged without its response (and learned): once is enough.
            self.stats["late_responses"] = self.stats.get("late_responses", 0) + 1
            return
        self._observe(ev, self._route(ev))
        if ev.is_response and ev.remote_ip:
            subnet = subnet_of(ev.remote_ip)
            self._networks.record(ev.identity.key, ts, subnet)
            if ev.outcome == "ok":
                # Who works from each network: a subnet several identities used successfully on
                # earlier days is the organisation's own (an office, the VPN), not a stranger's.
                self._networks.record(network_key(subnet), ts, ev.identity.key)
        if ev.is_request and rid:
            self._pending[rid] = ev
            if len(self._pending) > _MAX_PENDING:
                _, old = self._pending.popitem(last=False)
                self._unanswered(old)
        else:
            if rid:
                self._pending.pop(rid, None)
            if self.behaviour_enabled:
                self._behave(ev)
        if self._pending:
            self._expire_pending(ts)

    def _observe(self, ev: AuditEvent, detectors: list[Detector]) -> None:
        for det in detectors:
            try:
                found = det.observe(ev, self)
            except Exception:  # noqa: BLE001 - one faulty detector must not stop detection
                self.stats["detector_errors"] += 1
                log.exception("detector %s failed on request %s", getattr(det, "name", det), ev.request_id)
                continue
            for f in found:
                f = self._habit(f, ev)
                if f.alerting and _rank(f.severity) >= _rank("medium") and ev.remote_ip and _local(det):
                    self._distrust(ev)
                self._finding(f)

    def _distrust(self, ev: AuditEvent) -> None:
        """The network an attack came from vouches for no one for a while, whatever its requests
        taught the organisation (see :meth:`Behaviour.distrust`) -- unless it is already the
        organisation's own (several identities worked from it on earlier days: an office, the
        VPN), where an insider's or a compromised laptop's alert says nothing of its neighbours."""
        subnet = subnet_of(ev.remote_ip or "")
        if (
            self._networks.earlier_members(network_key(subnet), ev.ts, ev.identity.key)
            >= ORG_NETWORK_IDENTITIES
        ):
            return
        self._behaviour.distrust(subnet, ev.ts + self.cfg.taint_days * 86400)

    def _unanswered(self, ev: AuditEvent) -> None:
        """Judge a request entry whose response never came, as the only record of its request.

        Detectors that judge only responses (and those declaring ``judges_unanswered``) see it once,
        as the same entry typed :data:`~detect.rules.UNANSWERED_TYPE`; its outcome stays what the
        request says (usually ``pending``). A response arriving later is then skipped.
        """
        marked = msgspec.structs.replace(ev, type=UNANSWERED_TYPE)
        dets = [
            d
            for d in self._route(marked)
            if getattr(d, "only_responses", False) or getattr(d, "judges_unanswered", False)
        ]
        self._observe(marked, dets)
        rid = ev.request_id
        if rid:
            un = self._state.unanswered
            un[rid] = ev.ts
            if len(un) > _MAX_UNANSWERED:
                del un[next(iter(un))]
        if self.behaviour_enabled:
            self._behave(ev)

    def _route(self, ev: AuditEvent) -> list[Detector]:
        """The detectors that can judge ``ev`` (by entry type, operation and outcome), in order."""
        dets = self.detectors
        if not dets:
            return dets
        # Detectors compare by identity, so an equal list holds the same detector objects: one C
        # loop and no allocation per event. One that defines its own ``==`` (a dataclass) could
        # equal a replacement: then ids are compared, as the list's identity.
        ids = self._routed_ids
        if dets != self._routed if ids is None else tuple(map(id, dets)) != ids:
            # The list was replaced or changed in place: the routes no longer hold.
            self._routed = list(dets)
            by_value = any(type(d).__eq__ is not object.__eq__ for d in dets)
            self._routed_ids = tuple(map(id, dets)) if by_value else None
            self._routes = {}
        key = (ev.type, ev.request.operation or "", ev.outcome)
        route = self._routes.get(key)
        if route is None:
            resp = ev.is_response
            route = [
                d
                for d in dets
                if (resp or not getattr(d, "only_responses", False))
                and _admits(getattr(d, "only_operations", None), key[1])
                and _admits(getattr(d, "only_outcomes", None), key[2])
            ]
            if len(self._routes) >= _MAX_ROUTES:
                self._routes.clear()
            self._routes[key] = route
        return route

    def _expire_pending(self, now: float) -> None:
        # A request entry whose response has not come within the wait never will (sys/seal,
        # requests refused before routing): it is the only record of that request.
        wait = self.cfg.request_wait_seconds
        pend = self._pending
        while pend:
            rid, ev = next(iter(pend.items()))
            if ev.ts > now - wait:
                break
            del pend[rid]
            self._unanswered(ev)

    # -- habits ---------------------------------------------------------------------------------
    def _habit(self, f: Finding, ev: AuditEvent) -> Finding:
        """``f`` lowered to ``low`` when its act is the identity's habit and nothing else is unusual.

        A finding declares its act in the ``habit_act`` label (see :mod:`detect.habit`). Only a
        successful act (outcome ``ok`` on a response) counts as done and can be lowered; a medium
        or high finding drops to ``low`` when the same identity did the same act successfully on
        at least two earlier days (or on one earlier day during the warm-up), from a subnet it did
        it from before (or one :data:`~detect.habit.ORG_NETWORK_IDENTITIES` other identities worked
        from successfully on earlier days: the organisation's office or VPN), and is not learning
        (new or back from dormancy). During the warm-up
        (``rules_warmup_hours`` after the first entry the engine processed) every such act is
        ``low`` and establishes the habit: when monitoring starts, each routine is a first time.
        A finding of routine configuration work (``habit_scope=admin``: a policy written, a mount
        enabled or tuned) is also lowered when the identity is an administrator by behaviour: any
        habit-declared admin act done on as many earlier days, from the same subnet. Critical
        findings are never lowered, and rules without a ``habit_act`` (root use, audit
        devices, key export, snapshots, destruction, bursts) are not concerned.
        """
        act = f.labels.get(HABIT_LABEL)
        if not act or not f.alerting:
            return f
        act = normal_act(act)
        ident = f.identity.key
        key = habit_key(ident, f.detector, act)
        subnet = subnet_of(ev.remote_ip) if ev.remote_ip else None
        if ev.outcome != "ok" or not ev.is_response or ev.type == UNANSWERED_TYPE:
            return f
        out = f
        warm = self._warming(ev.ts)
        admin = habit_key(ident, "*", ADMIN_ACT)
        if f.severity in ("medium", "high"):
            if warm:
                out = self._warmup_lowered(f, ev.ts)
            elif not self._habit_learning(ident, ev.ts):
                books = [(key, "")]
                if f.labels.get(HABIT_SCOPE_LABEL) == ADMIN_SCOPE:
                    books.append((admin, "an administrator by behaviour: admin work "))
                # A subnet the identity used on an earlier day (for this act or anything else).
                known = (
                    subnet is None
                    or self._habits.knows_subnet(key, subnet, ev.ts)
                    or self._networks.knows_subnet(ident, subnet, ev.ts)
                    or self._networks.earlier_members(network_key(subnet), ev.ts, ident)
                    >= ORG_NETWORK_IDENTITIES
                )
                for sig, what in books:
                    earlier = self._habits.habitual(sig, ev.ts)
                    if earlier and known:
                        out = self._lowered(f, sig, earlier, ev.ts, subnet, what)
                        break
        self._habits.record(key, ev.ts, subnet, warmup=warm)
        self._habits.record(admin, ev.ts, subnet, warmup=warm)
        return out

    def _warming(self, ts: float) -> bool:
        """True during the rules' warm-up: ``rules_warmup_hours`` after the first entry processed."""
        start = self._state.started
        hours = self.cfg.rules_warmup_hours
        return hours > 0 and start is not None and ts - start < hours * 3600.0

    def _warmup_lowered(self, f: Finding, ts: float) -> Finding:
        start = self._state.started if self._state.started is not None else ts
        hours = self.cfg.rules_warmup_hours
        reason = Reason(
            "warm-up",
            f"monitoring started {_ago(ts - start)} ago: acts in the first {_ago(hours * 3600.0)} "
            "establish the identity's habits",
            f"normal severity {f.severity} after the warm-up, for acts not done in it",
            1.0,
        )
        return msgspec.structs.replace(
            f,
            severity="low",
            score=min(f.score, _SEVERITY_SCORE["low"]),
            title=f"{f.title} (warm-up)",
            reasons=(reason, *f.reasons)[:5],
            labels={**f.labels, "warmup": "true", "normal_severity": f.severity},
        )

    def _habit_learning(self, key: str, ts: float) -> bool:
        """True while the identity's baseline is young (new, or back from dormancy).

        A quiet administrator with few events is not "learning" here: its habit record is the
        evidence. Without the behavioural core there is no baseline to be young.
        """
        if not self.behaviour_enabled:
            return False
        b = self._state.behaviour.identities.get(key)
        return b is None or ts - b.learn_start < self.cfg.learning_days * 86400.0

    def _lowered(
        self, f: Finding, key: str, earlier: int, ts: float, subnet: str | None, what: str = ""
    ) -> Finding:
        last = self._habits.last_earlier(key, ts)
        ago = _ago(ts - last) if last is not None else "?"
        where = f" from {subnet}" if subnet else ""
        reason = Reason(
            "habit",
            f"{what}done on {earlier} earlier days, last {ago} ago{where}",
            f"normal severity {f.severity}: first occurrences, new addresses, "
            "learning identities and failed attempts",
            1.0,
        )
        return msgspec.structs.replace(
            f,
            severity="low",
            score=min(f.score, _SEVERITY_SCORE["low"]),
            title=f"{f.title} ({'routine admin work' if what else 'habitual'})",
            reasons=(reason, *f.reasons)[:5],
            labels={**f.labels, "habitual": "admin" if what else "true", "normal_severity": f.severity},
        )

    def _behave(self, ev: AuditEvent) -> None:
        self.stats["behaviour_events"] += 1
        signals, b, rows = self._behaviour.observe(ev)
        for row in rows:
            self._queue_row(row)
        if signals:
            self._signals(ev.identity, signals, ev, learning=self._behaviour.in_learning(b.key, ev.ts))
        if self._model.ready():
            self._score_model()

    def _queue_row(self, row: WindowRow) -> None:
        if not self.cfg.model_enabled:
            return
        self._model.add(
            ModelRow(
                identity=row.identity,
                hour=row.hour,
                features=list(row.features),
                event_ids=list(row.event_ids),
                first_ts=row.first_ts,
                last_ts=row.last_ts,
            )
        )

    def _score_model(self) -> None:
        if not self.cfg.model_enabled:
            return
        for row, p in self._model.score_pending():
            if p > self.cfg.model_tail:
                continue
            # Halved: the window's features restate what the other signals already measured.
            s = 0.5 * WindowModel.surprise(p)
            sig = Signal(
                "model",
                "model.window",
                "identity_hour",
                str(row.hour),
                s,
                f"hour starting {rfc3339(row.hour * 3600.0)} scored as an outlier",
                f"tail probability {p:.2g} among {len(self._model.state.fit_matrix)} recent identity-hours",
            )
            eid = row.event_ids[0] if row.event_ids else ""
            learning = self._behaviour.in_learning(row.identity.key, row.last_ts)
            self._signals(row.identity, [sig], None, learning=learning, ts=row.last_ts, event_id=eid)

    # -- risk -----------------------------------------------------------------------------------
    def _signals(
        self,
        ident: Identity,
        signals: list[Signal],
        ev: AuditEvent | None,
        *,
        learning: bool,
        ts: float | None = None,
        event_id: str = "",
    ) -> None:
        cfg = self.cfg
        st = self._state
        key = ident.key
        at = ev.ts if ev is not None else float(ts or 0.0)
        eid = (ev.request_id or "") if ev is not None else event_id
        path = ev.path if ev is not None else ""
        addr = (ev.remote_ip or "") if ev is not None else ""
        added: list[Contribution] = []
        for s in signals:
            if st.suppressions.get(f"{key}\x1f{s.signal}\x1f{s.value}", 0.0) > at:
                continue
            points = max(0.0, cfg.points_per_surprise * (s.surprise - 1.0))
            finding = Finding(
                detector=s.signal.replace(".", "-").replace("_", "-"),
                title=s.observed,
                severity="info",
                score=min(100.0, points),
                family=s.family,
                identity=ident,
                dedup_key=f"{s.signal}:{key}:{s.value}",
                event_ids=(eid,) if eid else (),
                paths=(path,) if path else (),
                source_addresses=(addr,) if addr else (),
                first_ts=at,
                last_ts=at,
                alerting=False,
                labels={"signal": s.signal, "value": s.value, "feature": s.feature},
            )
            self.last_findings.append(finding)
            self.stats["findings"] += 1
            added.append(
                Contribution(
                    ts=at,
                    family=s.family,
                    signal=s.signal,
                    value=s.value,
                    points=points,
                    feature=s.feature,
                    observed=s.observed,
                    baseline=s.baseline,
                    event_id=eid,
                    path=path,
                    address=addr,
                    more=s.evidence,
                )
            )
        if not added:
            return
        dkey = f"{BEHAVIOUR_DETECTOR}:{key}"
        open_ = st.open_alerts.get(dkey)
        if open_ is not None and at - open_.last_ts <= cfg.aggregation_hours * 3600:
            strong = [c for c in added if c.points >= _UPDATE_MIN_POINTS]
            if strong:
                self._update_behaviour_alert(open_, strong, at, learning)
            return
        risk = st.risk.get(key)
        if risk is None:
            risk = st.risk[key] = RiskState()
        window = cfg.risk_window_hours * 3600
        risk.prune(at, window)
        for c in added:
            if c.family == "time":
                # Unusual hours within one window are one shift of habit (a moved cron job),
                # not independent evidence: the k-th counts 1/k.
                k = 1 + sum(1 for x in risk.items if x.family == "time")
                c.points /= k
            risk.add(c)
        half = cfg.risk_half_life_hours * 3600
        score = risk.score(at, half)
        fams = risk.families(at, half, cfg.family_min_points)
        fire = score >= cfg.risk_threshold or len(fams) >= cfg.families_to_alert
        if fire and learning and not any(f not in _NOVELTY_ONLY for f in fams):
            fire = False  # learning: novelty alone never alerts
        if not fire:
            return
        contribs = list(risk.items)
        risk.clear()
        self._new_behaviour_alert(ident, dkey, contribs, at, learning)

    def _behaviour_alert(
        self,
        ident: Identity,
        dkey: str,
        contribs: list[Contribution],
        first_ts: float,
        last_ts: float,
        learning: bool,
        aid: str,
        count: int,
    ) -> Alert:
        cfg = self.cfg
        half = cfg.risk_half_life_hours * 3600
        decayed = [(c.points * 0.5 ** (max(last_ts - c.ts, 0.0) / half), c) for c in contribs]
        total = sum(p for p, _ in decayed)
        fams: dict[str, float] = {}
        for p, c in decayed:
            fams[c.family] = fams.get(c.family, 0.0) + p
        fam_order = [f for f, _ in sorted(fams.items(), key=lambda kv: (-kv[1], kv[0]))]
        strong_fams = sum(1 for p in fams.values() if p >= cfg.family_min_points)
        score = max(to_score(total, cfg.risk_threshold), 60 if strong_fams >= cfg.families_to_alert else 0)
        if learning:
            score = min(score, cfg.cold_start_cap)
        severity: Severity = "high" if score >= cfg.high_score else "medium"
        ordered = sorted(contribs, key=lambda c: c.ts)
        display = ident.display_name or ident.key
        return Alert(
            id=aid,
            detector=BEHAVIOUR_DETECTOR,
            title=title_for(fam_order, display, decayed),
            severity=severity,
            score=score,
            identity=_alert_identity(ident),
            first_seen=rfc3339(first_ts),
            last_seen=rfc3339(last_ts),
            count=count,
            event_ids=_merge((), (e for c in ordered for e in (*c.more, c.event_id)), MAX_EVENT_IDS),
            source_addresses=_merge((), (c.address for c in ordered), 50),
            paths=_merge((), (c.path for c in ordered), 50),
            explanation=rank_reasons(decayed),
            dedup_key=dkey,
            labels={"families": ",".join(sorted(fams)), "learning": "true" if learning else "false"},
        )

    def _new_behaviour_alert(
        self, ident: Identity, dkey: str, contribs: list[Contribution], at: float, learning: bool
    ) -> None:
        first = min(c.ts for c in contribs)
        first_eid = next((c.event_id for c in sorted(contribs, key=lambda c: c.ts) if c.event_id), "")
        aid = alert_id(BEHAVIOUR_DETECTOR, dkey, first_eid or rfc3339(first))
        alert = self._behaviour_alert(ident, dkey, contribs, first, at, learning, aid, len(contribs))
        self._state.open_alerts[dkey] = OpenAlert(
            alert=alert, last_ts=at, first_ts=first, contribs=contribs[-_MAX_ALERT_CONTRIBS:]
        )
        self._remember(alert.id, [[ident.key, c.signal, c.value, c.feature] for c in contribs])
        self._emit(alert)

    def _update_behaviour_alert(
        self, open_: OpenAlert, added: list[Contribution], at: float, learning: bool
    ) -> None:
        old = open_.alert
        contribs = (open_.contribs + added)[-_MAX_ALERT_CONTRIBS:]
        ident = self._state.behaviour.last_identity.get(old.identity.key) or Identity(
            key=old.identity.key, kind="unknown"
        )
        new = self._behaviour_alert(
            ident, old.dedup_key, contribs, open_.first_ts, at, learning, old.id, old.count + len(added)
        )
        new = msgspec.structs.replace(
            new,
            score=max(new.score, old.score),
            severity=new.severity if new.score >= old.score else old.severity,
            event_ids=_merge(old.event_ids, new.event_ids, MAX_EVENT_IDS),
            paths=_merge(old.paths, new.paths, 50),
            source_addresses=_merge(old.source_addresses, new.source_addresses, 50),
        )
        open_.alert = new
        open_.last_ts = at
        open_.contribs = contribs
        self._remember(new.id, [[ident.key, c.signal, c.value, c.feature] for c in added])
        self._emit(new)

    # -- alerting findings (rules, policy) ------------------------------------------------------
    def _finding(self, f: Finding, *, evidence: str | None = None) -> None:
        self.last_findings.append(f)
        self.stats["findings"] += 1
        if not f.alerting:
            # A non-alerting finding from a pluggable detector feeds risk like a signal would.
            sig = Signal(
                f.family,
                f.detector,
                f.detector,
                f.dedup_key,
                1.0 + f.score / self.cfg.points_per_surprise,
                f.title,
                f.reasons[0].baseline if f.reasons else "",
            )
            ts = f.last_ts or self._state.now
            learning = self._behaviour.in_learning(f.identity.key, ts)
            self._signals(
                f.identity,
                [sig],
                None,
                learning=learning,
                ts=ts,
                event_id=f.event_ids[0] if f.event_ids else "",
            )
            return
        st = self._state
        key = f.identity.key
        ts = f.last_ts or st.now
        if st.suppressions.get(f"{key}\x1f{f.detector}\x1f{f.dedup_key}", 0.0) > ts:
            return
        first_ts = f.first_ts or ts
        open_ = st.open_alerts.get(f.dedup_key)
        sev = f.severity if f.severity in ("info", "low", "medium", "high", "critical") else "medium"
        if open_ is not None and ts - open_.last_ts <= self.cfg.aggregation_hours * 3600:
            old = open_.alert
            # The alert reads as its latest evidence unless that is weaker (a habitual repeat).
            latest = _rank(sev) >= _rank(old.severity)
            new = msgspec.structs.replace(
                old,
                title=f.title if latest else old.title,
                explanation=tuple(f.reasons[:5]) if latest and f.reasons else old.explanation,
                last_seen=rfc3339(max(ts, open_.last_ts)),
                count=old.count + 1,
                event_ids=_merge(old.event_ids, f.event_ids, MAX_EVENT_IDS),
                paths=_merge(old.paths, f.paths, 50),
                source_addresses=_merge(old.source_addresses, f.source_addresses, 50),
                score=max(old.score, int(round(min(100.0, f.score)))),
                severity=sev if _rank(sev) > _rank(old.severity) else old.severity,
            )
            open_.alert = new
            open_.last_ts = max(ts, open_.last_ts)
            self._emit(new)
            return
        first_eid = evidence or (f.event_ids[0] if f.event_ids else rfc3339(first_ts))
        alert = Alert(
            id=alert_id(f.detector, f.dedup_key, first_eid),
            detector=f.detector,
            title=f.title,
            severity=sev,  # type: ignore[arg-type]
            score=int(round(max(0.0, min(100.0, f.score)))),
            identity=_alert_identity(f.identity),
            first_seen=rfc3339(first_ts),
            last_seen=rfc3339(ts),
            count=1,
            event_ids=tuple(f.event_ids[:MAX_EVENT_IDS]),
            source_addresses=tuple(f.source_addresses[:50]),
            paths=tuple(f.paths[:50]),
            explanation=tuple(f.reasons[:5]),
            dedup_key=f.dedup_key,
            labels=dict(f.labels),
        )
        st.open_alerts[f.dedup_key] = OpenAlert(alert=alert, last_ts=ts, first_ts=first_ts)
        self._remember(alert.id, [[key, f.detector, f.dedup_key, "rule"]])
        self._emit(alert)
        if len(st.open_alerts) > _MAX_OPEN:
            self._prune(st.now)

    def _emit(self, alert: Alert) -> None:
        self._out.pop(alert.id, None)
        self._out[alert.id] = alert

    def _remember(self, aid: str, scopes: list[list[str]]) -> None:
        sig = self._state.alert_signals
        sig.setdefault(aid, []).extend(scopes)
        if len(sig) > _MAX_ALERT_SIGNALS:
            del sig[next(iter(sig))]

    def _prune(self, now: float) -> None:
        st = self._state
        agg = self.cfg.aggregation_hours * 3600
        st.open_alerts = {k: v for k, v in st.open_alerts.items() if now - v.last_ts <= agg}
        st.suppressions = {k: v for k, v in st.suppressions.items() if v > now}
        keep = now - max(agg, 100 * self.cfg.request_wait_seconds)
        if st.unanswered and next(iter(st.unanswered.values())) < keep:
            st.unanswered = {k: v for k, v in st.unanswered.items() if v >= keep}
        window = self.cfg.risk_window_hours * 3600
        for key in [k for k, r in st.risk.items() if not r.items or r.items[-1].ts < now - window]:
            del st.risk[key]

    # -- feedback -------------------------------------------------------------------------------
    def verdict(self, alert: Alert, verdict: str, *, now: float, comment: str = "") -> None:
        """Analyst feedback on ``alert``.

        ``false_positive`` suppresses each signal of the alert for that identity and value for
        ``suppression_days`` and folds the values into the identity's baseline;
        ``true_positive`` keeps the identity's events out of its own baseline for ``taint_days``
        (so the attacker's behaviour does not become "normal").
        """
        st = self._state
        scopes = st.alert_signals.get(alert.id, [])
        if verdict == "false_positive":
            until = now + self.cfg.suppression_days * 86400
            for key, signal, value, feature in scopes:
                st.suppressions[f"{key}\x1f{signal}\x1f{value}"] = until
                if feature != "rule":
                    self._behaviour.fold(key, feature, value, now)
            st.risk.pop(alert.identity.key, None)
            st.open_alerts.pop(alert.dedup_key, None)
        elif verdict == "true_positive":
            b = st.behaviour.identities.get(alert.identity.key)
            if b is not None:
                b.taint_until = max(b.taint_until, now + self.cfg.taint_days * 86400)
        else:
            raise VerdictError(f"unknown verdict {verdict!r}: use 'false_positive' or 'true_positive'")
        log.info("verdict %s on alert %s (%d scopes)", verdict, alert.id, len(scopes))

    # -- state ----------------------------------------------------------------------------------
    def snapshot(self, identity_keys: Iterable[str] | None = None) -> bytes:
        """The engine state as msgpack; with ``identity_keys``, only those identities' state."""
        st = self._state
        st.detectors = {getattr(d, "name", str(i)): d.state() for i, d in enumerate(self.detectors)}
        st.habits = self._habits.dump()
        st.networks = self._networks.dump()
        st.pending = list(self._pending.values()) if identity_keys is None else []
        if identity_keys is None:
            try:
                return msgspec.msgpack.encode(st)
            finally:
                st.pending = []  # the live copy is self._pending
        keys = set(identity_keys)
        beh = st.behaviour
        part = EngineState(
            partial=True,
            behaviour=BehaviourState(
                clock=beh.clock,
                identities={k: v for k, v in beh.identities.items() if k in keys},
                last_identity={k: v for k, v in beh.last_identity.items() if k in keys},
            ),
            risk={k: v for k, v in st.risk.items() if k in keys},
            now=st.now,
        )
        return msgspec.msgpack.encode(part)

    def restore(self, data: bytes) -> None:
        """Load a :meth:`snapshot`; a partial one merges its identities into the current state."""
        try:
            st = _STATE_DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise StateError(f"cannot decode engine state: {exc}") from None
        if st.version != STATE_VERSION:
            raise StateError(f"engine state version {st.version} is not {STATE_VERSION}")
        if st.partial:
            self._behaviour.adopt(st.behaviour.clock, st.behaviour.identities, st.behaviour.last_identity)
            self._state.risk.update(st.risk)
            return
        self._state = st
        self._behaviour = Behaviour(self.cfg, st.behaviour)
        self._model = WindowModel(self.cfg, self.seed, st.model)
        self._pending = OrderedDict((e.request_id or "", e) for e in st.pending)
        st.pending = []
        self._habits = HabitBook()
        self._habits.load(st.habits)
        st.habits = {}
        self._networks = HabitBook()
        self._networks.load(st.networks)
        st.networks = {}
        for i, d in enumerate(self.detectors):
            saved = st.detectors.get(getattr(d, "name", str(i)))
            if saved is not None:
                d.load(saved)

    # -- views ----------------------------------------------------------------------------------
    def identity_summary(self, key: str) -> dict[str, Any]:
        """Baseline summary for the UI/API (empty when the identity is unknown)."""
        out = self._behaviour.summary(key)
        if not out:
            return out
        risk = self._state.risk.get(key)
        now = self._state.now
        out["risk"] = round(risk.score(now, self.cfg.risk_half_life_hours * 3600), 2) if risk else 0.0
        out["bytes"] = len(msgspec.msgpack.encode(self._state.behaviour.identities[key]))
        return out

    def raised(self, alert_id: str) -> bool:
        """Whether this engine raised ``alert_id`` (and still remembers its signals, so a verdict
        on it can act here)."""
        return alert_id in self._state.alert_signals

    def identities(self) -> list[str]:
        """Every identity key with a baseline."""
        return sorted(self._state.behaviour.identities)


def _ago(seconds: float) -> str:
    """Whole days (or hours below two days): ``7d``, ``30h``."""
    if seconds >= 2 * 86400.0:
        return f"{seconds / 86400.0:.0f}d"
    return f"{max(seconds, 0.0) / 3600.0:.0f}h"


def _local(det: Detector) -> bool:
    """Whether ``det`` runs beside the behavioural core in every deployment (its state is keyed by
    the event's identity, :mod:`detect.partition`): only its alerts may steer the core, so that
    ``replay`` and ``run`` with any partitioning learn the same."""
    return scopes_of(str(getattr(det, "name", ""))) == (IDENTITY,)


def _rank(sev: str) -> int:
    return (
        ("info", "low", "medium", "high", "critical").index(sev)
        if sev in ("info", "low", "medium", "high", "critical")
        else 2
    )
