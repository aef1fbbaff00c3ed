"""The hot-path shortcuts of issue 17 answer exactly what the work they skip would have answered.

* the engine's routes are rebuilt whenever its detector list changes (replaced, appended to, an
  element swapped in place, also for a detector that compares by value);
* ``audit-device-gap`` skips judging when nothing is due: against a copy that judges in full
  on every event, the same findings on the same events and the same state, across drops,
  quiet spells that close episodes, and a restore midway;
* :func:`detect.engine.rfc3339` is memoised: the same text as the plain conversion, before and
  after the memo fills up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import msgspec

from detect.completeness import AuditDeviceGap, CompletenessConfig
from detect.engine import Engine, rfc3339
from detect.types import DetectContext, Finding
from ingest.event import AuditEvent, Auth, Identity, Request

T0 = 1772409600.0  # Monday 2026-03-02 00:00 UTC


def _event(ts: float, rid: str, *, kind: str = "response", source: str | None = None) -> AuditEvent:
    return AuditEvent(
        time=datetime.fromtimestamp(ts, UTC),
        ts=ts,
        type=kind,
        identity=Identity(key="entity:e1", kind="entity", entity_id="e1"),
        outcome="ok",
        auth=Auth(client_token="hmac-sha256:t", accessor="hmac-sha256:a"),
        request=Request(id=rid, operation="read", path=f"kv/data/app/{rid}", remote_address="10.1.2.3"),
        path=f"kv/data/app/{rid}",
        remote_ip="10.1.2.3",
        source=source,
    )


class _Seen:
    """Records the request ids it was shown; holds no state."""

    seen: list[str]

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        self.seen.append(event.request_id or "")
        return []

    def state(self) -> dict[str, Any]:
        return {}

    def load(self, state: dict[str, Any]) -> None:
        return None


class _Counting(_Seen):
    """A detector that records the request ids it was shown."""

    only_responses: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen = []


@dataclass
class _ByValue(_Seen):
    """A detector that compares by value (a dataclass): a replacement can equal the original."""

    name: str
    only_responses: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.seen = []


def _engine(dets: list[Any]) -> Engine:
    return Engine({"model_enabled": False, "behaviour_enabled": False}, detectors=dets)


def test_routes_follow_every_change_of_the_detector_list() -> None:
    a, b, c = _Counting("a"), _Counting("b"), _Counting("c")
    eng = _engine([a])
    eng.process(_event(T0, "r1"))
    eng.detectors.append(b)  # changed in place: longer
    eng.process(_event(T0 + 1, "r2"))
    eng.detectors[0] = c  # changed in place: same length, another object
    eng.process(_event(T0 + 2, "r3"))
    eng.detectors = [a]  # replaced
    eng.process(_event(T0 + 3, "r4"))
    assert a.seen == ["r1", "r2", "r4"]
    assert b.seen == ["r2", "r3"]
    assert c.seen == ["r3"]


def test_routes_follow_a_swap_between_detectors_equal_by_value() -> None:
    first, twin = _ByValue("x"), _ByValue("x")
    assert first == twin and first is not twin
    eng = _engine([first])
    eng.process(_event(T0, "r1"))
    eng.detectors[0] = twin  # equal to the one it replaces, but another detector
    eng.process(_event(T0 + 1, "r2"))
    assert first.seen == ["r1"]
    assert twin.seen == ["r2"]


class _JudgesAlways(AuditDeviceGap):
    """The reference: judges in full on every event, as before the shortcut."""

    def observe(self, event: AuditEvent, ctx: DetectContext) -> list[Finding]:
        self._record(event)
        self._quiet_at = -math.inf
        if not self._pending and not self._gaps:
            return []
        out: list[Finding] = []
        limit = self._clock - self.cfg.gap_wait_seconds
        while self._pending:
            key, entry = next(iter(self._pending.items()))
            if entry[0] > limit:
                break
            del self._pending[key]
            if entry[0] >= self._since:
                out.extend(self._settle(key.split("\x1f", 1)[0], entry))
        self._close_episodes()
        return out


def _mirrored_stream() -> list[AuditEvent]:
    """Two devices mirroring each other; ``b`` drops a few entries in bursts. Now and then only
    entries without a request id come for a while (they move the clock and await no copy): an
    open episode goes quiet then with nothing to settle, which only the shortcut's own
    bookkeeping notices; elsewhere the clock moves in small steps."""
    out: list[AuditEvent] = []
    ts = T0
    dropped = set(range(300, 305)) | set(range(900, 902)) | {1500} | set(range(2100, 2104))
    for i in range(2600):
        ts += 0.7
        if i % 50 == 10:
            for _ in range(80):  # 240 s of id-less entries: longer than window + wait
                ts += 3.0
                out.append(_event(ts, "", source="a"))
        rid = f"req-{i}"
        out.append(_event(ts, rid, source="a"))
        if i not in dropped:
            out.append(_event(ts + 0.01, rid, source="b"))
    return out


def _run(
    det: AuditDeviceGap, ref: AuditDeviceGap, events: list[AuditEvent]
) -> list[tuple[int, str, tuple[str, ...]]]:
    """Both detectors over ``events``; their findings (which event, which alert, which ids)
    must be equal after every event, and so must their states (a snapshot can come anywhere)."""
    ctx: Any = None
    found = []
    for n, ev in enumerate(events):
        got = [(n, f.dedup_key, f.event_ids) for f in det.observe(ev, ctx)]
        want = [(n, f.dedup_key, f.event_ids) for f in ref.observe(ev, ctx)]
        assert got == want
        assert det.state() == ref.state(), f"state differs after event {n}"
        found += got
    return found


def test_device_gap_shortcut_judges_exactly_as_judging_every_event() -> None:
    cfg = CompletenessConfig(gap_wait_seconds=5.0, gap_window_seconds=120.0)
    events = _mirrored_stream()
    fast, ref = AuditDeviceGap(cfg), _JudgesAlways(cfg)
    half = len(events) // 2
    found = _run(fast, ref, events[:half])
    # A restore midway (the shortcut's own bookkeeping is not state): both continue alike.
    blob = msgspec.json.encode(fast.state())
    fast = AuditDeviceGap(cfg)
    fast.load(msgspec.json.decode(blob))
    found += _run(fast, ref, events[half:])
    assert len({ids for _, _, ids in found}) >= 3, "the scenario must raise several gap findings"
    assert {k for _, k, _ in found} == {"audit-device-gap:a\x1fb"}
    # The quiet spells closed the episodes: the misses were folded into the pair's counts.
    assert fast.state()["pairs"]["a\x1fb"][1] > 0


def test_rfc3339_memo_gives_the_plain_conversion() -> None:
    def plain(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")

    stamps = [T0 + i * 0.123457 for i in range(10_000)]  # more than the memo holds
    for ts in stamps + stamps[:100] + [0.0, -0.0, 1.5]:
        assert rfc3339(ts) == plain(ts)
