"""Scoring detection against the traffic generator's ground truth, naive baselines, and the report.

:func:`evaluate` replays a :class:`~vaultwatch.demo.traffic.GeneratedLog` through a detection engine
and three naive baselines (first-seen path template per identity, static per-hour thresholds,
IsolationForest on raw per-identity hourly counts) and returns a :class:`Report`;
:func:`render` turns it into Markdown. The scenario test and ``bench/naive_baselines.py`` use it.

The scoring is pure: it takes parsed events, their labels and the alerts a detector raised,
and works out per scenario whether an alert of at least ``medium`` severity shared an event id
with the attack, how late it came, and how many alerts fell on benign traffic only.

Definitions used in the report:

* *caught*: an alert of severity medium or above whose ``event_ids`` overlap the scenario's
  request ids. ``any`` also counts ``info``/``low`` alerts.
* *delay*: attack requests processed from the first one (or, for a single-event attack, from the
  triggering one) until the first catching alert was emitted; 0 = on the trigger itself.
  Negative means caught before the trigger (e.g. at a login from a new address).
* *false alerts*: alerts of medium or above whose event ids are all benign, per 10k benign
  audit entries. Alerts whose events are all from the organisation's bootstrap (``setup``) are
  shown separately.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from detect.alert import Alert, severity_rank
from ingest.event import AuditEvent

from ..service.replay import run_engine
from .traffic import BENIGN, SETUP, GeneratedLog, Scenario

__all__ = [
    "Evaluation",
    "NaiveAlert",
    "Report",
    "ScenarioOutcome",
    "Scorer",
    "evaluate",
    "first_seen_baseline",
    "isolation_forest_baseline",
    "judge_alerts",
    "path_template",
    "render",
    "replay",
    "requests_of",
    "score_naive",
    "static_threshold_baseline",
]

MEDIUM = severity_rank("medium")
HOUR = 3600.0
DAY = 86400.0


@dataclass
class ScenarioOutcome:
    """How one attack scenario fared against one detector."""

    kind: str
    requests: int
    single_event: bool
    caught: bool = False
    caught_any: bool = False
    delay: int | None = None
    delay_seconds: float | None = None
    detectors: set[str] = field(default_factory=set)
    best_severity: str = "-"
    #: Every finding the detector produced on the scenario's events, alerting or not
    #: ("detector:severity"), to explain a miss.
    signals: set[str] = field(default_factory=set)
    #: The alerts that share an event with the scenario (:func:`judge_alerts` only).
    alert_ids: list[str] = field(default_factory=list)


@dataclass
class Evaluation:
    """One detector's results on a generated log: per-scenario outcomes and false alerts."""

    name: str
    outcomes: dict[str, ScenarioOutcome]
    benign_events: int
    alerts: int = 0
    false_alerts: int = 0
    setup_alerts: int = 0
    false_examples: list[str] = field(default_factory=list)
    false_by_detector: dict[str, int] = field(default_factory=dict)

    @property
    def recall(self) -> float:
        """Share of scenarios caught by a medium+ alert."""
        if not self.outcomes:
            return 0.0
        return sum(o.caught for o in self.outcomes.values()) / len(self.outcomes)

    @property
    def false_per_10k(self) -> float:
        """False alerts (medium+, benign events only) per 10k benign audit entries."""
        return 10_000 * self.false_alerts / max(self.benign_events, 1)

    @property
    def missed(self) -> list[str]:
        """Scenario kinds no medium+ alert caught."""
        return [k for k, o in self.outcomes.items() if not o.caught]

    def single_event_delays(self) -> list[int]:
        """Delays (requests after the trigger) of the caught single-event scenarios."""
        return [o.delay for o in self.outcomes.values() if o.single_event and o.delay is not None]


