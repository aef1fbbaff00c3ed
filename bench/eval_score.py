"""Scoring for the organisation scoreboard (``make eval``): pure functions, no I/O but :func:`load_labels`.

Inputs per organisation and detector:

* the alerts the detector raised (``vaultwatch.alert/v1`` dicts, or anything with ``event_ids``,
  ``severity`` and optionally ``detector``);
* the log's request ids in order, one per audit entry (a request and its response give two);
* the generator's labels: threat instances (kind, target, every request id it made, failed ones
  included) and benign hard cases (which count as benign).

Definitions:

* **detected**: an alert at ``medium`` or above whose ``event_ids`` intersect the instance's
  request ids. ``detected_any`` is the same at any severity (a secondary column).
* **delay** (events): the index, within the instance's labelled requests, of the first labelled
  request that appears in a detecting alert, counted from the instance's ``trigger`` (0 unless
  the generator names the request that *is* a single-event attack); 0 = the first/triggering
  event, negative = caught before the trigger (e.g. at the attacker's login).
* **absences**: an instance with a ``due_time`` (a secret not rotated on time: its evidence is a
  write that never came, so no request id can be in the alert) is detected by an alert at
  ``medium`` or above that names its ``target`` among its ``paths`` and was last seen at or after
  ``due_time``; its delay is 0. Such an alert is not a false one.
* **false alerts**: alerts at ``medium`` or above none of whose event ids belong to any threat
  instance (an alert with no event ids at all counts as false), per 10k **benign entries**
  (entries whose request id is in no threat). Benign hard cases count as benign. Alerts whose
  event ids all belong to the organisation's *setup* (the generator's bootstrap before the
  simulated clock starts, ``setup_ids``) are counted apart (``setup_alerts``), and setup entries
  are not benign entries: a real deployment is bootstrapped before it is monitored.
* **worst organisation**: lowest recall; ties broken by most false alerts per 10k benign entries.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "SEVERITIES",
    "DetectorSummary",
    "InstanceOutcome",
    "KindSummary",
    "Labels",
    "OrgScore",
    "Threat",
    "load_labels",
    "parse_labels",
    "score_org",
    "severity_rank",
    "summarize",
    "worst_and_median",
]

SEVERITIES = ("info", "low", "medium", "high", "critical")
MEDIUM = 2


def severity_rank(severity: str) -> int:
    """0 for ``info`` up to 4 for ``critical``; anything else ranks below ``info``."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return -1


@dataclass(frozen=True)
class Threat:
    """One injected threat instance and every request id it made, in order."""

    instance: str
    kind: str
    target: str
    request_ids: tuple[str, ...]
    first_time: Any = None
    #: Index in ``request_ids`` of the request that *is* the attack (single-event kinds); delays
    #: are counted from it, so a detection on an earlier request (the login) is negative.
    trigger: int = 0
    #: For an absence (a rotation that never came): when it became due, RFC 3339.
    due_time: str | None = None


@dataclass(frozen=True)
class Labels:
    """The generator's ground truth for one organisation."""

    threats: tuple[Threat, ...]
    benign_hard_cases: tuple[Any, ...] = ()
    #: Planned threats that made no request and are no absence (the simulation ended, or the
    #: server refused before anything was logged): no detector can see them, so they are not scored.
    not_executed: tuple[str, ...] = ()


def parse_labels(data: Mapping[str, Any]) -> Labels:
    """Labels from the generator's JSON object (``{"threats": [...], "benign_hard_cases": [...]}``)."""
    threats = []
    not_executed: list[str] = []
    seen: set[str] = set()
    for i, t in enumerate(data.get("threats") or ()):
        instance = str(t.get("instance") or f"{t.get('kind', 'threat')}#{i}")
        if instance in seen:
            raise ValueError(f"duplicate threat instance {instance!r}")
        seen.add(instance)
        threat = Threat(
            instance=instance,
            kind=str(t["kind"]),
            target=str(t.get("target") or ""),
            request_ids=tuple(str(r) for r in t.get("request_ids") or ()),
            first_time=t.get("first_time"),
            trigger=int(t.get("trigger") or 0),
            due_time=str(t["due_time"]) if t.get("due_time") else None,
        )
        if threat.request_ids or threat.due_time:
            threats.append(threat)
        else:
            not_executed.append(instance)
    return Labels(tuple(threats), tuple(data.get("benign_hard_cases") or ()), tuple(not_executed))


