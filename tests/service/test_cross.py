"""The cross-identity stage in one process: any partitioning, any interleaving, any crash, one answer.

The real broker and workers are exercised by ``test_invariance.py``; here the two stages are driven
directly (stage-1 partitions keyed by identity, records routed to stage-2 partitions by their
correlation key, marks after each "batch") so many partitionings, interleavings and crashes run in
seconds, against :class:`~vaultwatch.service.cross.Pipeline` (what ``vaultwatch replay`` runs).
"""

from __future__ import annotations

import logging
import random
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from alerts.store import Store
from detect.alert import Alert
from detect.engine import Engine
from detect.partition import (
    ACCOUNT,
    ADDRESS,
    CROSS_SCOPES,
    GLOBAL,
    IDENTITY,
    SCOPES,
    CarriedBaselines,
    Facts,
    correlation_keys,
    scopes_of,
    split,
)
from detect.rules import default_rules
from ingest.dedup import Deduplicator
from ingest.event import AuditEvent
from ingest.sources.base import RawRecord
from ingest.sources.kafka import KafkaPosition
from vaultwatch.demo.orgs import generate_org
from vaultwatch.service.cross import (
    CrossState,
    IdentityStage,
    Pipeline,
    XMark,
    XRecord,
    build_split,
    decode,
    describe,
    encode,
    partition_for,
)
from vaultwatch.service.metrics import Metrics
from vaultwatch.service.replay import read_events, run_engine
from vaultwatch.service.stage2 import CrossWorker
from vaultwatch.service.worker import PartitionState, Worker, WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
BEHAVIOUR = "behaviour-risk"


@pytest.fixture(scope="module")
def events() -> list[AuditEvent]:
    org = generate_org(3, size="small", workdir=ROOT / "var" / "eval")
    dedup = Deduplicator()
    return [e for e in read_events([org.audit_path]) if not dedup.is_duplicate(e)]


@pytest.fixture(scope="module")
def reference(events: list[AuditEvent]) -> dict[str, str]:
    """The pipeline's alerts without the end-of-replay flush (a live stream never ends)."""
    pipe = Pipeline(seed=0)
    out: dict[str, Alert] = {}
    for ev in events:
        out.update((a.id, a) for a in pipe.process(ev))
    out.update((a.id, a) for a in pipe.cross.release(final=True))
    return {k: a.detector for k, a in out.items()}


class _Stage1:
    def __init__(self, src: int, evs: list[AuditEvent]) -> None:
        local, _, _, scopes = build_split(lambda: default_rules({}))
        self.src = src
        self.stage = IdentityStage(Engine({}, seed=0, detectors=local), scopes)
        self.evs = evs
        self.pos = 0
        self.hour: int | None = None
        self.max_ts = float("-inf")
        self.saved: tuple[bytes, int, int | None, float] | None = None

    def checkpoint(self) -> None:
        self.saved = (self.stage.engine.snapshot(), self.pos, self.hour, self.max_ts)

    def crash(self) -> None:
        """Lose everything since the last checkpoint (the broker keeps what was sent)."""
        local, _, _, scopes = build_split(lambda: default_rules({}))
        self.stage = IdentityStage(Engine({}, seed=0, detectors=local), scopes)
        if self.saved is None:
            self.pos, self.hour, self.max_ts = 0, None, float("-inf")
            return
        blob, self.pos, self.hour, self.max_ts = self.saved
        self.stage.engine.restore(blob)


class _Stage2:
    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.log: list[bytes] = []  # the repartition topic partition
        self.state = self._fresh()
        self.next = 0
        self.saved: tuple[bytes, int] | None = None

    def _fresh(self) -> CrossState:
        _, cross, carried, _ = build_split(lambda: default_rules({}))
        return CrossState(cross, carried, {}, seed=0, sources=self.sources)

    def consume(self, alerts: dict[str, str]) -> None:
        while self.next < len(self.log):
            for a in self.state.offer(decode(self.log[self.next])):
                alerts[a.id] = a.detector
            self.next += 1

    def checkpoint(self) -> None:
        self.saved = (self.state.snapshot(), self.next)

    def crash(self) -> None:
        self.state = self._fresh()
        self.next = 0
        if self.saved is not None:
            self.state.restore(self.saved[0])
            self.next = self.saved[1]


