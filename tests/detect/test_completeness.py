"""Audit completeness (``audit-device-gap``, ``audit-stream-silence``) on a real OpenBao.

One OpenBao dev server writes every entry to two file audit devices (OpenBao 2.x enables them
only from its config file). Traffic runs in three phases; the entries device ``b`` wrote during
the middle phase are then cut from its file (the entries themselves stay real: that is what a
dropped write or an edited log leaves behind). Replaying both files raises the gap alert with
exactly the cut request ids; replaying them intact raises nothing.

For silence, the real entries of both devices are moved in time into a week and a half of an
organisation's working-hours pattern, with a gap in one stream.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from detect.alert import Alert
from detect.completeness import AuditDeviceGap, AuditStreamSilence, CompletenessConfig, completeness_rules
from detect.engine import Engine
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer
from vaultwatch.service.replay import read_events, replay, run_engine

from .conftest import retime

#: A copy may lag its twin this long: small, so the test's seconds of traffic cover it.
CONFIG: dict[str, Any] = {"gap_wait_seconds": 1.0, "behaviour_enabled": False, "model_enabled": False}
#: Monday 2026-03-02 00:00 UTC.
MONDAY = 1772409600.0
HOUR, DAY = 3600.0, 86400.0


@dataclass
class Capture:
    a: Path
    b: Path
    cut_from: int  # byte offsets in b of the slice a "cut" device loses
    cut_to: int


def _traffic(client: Any, tag: str, n: int) -> None:
    kv = client.secrets.kv.v2
    for i in range(n):
        kv.create_or_update_secret(f"app/{tag}/s{i % 7}", secret={"v": f"{tag}-{i}"}, mount_point="kv")
        kv.read_secret_version(f"app/{tag}/s{i % 7}", mount_point="kv", raise_on_deleted_version=False)


def _end_of(path: Path) -> int:
    """The end of ``path`` once the device has written everything it was sent (whole lines)."""
    size = -1
    for _ in range(50):
        now = path.stat().st_size
        if now == size:
            break
        size = now
        time.sleep(0.05)
    return path.stat().st_size


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    work = tmp_path_factory.mktemp("bao-two-devices")
    a, b = work / "a.log", work / "b.log"
    devices = [
        AuditDevice("file", "a", {"file_path": str(a)}),
        AuditDevice("file", "b", {"file_path": str(b)}),
    ]
    srv = OpenBaoServer(work, devices=devices)
    try:
        srv.start()
        c = srv.client()
        c.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
        _traffic(c, "before", 40)
        cut_from = _end_of(b)
        _traffic(c, "during", 4)
        cut_to = _end_of(b)
        time.sleep(1.5)  # past the copy wait: the entries after the cut are judged
        _traffic(c, "after", 20)
    finally:
        srv.cleanup()
    yield Capture(a, b, cut_from, cut_to)


def _cut(cap: Capture, dest: Path) -> tuple[Path, list[str]]:
    """A copy of ``b`` without the middle slice, and the request ids the slice held."""
    data = cap.b.read_bytes()
    gone = data[cap.cut_from : cap.cut_to]
    dest.write_bytes(data[: cap.cut_from] + data[cap.cut_to :])
    ids: list[str] = []
    for line in gone.splitlines():
        rid = json.loads(line)["request"]["id"]
        if rid not in ids:
            ids.append(rid)
    return dest, ids


def _replay(files: list[Path], config: dict[str, Any] | None = None) -> list[Alert]:
    cfg = {**CONFIG, **(config or {})}
    return replay(files, engine=Engine(cfg, detectors=completeness_rules(cfg))).alerts


def _mine(alerts: list[Alert]) -> list[Alert]:
    return [a for a in alerts if a.detector in ("audit-device-gap", "audit-stream-silence")]


# -- audit-device-gap -----------------------------------------------------------------------------------
def test_both_devices_intact_raise_nothing(capture: Capture) -> None:
    assert capture.a.read_bytes() != capture.b.read_bytes()  # each device has its own HMAC salt
    assert _mine(_replay([capture.a, capture.b])) == []
    # Nor through the default rule set (the registration in default_rules).
    engine = Engine(CONFIG)
    assert {"audit-device-gap", "audit-stream-silence"} <= {d.name for d in engine.detectors}
    assert _mine(replay([capture.a, capture.b], engine=engine).alerts) == []


def test_a_cut_device_raises_one_gap_alert_with_the_cut_ids(capture: Capture, tmp_path: Path) -> None:
    cut, ids = _cut(capture, tmp_path / "b-cut.log")
    assert 4 <= len(ids) <= 12  # four writes and four reads (and nothing else) were cut
    alerts = _mine(_replay([capture.a, cut]))
    assert [a.detector for a in alerts] == ["audit-device-gap"]
    (alert,) = alerts
    assert alert.severity == "high"
    assert alert.labels == {"present_on": str(capture.a), "missing_from": str(cut)}
    assert str(cut) in alert.title and str(capture.a) in alert.title
    assert alert.identity.key == f"audit-device:{cut}"
    assert list(alert.event_ids) == ids
    assert all("app/during/" in p for p in alert.paths)
    # Whichever order the files are given in, the same device is named.
    again = _mine(_replay([cut, capture.a]))
    assert [a.labels for a in again] == [alert.labels] and again[0].event_ids == alert.event_ids


def test_default_wait_judges_nothing_within_a_minute(capture: Capture, tmp_path: Path) -> None:
    """With the default 60 s wait, a cut a few seconds before the log ends is not yet a gap."""
    cut, _ = _cut(capture, tmp_path / "b-cut.log")
    assert _mine(_replay([capture.a, cut], {"gap_wait_seconds": 60.0})) == []


def test_one_device_or_a_new_device_stays_quiet(capture: Capture, tmp_path: Path) -> None:
    assert _mine(_replay([capture.a])) == []
    # A device added late (its file starts at the third phase) has not mirrored yet.
    late = tmp_path / "c.log"
    late.write_bytes(capture.a.read_bytes()[capture.cut_to :])
    assert _mine(_replay([capture.a, capture.b, late])) == []


def test_device_test_entries_are_not_gaps(capture: Capture) -> None:
    parser = Parser()
    tests = [
        parser.parse(line)
        for p in (capture.a, capture.b)
        for line in p.read_bytes().splitlines()
        if b'"sys/audit/test"' in line
    ]
    # Each device wrote its own probe, under its own request id: present in one stream only.
    assert len(tests) == 2 and tests[0].request_id != tests[1].request_id
    assert _mine(_replay([capture.a, capture.b], {"gap_min_missing": 1})) == []


def test_the_dropped_copies_reach_the_detector(capture: Capture) -> None:
    """The replay loop drops the second device's copies; the gap detector still sees them."""
    det = AuditDeviceGap(CompletenessConfig(gap_wait_seconds=1.0))
    eng = Engine(CONFIG, detectors=[det])
    run = run_engine(read_events([capture.a, capture.b]), eng)
    assert run.duplicates > 100
    pairs = det.state()["pairs"]
    hits = pairs[f"{capture.a}\x1f{capture.b}"][0] + pairs[f"{capture.b}\x1f{capture.a}"][0]
    assert hits >= run.duplicates
    assert all(e[1] == 0 for e in pairs.values())  # no entry missing from either