def load_labels(path: str | Path) -> Labels:
    """Read a labels JSON file (see :func:`parse_labels`)."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: labels must be a JSON object")
    return parse_labels(data)


@dataclass
class InstanceOutcome:
    """How one threat instance fared against one detector."""

    instance: str
    kind: str
    target: str
    requests: int
    detected: bool = False
    detected_any: bool = False
    delay: int | None = None
    best_severity: str = "-"
    detectors: list[str] = field(default_factory=list)


@dataclass
class OrgScore:
    """One detector on one organisation."""

    org: str
    detector: str
    outcomes: list[InstanceOutcome]
    entries: int
    benign_entries: int
    alerts: int = 0
    alerts_medium: int = 0
    false_alerts: int = 0
    #: False alerts that touch a benign hard case (onboarding, scale-out, a planned change...).
    false_on_hard_cases: int = 0
    setup_alerts: int = 0
    false_by_rule: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def recall(self) -> float:
        """Share of threat instances detected at medium or above (1.0 when there are none)."""
        if not self.outcomes:
            return 1.0
        return sum(o.detected for o in self.outcomes) / len(self.outcomes)

    @property
    def recall_any(self) -> float:
        """Share of threat instances with an alert of any severity."""
        if not self.outcomes:
            return 1.0
        return sum(o.detected_any for o in self.outcomes) / len(self.outcomes)

    @property
    def false_per_10k(self) -> float:
        """False alerts (medium+) per 10k benign entries."""
        return 10_000 * self.false_alerts / max(self.benign_entries, 1)

    def delays(self) -> list[int]:
        """Detection delays (events) of the detected instances."""
        return [o.delay for o in self.outcomes if o.delay is not None]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, derived figures included."""
        out = asdict(self)
        out["recall"] = self.recall
        out["recall_any"] = self.recall_any
        out["false_per_10k"] = self.false_per_10k
        return out


def score_org(
    alerts: Iterable[Mapping[str, Any]],
    request_ids: Sequence[str | None],
    labels: Labels,
    *,
    org: str = "",
    detector: str = "",
    setup_ids: Collection[str] = frozenset(),
) -> OrgScore:
    """Score one detector's ``alerts`` on one organisation's log (see the module docstring).

    ``request_ids`` holds one entry per audit log line, in order (``None`` for an entry without
    a request id, which counts as benign).
    """
    owner: dict[str, int] = {}
    for n, threat in enumerate(labels.threats):
        for rid in threat.request_ids:
            owner.setdefault(rid, n)
    index = [{rid: i for i, rid in reversed(list(enumerate(t.request_ids)))} for t in labels.threats]
    setup = {rid for rid in setup_ids if rid not in owner}
    hard = {
        str(r)
        for case in labels.benign_hard_cases
        if isinstance(case, Mapping)
        for r in case.get("request_ids") or ()
    }
    benign = sum(1 for rid in request_ids if rid is None or (rid not in owner and rid not in setup))
    outcomes = [InstanceOutcome(t.instance, t.kind, t.target, len(t.request_ids)) for t in labels.threats]
    score = OrgScore(org, detector, outcomes, len(request_ids), benign)
    detectors: list[set[str]] = [set() for _ in outcomes]
    false_by: dict[str, int] = defaultdict(int)
    for alert in alerts:
        score.alerts += 1
        severity = str(alert.get("severity", ""))
        rank = severity_rank(severity)
        if rank >= MEDIUM:
            score.alerts_medium += 1
        ids = [str(e) for e in alert.get("event_ids") or ()]
        hit: set[int] = {owner[e] for e in ids if e in owner}
        absent = _absences_named(alert, labels.threats) if rank >= MEDIUM else set()
        for n in absent - hit:
            out = outcomes[n]
            out.detected = out.detected_any = True
            if out.best_severity == "-" or rank > severity_rank(out.best_severity):
                out.best_severity = severity
            detectors[n].add(str(alert.get("detector") or detector))
            out.delay = 0
        name = str(alert.get("detector") or detector)
        for n in hit:
            out = outcomes[n]
            out.detected_any = True
            if out.best_severity == "-" or rank > severity_rank(out.best_severity):
                out.best_severity = severity
            if rank < MEDIUM:
                continue
            out.detected = True
            detectors[n].add(name)
            first = min(index[n][e] for e in ids if e in index[n]) - labels.threats[n].trigger
            out.delay = first if out.delay is None else min(out.delay, first)
        if rank >= MEDIUM and not hit and not absent:
            if ids and all(e in setup for e in ids):
                score.setup_alerts += 1
            else:
                score.false_alerts += 1
                false_by[name] += 1
                if any(e in hard for e in ids):
                    score.false_on_hard_cases += 1
    for out, names in zip(outcomes, detectors, strict=True):
        out.detectors = sorted(names)
    score.false_by_rule = dict(sorted(false_by.items(), key=lambda kv: (-kv[1], kv[0])))
    return score