def _simulate(
    events: list[AuditEvent], parts: int, xparts: int, rng: random.Random, crashes: int
) -> dict[str, Any]:
    s1 = [_Stage1(p, []) for p in range(parts)]
    for ev in events:
        s1[zlib.crc32(ev.identity.key.encode()) % parts].evs.append(ev)
    s2 = [_Stage2(parts) for _ in range(xparts)]
    alerts: dict[str, str] = {}
    crash_at = sorted(rng.randrange(len(events)) for _ in range(crashes))
    done = 0
    while any(st.pos < len(st.evs) for st in s1):
        st = rng.choice([st for st in s1 if st.pos < len(st.evs)])
        for ev in st.evs[st.pos : st.pos + rng.randint(1, 250)]:
            st.hour, out, records = st.stage.step(ev, st.hour, st.src, st.pos)
            st.max_ts = max(st.max_ts, ev.ts)
            st.pos += 1
            done += 1
            alerts.update((a.id, a.detector) for a in out)
            for rec in records:
                s2[partition_for(rec.scope, rec.key, xparts)].log.append(encode(rec))
        for q in s2:
            q.log.append(encode(XMark(st.src, st.pos - 1, st.max_ts)))
        if rng.random() < 0.3:
            st.checkpoint()
        q = rng.choice(s2)
        q.consume(alerts)
        if rng.random() < 0.3:
            q.checkpoint()
        while crash_at and done >= crash_at[0]:
            crash_at.pop(0)
            rng.choice(s1).crash()
            rng.choice(s2).crash()
    for st in s1:
        for q in s2:
            q.log.append(encode(XMark(st.src, st.pos - 1, st.max_ts, idle=True)))
    for q in s2:
        q.consume(alerts)
    states = [describe(q.state.snapshot()) for q in s2]
    return {"alerts": alerts, "states": states}


def _without(ids: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in ids.items() if v not in names}


@pytest.mark.integration
def test_pipeline_equals_the_single_engine(events: list[AuditEvent]) -> None:
    """Splitting changes no alert in one process: every detector sees what it saw in one engine."""
    single = run_engine(events, Engine(seed=0)).alerts
    piped = run_engine(events, Pipeline(seed=0)).alerts
    assert set(piped) == set(single)
    by_det = Counter(a.detector for a in piped.values())
    assert (
        by_det["login-failure-burst"] and by_det["credential-stuffing"] and by_det["sensitive-first-access"]
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("parts", "xparts", "seed", "crashes"), [(1, 1, 1, 0), (4, 4, 2, 0), (3, 2, 3, 4), (5, 3, 4, 6)]
)
def test_any_partitioning_interleaving_and_crash_gives_the_same_alerts(
    events: list[AuditEvent], reference: dict[str, str], parts: int, xparts: int, seed: int, crashes: int
) -> None:
    got = _simulate(events, parts, xparts, random.Random(seed), crashes)
    for st in got["states"]:
        assert st["pending"] == 0 and st["late"] == 0 and len(st["idle"]) == parts
    if parts == 1:
        assert got["alerts"] == reference
    # The behavioural core's priors are per partition (the priors job is not built yet).
    assert _without(got["alerts"], BEHAVIOUR) == _without(reference, BEHAVIOUR)


# -- the audit's table and the routing ------------------------------------------------------------
def test_every_default_detector_is_classified_and_cross_names_exist() -> None:
    names = {d.name for d in default_rules({})}
    assert set(SCOPES) <= names, set(SCOPES) - names
    local, cross = split(lambda: default_rules({}), CarriedBaselines())
    assert {d.name for d in local} == {n for n in names if scopes_of(n) == (IDENTITY,)}
    assert set(cross) <= set(CROSS_SCOPES)
    assert [d.name for d in cross[ACCOUNT]] == ["login-failure-burst"]
    assert "login-failure-burst" in [d.name for d in cross[ADDRESS]]
    # Each scope's copies are its own: no detector object is shared between two scopes.
    objs = [id(getattr(d, "inner", d)) for dets in cross.values() for d in dets] + [id(d) for d in local]
    assert len(objs) == len(set(objs))