# -- audit-stream-silence --------------------------------------------------------------------------------
def _pattern(
    real: dict[str, list[AuditEvent]], *, gap: tuple[float, float] | None, night: int = 0
) -> list[AuditEvent]:
    """Ten days from a Monday: 80 entries an hour per stream on weekdays 9:00-17:00, 3 an hour at
    weekends, ``night`` an hour every night 20:00-06:00 (an agent polling); on the second Monday
    stream ``b`` delivers nothing within ``gap``."""
    out: list[AuditEvent] = []
    for name, evs in real.items():
        k = 0
        for day in range(8):
            weekend = day in (5, 6)
            hours = list(range(9, 17) if not weekend else range(10, 14))
            for hour in [*hours, *(range(20, 30) if night else ())]:
                per = night if hour >= 20 else 3 if weekend else 80
                for j in range(per):
                    ts = MONDAY + day * DAY + hour * HOUR + j * HOUR / per + (0.3 if name == "b" else 0.0)
                    if gap and name == "b" and gap[0] <= ts < gap[1]:
                        continue
                    out.append(retime(evs[k % len(evs)], ts))
                    k += 1
    return sorted(out, key=lambda e: e.ts)


@pytest.fixture(scope="module")
def real(capture: Capture) -> dict[str, list[AuditEvent]]:
    parser = Parser()
    return {
        name: [parser.parse(line, source=name) for line in path.read_bytes().splitlines() if line.strip()]
        for name, path in (("a", capture.a), ("b", capture.b))
    }


