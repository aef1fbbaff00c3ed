"""The one replay loop (:func:`vaultwatch.service.replay.run_engine`): its flush semantics and hooks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from detect.alert import Alert
from detect.engine import Engine
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.service.replay import FINAL_FLUSH, run_engine

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _event(rid: str, ts: float, *, root: bool = False, path: str = "secret/data/app") -> AuditEvent:
    entry = {
        "type": "request",
        "time": datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z"),
        "request": {"id": rid, "operation": "read", "path": path},
        "auth": {"display_name": "root" if root else "svc", "policies": ["root" if root else "default"]},
    }
    return Parser().parse(json.dumps(entry).encode())


class _Recorder:
    """An engine that records what the loop asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def process(self, event: AuditEvent) -> list[Alert]:
        self.calls.append(("process", event.request_id))
        return []

    def flush(self, now: float) -> list[Alert]:
        self.calls.append(("flush", now))
        return []


def test_processes_each_event_once_and_flushes_once_a_day_past_the_last() -> None:
    # Events hours apart: the loop never flushes between them (the engine keeps its own clock).
    events = [
        _event("a", T0),
        _event("b", T0 + 3 * 3600),
        _event("b", T0 + 3 * 3600),
        _event("c", T0 + 50 * 3600),
    ]
    engine = _Recorder()
    seen: list[str | None] = []
    flushed: list[float] = []
    run = run_engine(
        events,
        engine,
        on_event=lambda ev, _: seen.append(ev.request_id),
        on_flush=lambda now, _: flushed.append(now),
    )
    end = T0 + 50 * 3600 + FINAL_FLUSH
    assert engine.calls == [("process", "a"), ("process", "b"), ("process", "c"), ("flush", end)]
    assert seen == ["a", "b", "c"]  # the copy from a second audit device is dropped before the hooks
    assert flushed == [end]
    assert (run.events, run.duplicates, run.last_ts) == (3, 1, T0 + 50 * 3600)


def test_no_events_no_flush() -> None:
    engine = _Recorder()
    run = run_engine([], engine)
    assert engine.calls == [] and run.alerts == {} and run.last_ts is None


def test_alerts_are_kept_once_in_their_final_state_and_runs_are_deterministic() -> None:
    # A service reading its secret every minute, then a root token reading five paths: one alert,
    # raised and then updated, kept once in its final state.
    events = [_event(f"r{i}", T0 + i * 60.0) for i in range(50)]
    events += [_event(f"x{i}", T0 + 4000.0 + i, root=True, path=f"secret/data/p{i}") for i in range(5)]
    first = run_engine(events, Engine({"model_enabled": False}, seed=3))
    second = run_engine(events, Engine({"model_enabled": False}, seed=3))
    assert [a.detector for a in first.alerts.values()] == ["root-token-use"]
    alert = next(iter(first.alerts.values()))
    assert {f"x{i}" for i in range(5)} <= set(alert.event_ids)
    assert [a.to_dict() for a in first.alerts.values()] == [a.to_dict() for a in second.alerts.values()]