def _login(events: list[AuditEvent], outcome: str) -> AuditEvent:
    return next(e for e in events if e.is_response and e.outcome == outcome and e.identity.kind == "login")


@pytest.mark.integration
def test_correlation_keys_follow_what_the_state_is_keyed_by(events: list[AuditEvent]) -> None:
    failed = _login(events, "login_failed")
    assert failed.remote_ip
    (net,) = correlation_keys(ADDRESS, failed)
    assert net.startswith(failed.remote_ip.rsplit(".", 1)[0])
    assert correlation_keys(ACCOUNT, failed) == (failed.identity.key,)
    assert correlation_keys(GLOBAL, failed) == ("*",)
    # A successful login is filed under the entity that logged in, but correlated with the account.
    ok = next(
        e
        for e in events
        if e.is_response
        and e.outcome == "ok"
        and e.response is not None
        and e.response.auth is not None
        and "/login" in e.path
    )
    (acct,) = correlation_keys(ACCOUNT, ok)
    assert acct.startswith("login:") and acct != ok.identity.key
    # Request entries go only to the scopes whose detectors judge requests.
    req = next(e for e in events if not e.is_response)
    assert correlation_keys(ADDRESS, req) == () and correlation_keys(ACCOUNT, req) == ()


def test_records_round_trip_and_duplicates_are_dropped() -> None:
    rec = XRecord(2, 10, 0, GLOBAL, "*", b"x", 5.0, Facts(3.0, 1.0, False))
    assert decode(encode(rec)) == rec
    mark = XMark(2, 10, 5.0, idle=True)
    assert decode(encode(mark)) == mark
    _, cross, carried, _ = build_split(lambda: default_rules({}))
    st = CrossState(cross, carried, {}, sources=1)
    assert st.offer(XMark(0, 5, 100.0)) == []
    assert st.frontier() == 100.0 - st.lateness
    st.offer(XMark(0, 5, 500.0))  # a re-sent mark: dropped
    assert st.marks[0] == 100.0
    st.offer(XMark(0, 5, 100.0, idle=True))  # the idle mark of the same offset is news
    assert st.frontier() == float("inf")


def test_an_idle_mark_counts_only_while_its_owner_repeats_it() -> None:
    """A worker that dies with its partition idle must not let the cross stage run ahead. Age is
    judged by the wall times the marks carry (the latest taken), not by the reader's clock."""
    _, cross, carried, _ = build_split(lambda: default_rules({}))
    st = CrossState(cross, carried, {}, sources=2, idle_ttl=3.0)
    st.offer(XMark(0, 7, 500.0, at=1000.0))
    st.offer(XMark(1, 3, 400.0, idle=True, at=1000.0))
    assert st.frontier() == 500.0 - st.lateness  # source 1 idle: only source 0 holds back
    st.offer(XMark(1, 3, 400.0, idle=True, at=1002.0))  # repeated: same offset, still news
    st.offer(XMark(0, 8, 501.0, at=1004.5))
    assert st.frontier() == 501.0 - st.lateness
    st.offer(XMark(0, 9, 502.0, at=1005.5))  # its owner died: no repeat within the ttl
    assert st.frontier() == 400.0 - st.lateness
    assert describe(st.snapshot())["idle"] == [1]


def test_a_source_never_heard_holds_the_cross_stage_back() -> None:
    _, cross, carried, _ = build_split(lambda: default_rules({}))
    st = CrossState(cross, carried, {}, sources=2)
    assert st.frontier() == float("-inf")
    st.offer(XMark(0, 1, 50.0, at=10.0))
    assert st.frontier() == float("-inf")  # source 1 has said nothing yet