class Scorer:
    """Track alerts as they are emitted, against the scenarios' request ids."""

    def __init__(self, generated: GeneratedLog, benign_events: int, name: str) -> None:
        self.labels = generated.labels
        self.sim_start = generated.start.strftime("%Y-%m-%dT%H:%M:%S")
        self.scenarios: dict[str, Scenario] = generated.scenarios
        self.index = {
            kind: {rid: i for i, rid in enumerate(sc.request_ids)} for kind, sc in generated.scenarios.items()
        }
        self.seen: dict[str, int] = defaultdict(int)  # scenario -> distinct requests processed
        self._seen_ids: set[str] = set()
        self.first_ts: dict[str, float] = {}
        self.final: dict[str, Alert] = {}
        self.eval = Evaluation(
            name,
            {
                k: ScenarioOutcome(k, len(sc.request_ids), sc.single_event)
                for k, sc in generated.scenarios.items()
            },
            benign_events,
        )

    def observe_findings(self, ev: AuditEvent, findings: Iterable[Any]) -> None:
        """Record findings (``detector``, ``severity``, ``event_ids``) that touch a scenario's events."""
        for f in findings:
            rids = tuple(getattr(f, "event_ids", ()) or ()) or (ev.request_id or "",)
            for kind in {self.labels.get(rid) for rid in rids}:
                if kind in self.eval.outcomes:
                    self.eval.outcomes[kind].signals.add(f"{f.detector}:{f.severity}")

    def observe_event(self, ev: AuditEvent) -> None:
        """Note that the detector has now seen ``ev`` (before its alerts are scored)."""
        rid = ev.request_id
        if not rid or rid in self._seen_ids:
            return
        self._seen_ids.add(rid)
        label = self.labels.get(rid)
        if label in self.index:
            self.seen[label] += 1
            self.first_ts.setdefault(label, ev.ts)

    def observe_alerts(self, alerts: Iterable[Alert], now: float) -> None:
        """Score alerts emitted at event time ``now`` (new or updated)."""
        for alert in alerts:
            self.final[alert.id] = alert
            rank = severity_rank(alert.severity)
            kinds = {self.labels.get(rid) for rid in alert.event_ids}
            for kind in kinds:
                if kind is None or kind not in self.eval.outcomes:
                    continue
                out = self.eval.outcomes[kind]
                out.caught_any = True
                out.detectors.add(alert.detector)
                if out.best_severity == "-" or rank > severity_rank(out.best_severity):
                    out.best_severity = alert.severity
                if rank >= MEDIUM and not out.caught:
                    out.caught = True
                    trigger = self.scenarios[kind].trigger
                    out.delay = max(self.seen[kind] - 1, 0) - trigger
                    out.delay_seconds = now - self.first_ts.get(kind, now)

    def finish(self) -> Evaluation:
        """Count the final alerts: total, false (benign only, medium+) and setup-only."""
        ev = self.eval
        ev.alerts = len(self.final)
        for alert in self.final.values():
            if severity_rank(alert.severity) < MEDIUM:
                continue
            kinds = {self.labels.get(rid, BENIGN) for rid in alert.event_ids}
            if not kinds and alert.last_seen < self.sim_start:
                kinds = {SETUP}  # the dev server's own bootstrap entries carry no request id
            if kinds and kinds <= {SETUP}:
                ev.setup_alerts += 1
            elif kinds <= {BENIGN, SETUP}:
                ev.false_alerts += 1
                ev.false_by_detector[alert.detector] = ev.false_by_detector.get(alert.detector, 0) + 1
                if len(ev.false_examples) < 12:
                    ev.false_examples.append(f"{alert.detector} [{alert.severity}] {alert.title}")
        return ev


def judge_alerts(generated: GeneratedLog, alerts: Iterable[Alert]) -> dict[str, ScenarioOutcome]:
    """Each scenario's outcome against a final set of alerts, by the attack's own evidence.

    An alert counts for a scenario only when its ``event_ids`` include one of the scenario's
    request ids (the definitions at the top of this module): a detector that fired on someone
    else's requests (the setup's own root-token use, say) does not. ``alert_ids`` is filled in;
    delays are not measured (the alerts come without the stream of events that raised them).
    """
    scorer = Scorer(generated, 0, "alerts")
    for alert in alerts:
        scorer.observe_alerts([alert], 0.0)
        for kind in {generated.labels.get(rid) for rid in alert.event_ids}:
            if kind in scorer.eval.outcomes:
                scorer.eval.outcomes[kind].alert_ids.append(alert.id)
    outcomes = scorer.eval.outcomes
    for out in outcomes.values():
        out.delay = out.delay_seconds = None
    return outcomes


