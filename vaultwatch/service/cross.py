"""The cross-identity stage: detectors whose state several identities share, re-keyed and ordered.

Stage 1 (the identity-keyed worker, or :class:`Pipeline` in one process) runs the identity-scoped
detectors and the behavioural core. For each event a cross detector needs (see
:mod:`detect.partition`), it emits an :class:`XRecord` keyed by the correlation key (source
network, login account, peer group, or one organisation-wide key), with the facts of the
identity's baseline the cross detectors ask about, and after each batch an :class:`XMark` per
output partition: "source partition ``src`` has processed up to offset ``off``, event time
``ts``" (``idle``: it is caught up and has nothing more for now).

Stage 2 (:class:`CrossState`, one per partition of the repartition topic) buffers records and
processes them in one canonical order, ``(ts, scope, key, event bytes)``, once every source
partition's mark has passed ``ts + lateness``: the order no longer depends on how the input was
partitioned, how workers interleaved, or crashes, so the cross detectors' findings, hence alert
ids, are the same as in one process. A record from a source at or below what that source already
delivered (a stage-1 worker restarted from its checkpoint re-sends) is dropped. Each scope has its
own engine (behaviour off) over that scope's detector copies, flushed at event-time hour boundaries
of its own records. The whole state (engines, buffer, marks) snapshots with the stage-2 offset.

:class:`Pipeline` is both stages in one process (``vaultwatch replay``): same routing, same order,
same engines, so ``replay`` and ``run`` raise the same alert ids.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable
from typing import Any, Final

import msgspec

from detect.alert import Alert
from detect.engine import Engine
from detect.partition import CarriedBaselines, Facts, correlation_keys, facts_of, needed_scopes, split
from detect.rules import default_rules
from detect.types import Detector
from ingest.event import AuditEvent

__all__ = [
    "DEFAULT_IDLE_TTL",
    "DEFAULT_LATENESS",
    "CrossState",
    "IdentityStage",
    "Pipeline",
    "XBatch",
    "XMark",
    "XRecord",
    "decode",
    "describe",
    "encode",
    "partition_for",
]

#: Seconds of event time a source partition's entries may arrive out of order.
DEFAULT_LATENESS: Final = 2.0
#: Seconds an idle mark stays valid, by its senders' clocks (its owner repeats it every second while idle).
DEFAULT_IDLE_TTL: Final = 3.0
_LAST: Final = 1 << 30  # seq of a mark: after every record of its offset


class XRecord(msgspec.Struct, array_like=True, tag="r"):
    """One event for one cross scope and key, from source partition ``src`` at ``off``."""

    src: int
    off: int
    seq: int
    scope: str
    key: str
    event: bytes  # msgpack of the AuditEvent (also the tie-break of the order)
    ts: float
    facts: Facts
    witness: bool = False


class XMark(msgspec.Struct, array_like=True, tag="w"):
    """Source partition ``src`` processed everything up to ``off``; its event time is ``ts``.

    ``at`` is the sender's wall time. ``idle``: the source is caught up and quiet as of ``at``
    (its owner repeats the mark while that lasts; ``at`` ``inf``: the input ended). An idle source
    stops holding the others back only while its latest idle mark is fresher than the state's
    ``idle_ttl``: a worker that dies with its partitions idle cannot let the cross stage run ahead
    of what their next owner sends.

    "Fresher" is judged against the latest ``at`` of any mark the state has taken, never against
    the reader's clock: what stage 2 releases, and when, is then a function of the messages in its
    partition's log alone. A stage-2 worker that restarts from its checkpoint and reads the same
    messages again makes the same decisions and raises the same alert ids, whenever it reads them.
    (Judged by the reader's clock, a re-read after a crash saw the idle marks as stale, released in
    a different order, and stored a second alert beside the one stored before the crash.)
    """

    src: int
    off: int
    ts: float
    idle: bool = False
    at: float = float("inf")


class XBatch(msgspec.Struct, array_like=True, tag="b"):
    """Several records for one repartition-topic partition, in the order they were routed.

    One Kafka message per partition per stage-1 batch instead of one per record: the producer's
    per-message work (partitioning, a future, record-batch framing) was most of stage 1's cost.
    Stage 2 takes the records one by one, exactly as if they had come as single messages.
    """

    records: list[XRecord]


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(XRecord | XMark | XBatch)
_EV_DEC = msgspec.msgpack.Decoder(AuditEvent)


def encode(msg: XRecord | XMark | XBatch) -> bytes:
    return _ENC.encode(msg)


def decode(data: bytes) -> XRecord | XMark | XBatch:
    msg: XRecord | XMark | XBatch = _DEC.decode(data)
    return msg


def partition_for(scope: str, key: str, partitions: int) -> int:
    """The repartition-topic partition of ``(scope, key)`` (stable across processes)."""
    return zlib.crc32(f"{scope}\x1f{key}".encode()) % max(1, partitions)


def _cross_config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "behaviour_enabled": False, "model_enabled": False}


class IdentityStage:
    """Stage 1's work on one event of one source partition, shared by the worker and replay.

    Time-driven work at event-time hour boundaries (``engine.flush``), the routing of the event to
    cross scopes with its identity's facts (read before the engine learns it), then
    ``engine.process``.
    """

    def __init__(self, engine: Engine, scopes: tuple[str, ...]) -> None:
        self.engine = engine
        self.scopes = scopes

    def step(
        self, ev: AuditEvent, hour: int | None, src: int, off: int
    ) -> tuple[int, list[Alert], list[XRecord]]:
        """``(new hour, alerts, records)`` for ``ev`` at source offset ``off``."""
        out: list[Alert] = []
        h = int(ev.ts // 3600)
        if hour is not None and h > hour:
            out.extend(self.engine.flush(h * 3600.0))
        if hour is None or h > hour:
            hour = h
        records = self.route(ev, src, off)
        out.extend(self.engine.process(ev))
        return hour, out, records

    def route(self, ev: AuditEvent, src: int, off: int, *, witness: bool = False) -> list[XRecord]:
        """The cross records of ``ev`` (``witness``: a dropped duplicate, for completeness)."""
        records: list[XRecord] = []
        data: bytes | None = None
        facts: Facts | None = None
        for scope in self.scopes:
            for key in correlation_keys(scope, ev):
                if data is None:
                    data = _ENC.encode(ev)
                    facts = Facts() if witness else facts_of(ev, self.engine.baselines)
                assert facts is not None
                records.append(XRecord(src, off, len(records), scope, key, data, ev.ts, facts, witness))
        return records


class _State(msgspec.Struct, kw_only=True):
    engines: dict[str, bytes] = msgspec.field(default_factory=dict)
    hours: dict[str, int] = msgspec.field(default_factory=dict)
    buffer: list[XRecord] = msgspec.field(default_factory=list)
    marks: dict[int, float] = msgspec.field(default_factory=dict)
    idle: dict[int, float] = msgspec.field(default_factory=dict)
    last: dict[int, list[int]] = msgspec.field(default_factory=dict)
    released: float = float("-inf")
    late: int = 0
    now: float = float("-inf")


#: Built at import, in one thread: see ``detect.engine._STATE_DECODER``.
_STATE_DEC: Final = msgspec.msgpack.Decoder(_State)


def _order(r: XRecord) -> tuple[float, str, str, bool, bytes]:
    return (r.ts, r.scope, r.key, r.witness, r.event)


def _entry(r: XRecord) -> tuple[tuple[float, str, str, bool, bytes], int, int, int, XRecord]:
    """A heap entry: the canonical order, then where the record came from (the same event twice,
    from one identity's partition, is judged in the order it was sent, as in one process)."""
    return (_order(r), r.src, r.off, r.seq, r)


class CrossState:
    """Stage 2 of one repartition-topic partition (or of a whole replay): see the module."""

    def __init__(
        self,
        cross: dict[str, list[Detector]],
        carried: CarriedBaselines,
        config: dict[str, Any],
        *,
        seed: int = 0,
        sources: int = 1,
        lateness: float = DEFAULT_LATENESS,
        idle_ttl: float = DEFAULT_IDLE_TTL,
    ) -> None:
        self.carried = carried
        self.sources = sources
        self.lateness = lateness
        self.idle_ttl = idle_ttl
        self.engines = {
            scope: Engine(_cross_config(config), seed=seed, detectors=dets) for scope, dets in cross.items()
        }
        self.hours: dict[str, int] = {}
        # (canonical order, source, offset, seq, record): the first four are unique per record, so
        # two records with the same event (a line sent twice) never make the heap compare records.
        self._heap: list[tuple[tuple[float, str, str, bool, bytes], int, int, int, XRecord]] = []
        self.marks: dict[int, float] = {}
        self.idle: dict[int, float] = {}  # source -> wall time of its latest idle mark
        self.last: dict[int, tuple[int, int]] = {}
        self.released = float("-inf")
        self.late = 0
        #: The latest sender wall time of a mark taken: the clock idle marks are judged by.
        self.now = float("-inf")

    # -- input ----------------------------------------------------------------------------------
    def offer(self, msg: XRecord | XMark) -> list[Alert]:
        """Take one message; alerts of records that became safe to process (in order)."""
        idle = isinstance(msg, XMark) and msg.idle
        pos = (msg.off, msg.seq if isinstance(msg, XRecord) else _LAST + int(idle))
        last = self.last.get(msg.src)
        if last is not None and (pos < last or (pos == last and not idle)):
            return []  # already delivered (a restarted source re-sends from its checkpoint)
        self.last[msg.src] = pos
        if isinstance(msg, XMark):
            if msg.at != float("inf"):
                self.now = max(self.now, msg.at)
            if msg.idle:
                self.idle[msg.src] = max(self.idle.get(msg.src, float("-inf")), msg.at)
            else:
                self.idle.pop(msg.src, None)
            self.marks[msg.src] = max(self.marks.get(msg.src, float("-inf")), msg.ts)
            return self.release()
        if self.idle.pop(msg.src, None) is not None:
            self.marks[msg.src] = max(self.marks.get(msg.src, float("-inf")), msg.ts)
        if msg.ts <= self.released:
            self.late += 1  # beyond the lateness bound: judged now, out of the canonical order
            return self._process(msg)
        heapq.heappush(self._heap, _entry(msg))
        return []

    def frontier(self) -> float:
        """Records at or before this event time are safe to process (see :class:`XMark`).

        A source holds the frontier at its mark's event time less the lateness. An idle source
        (its idle mark still fresh) holds it at the time it said it was idle instead, when that
        is later: "caught up at ``at``" promises nothing about an entry written a moment after
        ``at``, so records later than that must wait for its next mark. (Ignored outright, an idle
        source let stage 2 run ahead; an entry written just after the idle mark then came late
        and was judged out of order: 71,699 such records in a 40-minute soak.) A replay's end
        (``at`` infinite) lets everything through.
        """
        now = self.now
        ttl = self.idle_ttl
        idle = self.idle
        marks = self.marks
        floor = float("inf")
        for s in range(self.sources):
            at = idle.get(s)
            if at is not None and now - at <= ttl:
                held = max(marks.get(s, float("-inf")), at)
            elif s in marks:
                held = marks[s]
            else:
                return float("-inf")
            floor = min(floor, held)
        return floor - self.lateness

    def release(self, *, final: bool = False) -> list[Alert]:
        """Process buffered records up to the frontier (all of them when ``final``)."""
        limit = float("inf") if final else self.frontier()
        out: dict[str, Alert] = {}
        heap = self._heap
        while heap and heap[0][0][0] <= limit:
            rec = heapq.heappop(heap)[-1]
            self.released = max(self.released, rec.ts)
            for a in self._process(rec):
                out[a.id] = a
        return list(out.values())

    def flush(self, now: float) -> list[Alert]:
        """Every scope's engine flushed at ``now`` (the end of a replay)."""
        out: list[Alert] = []
        for eng in self.engines.values():
            out.extend(eng.flush(now))
        return out

    def _process(self, rec: XRecord) -> list[Alert]:
        eng = self.engines.get(rec.scope)
        if eng is None:
            return []
        ev = _EV_DEC.decode(rec.event)
        out: list[Alert] = []
        h = int(rec.ts // 3600)
        hour = self.hours.get(rec.scope)
        if hour is not None and h > hour:
            out.extend(eng.flush(h * 3600.0))
        if hour is None or h > hour:
            self.hours[rec.scope] = h
        if rec.witness:
            for d in eng.detectors:
                w = getattr(d, "witness", None)
                if w is not None:
                    w(ev)
            return out
        self.carried.set(ev, rec.facts)
        out.extend(eng.process(ev))
        return out

    @property
    def pending(self) -> int:
        return len(self._heap)

    # -- feedback -------------------------------------------------------------------------------
    def raised(self, alert_id: str) -> bool:
        """Whether one of this state's engines raised ``alert_id``."""
        return any(eng.raised(alert_id) for eng in self.engines.values())

    def verdict(self, alert: Alert, verdict: str, *, comment: str = "") -> None:
        """An analyst's verdict on an alert of this stage, taken by the engine that raised it at
        the latest event time judged here (so a replay of the same stream applies it alike)."""
        now = self.released if self.released != float("-inf") else 0.0
        for eng in self.engines.values():
            if eng.raised(alert.id):
                eng.verdict(alert, verdict, now=now, comment=comment)

    # -- state ----------------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        st = _State(
            engines={s: e.snapshot() for s, e in self.engines.items()},
            hours=dict(self.hours),
            buffer=[e[-1] for e in sorted(self._heap, key=lambda e: e[:4])],
            marks=dict(self.marks),
            idle=dict(self.idle),
            last={s: list(p) for s, p in self.last.items()},
            released=self.released,
            late=self.late,
            now=self.now,
        )
        return _ENC.encode(st)

    def restore(self, data: bytes) -> None:
        st = _STATE_DEC.decode(data)
        for scope, blob in st.engines.items():
            if scope in self.engines:
                self.engines[scope].restore(blob)
        self.hours = dict(st.hours)
        self._heap = [_entry(r) for r in st.buffer]
        heapq.heapify(self._heap)
        self.marks = dict(st.marks)
        self.idle = dict(st.idle)
        self.last = {s: (p[0], p[1]) for s, p in st.last.items()}
        self.released = st.released
        self.late = st.late
        self.now = st.now

    def identities(self) -> list[str]:
        return []


def describe(snapshot: bytes) -> dict[str, Any]:
    """What a :meth:`CrossState.snapshot` holds, for operators and tests: sources idle, their
    marks, the last offset heard from each, records still buffered, records judged late."""
    st = _STATE_DEC.decode(snapshot)
    return {
        "idle": sorted(st.idle),
        "marks": dict(st.marks),
        "heard": {src: pos[0] for src, pos in st.last.items()},
        "pending": len(st.buffer),
        "late": st.late,
    }


def build_split(
    make: Callable[[], list[Detector]],
) -> tuple[list[Detector], dict[str, list[Detector]], CarriedBaselines, tuple[str, ...]]:
    """The identity-scoped detectors, the cross copies, their carried baselines and scopes."""
    carried = CarriedBaselines()
    local, cross = split(make, carried)
    return local, cross, carried, needed_scopes(cross)


class _Witness:
    """Hands a duplicate copy (a second audit device's entry) to the cross stage."""

    name = "cross-stage-witness"

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    def witness(self, event: AuditEvent) -> None:
        self._pipeline.witness(event)


class Pipeline:
    """Stage 1 and stage 2 in one process: what ``vaultwatch replay`` runs (see the module).

    It is an engine to :func:`vaultwatch.service.replay.run_engine`: ``process`` per event (stage 1,
    then the cross records that became safe), ``flush`` at the end (stage 1, then every buffered
    record, then the cross engines).
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        seed: int = 0,
        make: Callable[[], list[Detector]] | None = None,
        lateness: float = DEFAULT_LATENESS,
        on_event: Callable[[AuditEvent], None] | None = None,
    ) -> None:
        cfg = dict(config or {})
        maker = make or (lambda: default_rules(cfg))
        local, cross, carried, scopes = build_split(maker)
        self.engine = Engine(cfg, seed=seed, detectors=local)
        self.stage = IdentityStage(self.engine, scopes)
        self.cross = CrossState(cross, carried, cfg, seed=seed, sources=1, lateness=lateness)
        self.hour: int | None = None
        self.off = 0
        self.max_ts = float("-inf")
        self.on_event = on_event
        self._witness = _Witness(self)

    @property
    def detectors(self) -> list[Any]:
        return [self._witness]

    def process(self, event: AuditEvent) -> list[Alert]:
        if self.on_event is not None:
            self.on_event(event)
        self.hour, out, records = self.stage.step(event, self.hour, 0, self.off)
        self.max_ts = max(self.max_ts, event.ts)
        for rec in records:
            out.extend(self.cross.offer(rec))
        out.extend(self.cross.offer(XMark(0, self.off, self.max_ts)))
        self.off += 1
        return out

    def witness(self, event: AuditEvent) -> None:
        for rec in self.stage.route(event, 0, self.off, witness=True):
            self.cross.offer(rec)
        self.off += 1

    def flush(self, now: float) -> list[Alert]:
        out = self.engine.flush(now)
        out.extend(self.cross.release(final=True))
        out.extend(self.cross.flush(now))
        return out

    # what the replay command reads of its engine
    def identities(self) -> list[str]:
        return self.engine.identities()

    def snapshot(self) -> bytes:
        return self.engine.snapshot()