def test_stage_2_decides_the_same_whenever_it_reads_its_log(events: list[AuditEvent]) -> None:
    """The same messages give the same alerts however long after they were sent they are read,
    and from a checkpoint taken part-way: a stage-2 worker restarted after a crash re-reads its
    partition and must raise what it raised before, not a second alert for the same finding."""
    pipe = Pipeline(seed=0)
    log: list[XRecord | XMark] = []
    stage = pipe.stage
    t0 = events[0].ts
    last: dict[int, tuple[int, float]] = {0: (-1, t0), 1: (-1, t0)}
    for i, ev in enumerate(events):
        src = zlib.crc32(ev.identity.key.encode()) % 2  # keyed by identity, as the input topic is
        _, _, recs = stage.step(ev, None, src, i)
        log.extend(recs)
        last[src] = (i, ev.ts)
        log.append(XMark(src, i, ev.ts, at=ev.ts))  # sent as it happens: wall time = event time
        if i % 20 == 0:
            # The other source says it is idle (at its own offset and time): trusted while fresh
            # by the marks' times, stale a few seconds later; so the decisions depend on them.
            off, ts = last[1 - src]
            log.append(XMark(1 - src, off, ts, idle=True, at=ev.ts))

    def run(msgs: list[XRecord | XMark], st: CrossState, trusted: list[bool] | None = None) -> list[str]:
        out: set[str] = set()
        for m in msgs:
            out.update(a.id for a in st.offer(m))
            if trusted is not None and len(st.marks) == 2:
                trusted.append(st.frontier() > min(st.marks.values()) - st.lateness)
        return sorted(out)

    _, cross, carried, _ = build_split(lambda: default_rules({}))
    whole = CrossState(cross, carried, {}, sources=2)
    trusted: list[bool] = []
    ids = run(log, whole, trusted)
    assert ids, "the organisation's log raises cross-stage alerts"
    # The idle marks mattered: trusted for a while (by the marks' own times), then stale.
    assert any(trusted) and not all(trusted)
    half = len(log) // 2
    _, cross1, carried1, _ = build_split(lambda: default_rules({}))
    first = CrossState(cross1, carried1, {}, sources=2)
    before = run(log[:half], first)
    _, cross2, carried2, _ = build_split(lambda: default_rules({}))
    again = CrossState(cross2, carried2, {}, sources=2)
    again.restore(first.snapshot())
    after = run(log[half:], again)
    assert sorted(set(before) | set(after)) == ids


@pytest.mark.integration
def test_an_analyst_verdict_reaches_the_stage_2_engine_that_raised_the_alert(
    events: list[AuditEvent], tmp_path: Path
) -> None:
    """A false positive on a cross detector's alert (keyed by a network, an account or the
    organisation) suppresses it in the stage-2 engine that raised it; before, only stage-1
    engines took verdicts, so it paged again."""
    pipe = Pipeline(seed=0)
    cross_alert: Alert | None = None
    for ev in events:
        for a in pipe.process(ev):
            if cross_alert is None and pipe.cross.raised(a.id):
                cross_alert = a
    assert cross_alert is not None, "the organisation has alerts from cross detectors"
    store = Store(f"sqlite:///{tmp_path / 'v.db'}")
    store.migrate()
    try:
        with store.transaction() as tx:
            tx.add_alerts([cross_alert])
            tx.record_verdict(cross_alert.id, "false_positive", actor="analyst@example", comment="lab")
        make = lambda: default_rules({})  # noqa: E731
        xw = CrossWorker(
            WorkerConfig(topic="t.xid", group_id="g.xid"),
            make=make,
            sources=1,
            lateness=0.0,
            source_factory=lambda **k: None,
            store=store,
        )
        xw.parts[("t.xid", 0)] = PartitionState("t.xid", 0, pipe.cross)
        before = [dict(e._state.suppressions) for e in pipe.cross.engines.values()]
        xw._apply_verdicts(0.0)
        assert xw.stats["verdicts"] == 1
        after = [dict(e._state.suppressions) for e in pipe.cross.engines.values()]
        assert after != before, "the verdict suppressed nothing in the engine that raised the alert"
        assert xw.parts[("t.xid", 0)].verdict_id >= 1  # checkpointed: applied once
        xw._apply_verdicts(0.0)
        assert xw.stats["verdicts"] == 1
        # A stage-1 worker holding other identities does not take it.
        w = Worker(WorkerConfig(topic="t", group_id="g"), source_factory=lambda **k: None, store=store)
        w.parts[("t", 0)] = PartitionState("t", 0, Engine({}, seed=0, detectors=[]))
        w._apply_verdicts(0.0)
        assert w.stats["verdicts"] == 0
    finally:
        store.close()