# -- naive baselines --------------------------------------------------------------------------
_VARIABLE = re.compile(r"^(?:[0-9a-f-]{16,}|\d+)$")


def path_template(ev: AuditEvent) -> str:
    """``operation path`` with ids and numbers collapsed: what a first-seen rule keys on."""
    parts = [("*" if _VARIABLE.match(p) else p) for p in ev.path.split("/")]
    return f"{ev.operation} {'/'.join(parts)}"


def requests_of(events: Sequence[AuditEvent]) -> list[AuditEvent]:
    """One event per request: its response entry, or the request entry when no response exists."""
    last: dict[str, AuditEvent] = {}
    order: list[str] = []
    anonymous: list[AuditEvent] = []
    for ev in events:
        rid = ev.request_id
        if not rid:
            anonymous.append(ev)
            continue
        if rid not in last:
            order.append(rid)
        if rid not in last or ev.is_response:
            last[rid] = ev
    return [last[r] for r in order] + anonymous


@dataclass(frozen=True)
class NaiveAlert:
    """A baseline's alert: the request ids it covers (every baseline alert counts as medium)."""

    event_ids: tuple[str, ...]
    ts: float
    severity: str = "medium"


def first_seen_baseline(reqs: Sequence[AuditEvent], learn_until: float) -> list[NaiveAlert]:
    """Alert on every (identity, path template) pair first seen after the learning period."""
    seen: set[tuple[str, str]] = set()
    out = []
    for ev in reqs:
        key = (ev.identity.key, path_template(ev))
        if key in seen:
            continue
        seen.add(key)
        if ev.ts >= learn_until and ev.request_id:
            out.append(NaiveAlert((ev.request_id,), ev.ts))
    return out