def _instant(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _absences_named(alert: Mapping[str, Any], threats: Sequence[Threat]) -> set[int]:
    """Indexes of absence instances (``due_time`` set) that ``alert`` names, on or after their due time."""
    paths = {str(p) for p in alert.get("paths") or ()}
    last = _instant(alert.get("last_seen"))
    found = set()
    for n, t in enumerate(threats):
        if t.due_time is None or t.target not in paths:
            continue
        due = _instant(t.due_time)
        if last is not None and due is not None and last >= due:
            found.add(n)
    return found


# -- across organisations ---------------------------------------------------------------------
@dataclass
class KindSummary:
    """One threat kind over every organisation, for one detector."""

    kind: str
    instances: int = 0
    detected: int = 0
    detected_any: int = 0
    delays: list[int] = field(default_factory=list)

    @property
    def median_delay(self) -> float | None:
        return statistics.median(self.delays) if self.delays else None


@dataclass
class DetectorSummary:
    """One detector over every organisation: the worst and median organisation, per kind."""

    detector: str
    orgs: int
    worst_org: str
    worst_recall: float
    worst_false_per_10k: float
    worst_missed: list[str]
    median_recall: float
    median_false_per_10k: float
    median_delay: float | None
    kinds: dict[str, KindSummary]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, ks in self.kinds.items():
            out["kinds"][k]["median_delay"] = ks.median_delay
        return out


def worst_and_median(scores: Sequence[OrgScore]) -> tuple[OrgScore, float, float]:
    """The worst organisation (lowest recall, then most false alerts) and the median recall and
    false-alert rate."""
    if not scores:
        raise ValueError("no organisations scored")
    worst = min(scores, key=lambda s: (s.recall, -s.false_per_10k, s.org))
    return (
        worst,
        statistics.median(s.recall for s in scores),
        statistics.median(s.false_per_10k for s in scores),
    )


def summarize(scores: Sequence[OrgScore]) -> DetectorSummary:
    """Summarise one detector's scores over several organisations."""
    worst, med_recall, med_false = worst_and_median(scores)
    kinds: dict[str, KindSummary] = {}
    delays: list[int] = []
    for s in scores:
        for o in s.outcomes:
            ks = kinds.setdefault(o.kind, KindSummary(o.kind))
            ks.instances += 1
            ks.detected += o.detected
            ks.detected_any += o.detected_any
            if o.delay is not None:
                ks.delays.append(o.delay)
                delays.append(o.delay)
    return DetectorSummary(
        detector=scores[0].detector,
        orgs=len(scores),
        worst_org=worst.org,
        worst_recall=worst.recall,
        worst_false_per_10k=worst.false_per_10k,
        worst_missed=sorted({o.kind for o in worst.outcomes if not o.detected}),
        median_recall=med_recall,
        median_false_per_10k=med_false,
        median_delay=statistics.median(delays) if delays else None,
        kinds=dict(sorted(kinds.items())),
    )