def test_stage_2_reports_records_pending_and_late_records_in_metrics(
    events: list[AuditEvent], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``vaultwatch run``'s /metrics covers the cross stage too: records, what it holds back,
    and records judged out of order (after their time was passed), which it also logs."""
    pipe = Pipeline(seed=0)
    msgs: list[XRecord | XMark] = []
    for i, ev in enumerate(events[:400]):
        _, _, recs = pipe.stage.step(ev, None, 0, i)
        msgs.extend(recs)
    assert len(msgs) > 3, "the organisation's first events go to the cross stage"
    first, *rest = msgs
    assert isinstance(first, XRecord)
    end = max(m.ts for m in msgs)
    # Source 0 says it has passed everything; the first record then comes again at a new offset:
    # its time has been passed, so it is judged late.
    late = msgspec.structs.replace(first, off=10_000)
    feed = [*rest, XMark(0, 9_999, end + 60.0, at=1.0), late]
    store = Store(f"sqlite:///{tmp_path / 'v.db'}")
    store.migrate()
    metrics = Metrics()
    try:
        xw = CrossWorker(
            WorkerConfig(topic="t.xid", group_id="g.xid"),
            make=lambda: default_rules({}),
            sources=1,
            lateness=2.0,
            source_factory=lambda **k: None,
            store=store,
            metrics=metrics,
        )
        batch = [RawRecord(encode(m), KafkaPosition("t.xid", 0, n), "kafka") for n, m in enumerate(feed)]
        with caplog.at_level(logging.WARNING, logger="vaultwatch.service.stage2"):
            xw.process_batch(batch)
    finally:
        store.close()
    text = metrics.render().decode()
    assert f"vaultwatch_cross_records_total {float(len(feed))}" in text
    assert "vaultwatch_cross_late_total 1.0" in text
    assert "vaultwatch_cross_pending 0.0" in text
    assert xw.stats["cross_late"] == 1
    assert any("out of order" in r.getMessage() for r in caplog.records)


def test_the_same_line_twice_does_not_stop_stage_2(events: list[AuditEvent]) -> None:
    """An at-least-once shipper can put one audit line on the topic twice: two records with the
    same event, order key and all. Before, the buffer's heap then compared the records themselves
    and stage 2 died with a TypeError, again at every restart (a poison pill)."""
    pipe = Pipeline(seed=0)
    rec = None
    for i, ev in enumerate(events):
        _, _, recs = pipe.stage.step(ev, None, 0, i)
        if recs:
            rec = recs[0]
            break
    assert rec is not None
    twice = msgspec.structs.replace(rec, off=rec.off + 1)
    _, cross, carried, _ = build_split(lambda: default_rules({}))
    st = CrossState(cross, carried, {}, sources=1)
    st.offer(rec)
    st.offer(twice)
    st.offer(msgspec.structs.replace(rec, off=rec.off + 2, seq=0))
    assert st.pending == 3
    restored = CrossState(*build_split(lambda: default_rules({}))[1:3], {}, sources=1)
    restored.restore(st.snapshot())
    assert restored.pending == 3
    st.offer(XMark(0, rec.off + 3, rec.ts + 60.0, at=1.0))  # releases all three, in sent order
    assert st.pending == 0


def test_an_idle_source_holds_stage_2_at_the_time_it_went_idle(events: list[AuditEvent]) -> None:
    """ "Caught up at ``at``" says nothing of an entry written just after ``at``: stage 2 must not
    judge other sources' records past that time until the idle source speaks again. (Ignored
    outright, the idle source's next record came late: 71,699 of them in a 40-minute soak.)"""
    pipe = Pipeline(seed=0)
    recs: list[XRecord] = []
    for i, ev in enumerate(events):
        recs.extend(pipe.stage.step(ev, None, 0, i)[2])
        if len(recs) >= 2:
            break
    a, b = recs[:2]
    _, cross, carried, _ = build_split(lambda: default_rules({}))
    st = CrossState(cross, carried, {}, sources=2)
    st.offer(msgspec.structs.replace(a, src=0, off=1, ts=1007.9))
    st.offer(XMark(0, 1, 1010.0, at=1010.0))
    st.offer(XMark(1, 0, 900.0, idle=True, at=1008.0))  # source 1 caught up at wall time 1008
    assert st.frontier() == 1008.0 - st.lateness and st.pending == 1  # 1007.9 waits
    # An entry of 1007.5 reaches source 1 just after its idle mark (shipped half a second late):
    # within the lateness, so in time.
    st.offer(msgspec.structs.replace(b, src=1, off=1, ts=1007.5))
    assert st.late == 0
    st.offer(XMark(1, 1, 1007.5, at=1010.5))
    assert st.frontier() == 1007.5 - st.lateness


class _Sent:
    def succeeded(self) -> bool:
        return True


class _Producer:
    """What CrossProducer needs of kafka-python's producer; keeps each partition's messages."""

    def __init__(self) -> None:
        self.log: dict[int, list[bytes]] = {}

    def send(self, topic: str, *, value: bytes, partition: int) -> _Sent:
        self.log.setdefault(partition, []).append(value)
        return _Sent()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def _judged(log: dict[int, list[Any]]) -> set[str]:
    """The alert ids stage 2 raises from each partition's messages."""
    from vaultwatch.service.cross import XBatch

    ids: set[str] = set()
    for msgs in log.values():
        _, cross, carried, _ = build_split(lambda: default_rules({}))
        state = CrossState(cross, carried, {}, seed=0, sources=1)
        for msg in msgs:
            for m in msg.records if isinstance(msg, XBatch) else [msg]:
                ids.update(a.id for a in state.offer(m))
    return ids


def test_records_travel_several_to_a_message_and_marks_follow_what_they_cover(
    events: list[AuditEvent],
) -> None:
    """Stage 1 gathers each partition's records into one message per batch; stage 2 takes them one
    by one, in routing order, with every mark after the records it covers, and raises what it
    raises from one message per record."""
    from vaultwatch.service.cross import XBatch
    from vaultwatch.service.stage2 import BATCH_BYTES, CrossProducer

    xparts = 3
    fake = _Producer()
    out = CrossProducer("t.xid", xparts, producer=fake)
    pipe = Pipeline(seed=0)
    single: dict[int, list[XRecord | XMark]] = {p: [] for p in range(xparts)}
    for i, ev in enumerate(events):
        _, _, recs = pipe.stage.step(ev, None, 0, i)
        out.send(recs)
        for r in recs:
            single[partition_for(r.scope, r.key, xparts)].append(r)
        if i % 50 == 49 or i == len(events) - 1:
            idle = i == len(events) - 1
            out.mark(0, i, ev.ts, idle=idle, at=1.0)
            for p in range(xparts):
                single[p].append(XMark(0, i, ev.ts, idle, 1.0))
    out.flush()
    assert out.sent > 3 * out.messages, (out.sent, out.messages)
    for p in range(xparts):
        got: list[XRecord | XMark] = []
        for data in fake.log[p]:
            msg = decode(data)
            got.extend(msg.records if isinstance(msg, XBatch) else [msg])
        assert got == single[p]  # same records, same order, marks where they were
    batched = {p: [decode(d) for d in fake.log[p]] for p in range(xparts)}
    assert _judged(batched) == _judged(single) != set()
    # A partition's records go out before they outgrow one message.
    big = XRecord(0, 10**6, 0, GLOBAL, "*", b"x" * (BATCH_BYTES // 4), 1.0, Facts(0.0, 0.0, False))
    before = len(fake.log.get(partition_for(GLOBAL, "*", xparts), []))
    out.send([msgspec.structs.replace(big, seq=s) for s in range(9)])
    assert len(fake.log[partition_for(GLOBAL, "*", xparts)]) - before == 2
