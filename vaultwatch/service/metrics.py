"""Prometheus metrics of the streaming service, on a registry of its own (no global state)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["Metrics"]


class Metrics:
    """Counters and gauges named ``vaultwatch_*``; :meth:`render` gives the exposition text."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("vaultwatch_events", "audit events processed", registry=r)
        self.records = Counter("vaultwatch_records", "Kafka records consumed", registry=r)
        self.quarantined = Counter("vaultwatch_quarantined", "records sent to the DLQ/quarantine", registry=r)
        self.alerts = Counter(
            "vaultwatch_alerts", "alerts raised or updated", ["detector", "severity"], registry=r
        )
        self.deliveries = Counter(
            "vaultwatch_deliveries", "delivery attempts by outcome", ["channel", "reason"], registry=r
        )
        self.lag = Gauge(
            "vaultwatch_consumer_lag", "messages behind per partition", ["topic", "partition"], registry=r
        )
        self.since_commit = Gauge(
            "vaultwatch_seconds_since_last_commit", "seconds since the last checkpoint", registry=r
        )
        self.outbox_depth = Gauge("vaultwatch_outbox_depth", "pending deliveries", registry=r)
        self.outbox_oldest = Gauge(
            "vaultwatch_outbox_oldest_pending_seconds", "age of the oldest pending delivery", registry=r
        )
        self.cross_records = Counter(
            "vaultwatch_cross_records",
            "cross records and marks taken by the cross stage (several travel in one message)",
            registry=r,
        )
        self.cross_late = Counter(
            "vaultwatch_cross_late",
            "records the cross stage judged after it had passed their event time (out of order: "
            "a source slower than --cross-lateness)",
            registry=r,
        )
        self.cross_pending = Gauge(
            "vaultwatch_cross_pending",
            "records the cross stage holds until every source passes them",
            registry=r,
        )
        self.cross_lag = Gauge(
            "vaultwatch_cross_lag",
            "repartition-topic records not yet consumed",
            ["topic", "partition"],
            registry=r,
        )
        self.events_per_second = Gauge(
            "vaultwatch_events_per_second", "events/s over the last batches", registry=r
        )
        self.secret_age = Gauge(
            "vaultwatch_secret_age_seconds",
            "age of a secret's current version",
            ["path", "rotation_class"],
            registry=r,
        )
        self.access_model_drift = Gauge(
            "vaultwatch_access_model_drift_globs",
            "access-model globs (protected, rotation, deploy) matching nothing in a busy stream's last day",
            registry=r,
        )
        self.access_model_drift_glob = Gauge(
            "vaultwatch_access_model_drift",
            "1 for each access-model glob matching nothing in the last day of a busy stream",
            ["kind", "glob"],
            registry=r,
        )
        self.consumers_replaced = Counter(
            "vaultwatch_consumers_replaced",
            "Kafka consumers replaced because their group join did not complete in time",
            ["group"],
            registry=r,
        )
        self._replaced: dict[str, int] = {}
        self._window: list[tuple[float, int]] = []
        self._last_events = 0
        self._last_quarantined = 0
        self._last_cross_late = 0
        self._last_cross_taken = 0

    def _observe_replaced(self, worker: Any) -> None:
        group, n = worker.cfg.group_id, worker.stats["consumers_replaced"]
        if n > self._replaced.get(group, 0):
            self.consumers_replaced.labels(group).inc(n - self._replaced.get(group, 0))
            self._replaced[group] = n

    def observe_batch(self, worker: Any, batch: list[Any], alerts: list[Any]) -> None:
        self._observe_replaced(worker)
        now = time.monotonic()
        ev = worker.stats["events"]
        self.events.inc(ev - self._last_events)
        self._window.append((now, ev - self._last_events))
        self._last_events = ev
        q = worker.stats["quarantined"]
        self.quarantined.inc(q - self._last_quarantined)
        self._last_quarantined = q
        self.records.inc(len(batch))
        for a in alerts:
            self.alerts.labels(a.detector, a.severity).inc()
        self._window = [(t, n) for t, n in self._window if now - t <= 10.0]
        span = max(1.0, now - self._window[0][0]) if self._window else 1.0
        self.events_per_second.set(sum(n for _, n in self._window) / span)
        for (topic, partition), lag in worker.lag().items():
            self.lag.labels(topic, str(partition)).set(lag)
        if worker.last_commit_at is not None:
            self.since_commit.set(max(0.0, time.time() - worker.last_commit_at))

    def observe_cross(self, worker: Any, batch: list[Any], alerts: list[Any]) -> None:
        """After a batch of the cross stage (stage 2, :class:`~.stage2.CrossWorker`)."""
        self._observe_replaced(worker)
        taken = worker.stats["events"] + worker.stats["cross_marks"] + worker.stats["cross_refused"]
        self.cross_records.inc(taken - self._last_cross_taken)
        self._last_cross_taken = taken
        late = worker.stats["cross_late"]
        self.cross_late.inc(late - self._last_cross_late)
        self._last_cross_late = late
        for a in alerts:
            self.alerts.labels(a.detector, a.severity).inc()
        self.cross_pending.set(worker.pending())
        for (topic, partition), lag in worker.lag().items():
            self.cross_lag.labels(topic, str(partition)).set(lag)

    def observe_drift(self, report: Any) -> None:
        """Set the drift gauges from a :class:`detect.drift.DriftReport`."""
        self.access_model_drift.set(len(report.drifting))
        self.access_model_drift_glob.clear()
        for d in report.drifting:
            self.access_model_drift_glob.labels(d.kind, d.glob).set(1)

    def render(self) -> bytes:
        out: bytes = generate_latest(self.registry)
        return out