def _silence(events: list[AuditEvent]) -> list[Alert]:
    eng = Engine(CONFIG, detectors=[AuditStreamSilence()])
    out: dict[str, Alert] = {}
    for ev in events:
        for a in eng.process(ev):
            out[a.id] = a
    for a in eng.flush(events[-1].ts + HOUR):
        out[a.id] = a
    return list(out.values())


def test_steady_pattern_with_nights_and_a_weekend_is_quiet(real: dict[str, list[AuditEvent]]) -> None:
    assert _silence(_pattern(real, gap=None)) == []


def test_a_stream_silent_in_working_hours_alerts_and_resumes(real: dict[str, list[AuditEvent]]) -> None:
    start, end = MONDAY + 7 * DAY + 11 * HOUR, MONDAY + 7 * DAY + 12 * HOUR
    (alert,) = _silence(_pattern(real, gap=(start, end)))
    assert alert.detector == "audit-stream-silence" and alert.severity == "high"
    assert alert.identity.key == "audit-device:b" and alert.labels["stream"] == "b"
    # Raised while b was silent (a's entries move the clock), then updated when b resumed.
    assert alert.count == 2 and "resumed" in alert.title
    assert start - 60 <= _ts(alert.first_seen) < start and end <= _ts(alert.last_seen) < end + 60
    assert float(alert.labels["expected_events"]) >= 50


def test_a_stream_that_stops_for_good_alerts_without_its_own_events(
    real: dict[str, list[AuditEvent]],
) -> None:
    start = MONDAY + 7 * DAY + 15 * HOUR
    alerts = _silence(_pattern(real, gap=(start, MONDAY + 9 * DAY)))
    assert [(a.identity.key, a.count) for a in alerts] == [("audit-device:b", 1)]
    assert "since" in alerts[0].title


def test_short_or_off_hours_silence_is_quiet(real: dict[str, list[AuditEvent]]) -> None:
    day7 = MONDAY + 7 * DAY
    assert _silence(_pattern(real, gap=(day7 + 11 * HOUR, day7 + 11 * HOUR + 20 * 60))) == []
    # Saturday: three entries an hour at most; four hours of nothing is ordinary.
    assert _silence(_pattern(real, gap=(MONDAY + 5 * DAY, MONDAY + 6 * DAY))) == []


def test_a_regular_quiet_night_silent_is_quiet(real: dict[str, list[AuditEvent]]) -> None:
    # Every night carries a trickle of 8 entries an hour; one whole weekday night (80 entries by
    # a night-level count) delivers nothing. Night hours were never busy: not a silence.
    night = (MONDAY + 7 * DAY + 19 * HOUR, MONDAY + 8 * DAY + 6 * HOUR)
    assert _silence(_pattern(real, gap=night, night=8)) == []
    # The same trickle does not hide a silent working day.
    day = (MONDAY + 7 * DAY + 9 * HOUR, MONDAY + 7 * DAY + 12 * HOUR)
    (alert,) = _silence(_pattern(real, gap=day, night=8))
    assert alert.labels["stream"] == "b" and float(alert.labels["expected_events"]) >= 50


def _ts(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