def _hourly(reqs: Sequence[AuditEvent]) -> dict[tuple[str, int], list[AuditEvent]]:
    buckets: dict[tuple[str, int], list[AuditEvent]] = defaultdict(list)
    for ev in reqs:
        buckets[(ev.identity.key, int(ev.ts // HOUR))].append(ev)
    return buckets


def static_threshold_baseline(
    reqs: Sequence[AuditEvent], *, max_requests: int = 40, max_denied: int = 5, max_failed_logins: int = 5
) -> list[NaiveAlert]:
    """Fixed per-identity per-hour limits on requests, denials and failed logins."""
    out = []
    for (_, hour), evs in sorted(_hourly(reqs).items(), key=lambda kv: kv[0][1]):
        denied = sum(e.outcome == "denied" for e in evs)
        failed = sum(e.outcome == "login_failed" for e in evs)
        if len(evs) > max_requests or denied >= max_denied or failed >= max_failed_logins:
            out.append(NaiveAlert(tuple(e.request_id for e in evs if e.request_id), hour * HOUR + HOUR))
    return out


def _counts(evs: Sequence[AuditEvent]) -> list[float]:
    ops = [e.operation or "" for e in evs]
    return [
        float(len(evs)),
        float(sum(o == "read" for o in ops)),
        float(sum(o in ("create", "update", "delete") for o in ops)),
        float(sum(o == "list" for o in ops)),
        float(sum(e.outcome == "denied" for e in evs)),
        float(sum(e.outcome == "login_failed" for e in evs)),
        float(len({e.path for e in evs})),
        float(len({e.remote_ip for e in evs})),
    ]


def isolation_forest_baseline(
    reqs: Sequence[AuditEvent], learn_until: float, *, seed: int = 0, contamination: float = 0.01
) -> list[NaiveAlert]:
    """IsolationForest on raw per-identity hourly counts, fitted on the learning period."""
    from sklearn.ensemble import IsolationForest

    buckets = sorted(_hourly(reqs).items(), key=lambda kv: kv[0][1])
    train = [_counts(evs) for (_, hour), evs in buckets if hour * HOUR < learn_until]
    test = [(hour, evs) for (_, hour), evs in buckets if hour * HOUR >= learn_until]
    if not train or not test:
        return []
    model = IsolationForest(n_estimators=100, contamination=contamination, random_state=seed).fit(train)
    flags = model.predict([_counts(evs) for _, evs in test])
    return [
        NaiveAlert(tuple(e.request_id for e in evs if e.request_id), hour * HOUR + HOUR)
        for (hour, evs), flag in zip(test, flags, strict=True)
        if flag == -1
    ]


def score_naive(
    name: str, alerts: Sequence[NaiveAlert], generated: GeneratedLog, benign_events: int
) -> Evaluation:
    """Recall and false alerts of a baseline's alerts (all count as medium)."""
    ev = Evaluation(
        name,
        {
            k: ScenarioOutcome(k, len(sc.request_ids), sc.single_event)
            for k, sc in generated.scenarios.items()
        },
        benign_events,
        alerts=len(alerts),
    )
    for alert in alerts:
        kinds = {generated.labels.get(rid, BENIGN) for rid in alert.event_ids}
        attack = kinds - {BENIGN, SETUP}
        for kind in attack:
            if kind in ev.outcomes:
                ev.outcomes[kind].caught = ev.outcomes[kind].caught_any = True
                ev.outcomes[kind].best_severity = alert.severity
        if not attack:
            if kinds <= {SETUP}:
                ev.setup_alerts += 1
            else:
                ev.false_alerts += 1
    return ev


# -- the report -------------------------------------------------------------------------------
def _median(values: Sequence[int]) -> str:
    return f"{statistics.median(values):g}" if values else "-"


def render(
    generated: GeneratedLog,
    engine: Evaluation | None,
    baselines: Sequence[Evaluation],
    *,
    timings: dict[str, float],
    engine_note: str = "",
) -> str:
    """The Markdown report: scenario table for the engine, then the comparison with baselines."""
    lines = [
        "# Scenario report",
        "",
        f"Real OpenBao traffic: {generated.requests} requests, {generated.entries} audit entries over "
        f"{generated.days} simulated days from {generated.start:%Y-%m-%d} "
        f"(warm-up {generated.warmup_days} days), "
        f"{len(generated.scenarios)} attack scenarios.",
        "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        "",
    ]
    if engine is None:
        lines += [f"Engine not evaluated: {engine_note}", ""]
    else:
        lines += [
            "## Engine, per scenario",
            "",
            "| scenario | requests | caught (medium+) | best severity | delay (requests) | delay (s) "
            "| detectors |",
            "| --- | ---: | :---: | --- | ---: | ---: | --- |",
        ]
        for kind, o in engine.outcomes.items():
            caught = "yes" if o.caught else ("low only" if o.caught_any else "**MISSED**")
            delay = "-" if o.delay is None else str(o.delay)
            secs = "-" if o.delay_seconds is None else f"{o.delay_seconds:.0f}"
            single = " (single-event)" if o.single_event else ""
            dets = ", ".join(sorted(o.detectors)) or "-"
            lines.append(
                f"| {kind}{single} | {o.requests} | {caught} | {o.best_severity} | {delay} | {secs} "
                f"| {dets} |"
            )
        lines += [
            "",
            f"Recall {engine.recall:.0%}; false alerts (medium+, benign only) {engine.false_alerts} = "
            f"{engine.false_per_10k:.3f} per 10k benign entries ({engine.benign_events} benign entries); "
            f"alerts in all {engine.alerts}; setup-only alerts {engine.setup_alerts}; "
            f"median single-event delay {_median(engine.single_event_delays())}.",
            "",
        ]
        for kind, o in engine.outcomes.items():
            if not o.caught:
                seen = ", ".join(sorted(o.signals)) or "none"
                lines.append(f"Missed {kind}: findings on its events: {seen}.")
        if engine.missed:
            lines.append("")
        if engine.false_examples:
            by = ", ".join(
                f"{d} {n}" for d, n in sorted(engine.false_by_detector.items(), key=lambda kv: -kv[1])
            )
            lines += [f"False alerts by detector: {by}. First few:", ""]
            lines += [f"- {x}" for x in engine.false_examples] + [""]
    lines += [
        "## Engine against naive baselines (same data)",
        "",
        "| detector | recall | scenarios missed | alerts | false alerts | false per 10k benign |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for ev in ([engine] if engine else []) + list(baselines):
        missed = ", ".join(ev.missed) or "-"
        lines.append(
            f"| {ev.name} | {ev.recall:.0%} | {missed} | {ev.alerts} | {ev.false_alerts} "
            f"| {ev.false_per_10k:.2f} |"
        )
    lines.append("")
    return "\n".join(lines)


def replay(
    events: Sequence[AuditEvent],
    generated: GeneratedLog,
    benign_events: int,
    process: Callable[[AuditEvent], list[Alert]],
    flush: Callable[[float], list[Alert]],
    *,
    name: str = "engine",
    findings: Callable[[], Iterable[Any]] | None = None,
) -> tuple[Evaluation, list[Alert]]:
    """Feed ``events`` through the one replay loop (:func:`vaultwatch.service.replay.run_engine`,
    the production replay's flush semantics) and score every alert as it is emitted.

    ``findings``, when given, returns the findings of the last ``process`` call (the engine's
    ``last_findings``): they are kept per scenario to explain misses.
    """
    scorer = Scorer(generated, benign_events, name)

    def on_event(ev: AuditEvent, alerts: list[Alert]) -> None:
        scorer.observe_event(ev)
        scorer.observe_alerts(alerts, ev.ts)
        if findings is not None:
            scorer.observe_findings(ev, findings())

    run_engine(
        events,
        _Callables(process, flush),
        on_event=on_event,
        on_flush=lambda now, alerts: scorer.observe_alerts(alerts, now),
    )
    return scorer.finish(), list(scorer.final.values())


@dataclass(frozen=True)
class _Callables:
    """An engine made of its two methods, for :func:`run_engine`."""

    process: Callable[[AuditEvent], list[Alert]]
    flush: Callable[[float], list[Alert]]


@dataclass
class Report:
    """Everything :func:`evaluate` measured on one generated log."""

    generated: GeneratedLog
    engine: Evaluation | None
    baselines: dict[str, Evaluation]
    alerts: list[Alert]
    benign_events: int
    timings: dict[str, float] = field(default_factory=dict)
    engine_note: str = ""

    def markdown(self) -> str:
        """The report as Markdown (see :func:`render`)."""
        return render(
            self.generated,
            self.engine,
            list(self.baselines.values()),
            timings=self.timings,
            engine_note=self.engine_note,
        )


def evaluate(
    generated: GeneratedLog,
    events: Sequence[AuditEvent],
    *,
    engine: Any = None,
    seed: int = 0,
    learn_days: float = 7.0,
) -> Report:
    """Replay ``events`` (the parsed generated log) through ``engine`` and the three baselines.

    ``engine`` is anything with ``process(event) -> alerts`` and ``flush(now) -> alerts``
    (:class:`detect.engine.Engine`); None evaluates the baselines only. The baselines learn on
    the first ``learn_days`` of simulated time and alert after it.
    """
    benign = sum(label == BENIGN for label in generated.entry_labels)
    timings: dict[str, float] = {}
    engine_eval: Evaluation | None = None
    alerts: list[Alert] = []
    t0 = time.monotonic()
    if engine is not None:
        engine_eval, alerts = replay(
            events,
            generated,
            benign,
            engine.process,
            engine.flush,
            findings=(lambda: engine.last_findings) if hasattr(engine, "last_findings") else None,
        )
        timings["engine"] = time.monotonic() - t0
    t0 = time.monotonic()
    reqs = requests_of(events)
    learn_until = generated.start.timestamp() + learn_days * DAY
    baselines = {
        name: score_naive(name, made, generated, benign)
        for name, made in (
            ("first-seen template", first_seen_baseline(reqs, learn_until)),
            ("static thresholds", static_threshold_baseline(reqs)),
            ("IsolationForest hourly counts", isolation_forest_baseline(reqs, learn_until, seed=seed)),
        )
    }
    timings["baselines"] = time.monotonic() - t0
    note = "" if engine is not None else "no engine given"
    return Report(generated, engine_eval, baselines, alerts, benign, timings, note)
