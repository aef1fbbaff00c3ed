"""``vaultwatch replay --jobs N``: identities sharded across N processes, the cross stage too.

Each child process reads and parses every file (parsing is a small share of a replay) and runs
the one replay loop, :func:`~vaultwatch.service.replay.run_engine`, with :class:`_ShardStage` as
its engine: it numbers the events (the same numbers in every child) and runs stage 1
(:class:`~vaultwatch.service.cross.IdentityStage`) over the identities of its shard only, as one
partition of ``vaultwatch run`` would. So second copies are dropped, the engine is flushed past
the last event and each alert is kept in its final state exactly as with ``--jobs 1``. The
child's cross records go to one spool file per stage-2 partition
(:func:`~vaultwatch.service.cross.partition_for`, as ``run`` routes them onto the repartition
topic). Once every child is done, the same N processes run stage 2: one
:class:`~vaultwatch.service.cross.CrossState` per partition (one source per shard) over that
partition's spools in the canonical order, flushed where a one-process replay flushes, the
partitions with the most records first. There are :data:`PARTS_PER_JOB` partitions per process,
so while one process works through the partition of the organisation-wide key (one key, so one
partition, often the largest) the others share the rest. The alert ids are those of ``--jobs 1``
for every detector whose state the split keeps whole (every pluggable detector); the behavioural
core's peer and organisation priors are per shard, as they are per partition in ``run``.

Each phase's wall and CPU seconds are logged at INFO (one JSON object after :data:`TIMINGS_LOG`),
which ``python -m bench`` reads to say where a ``--jobs`` run's time went.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import multiprocessing
import os
import struct
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from detect.alert import Alert
from detect.engine import Engine
from ingest.event import AuditEvent
from ingest.parse import Parser
from ingest.quarantine import MemoryQuarantine, Quarantine

from .cross import (
    DEFAULT_LATENESS,
    CrossState,
    IdentityStage,
    XMark,
    XRecord,
    build_split,
    decode,
    encode,
    partition_for,
)
from .replay import FINAL_FLUSH, ReplayResult, read_events, run_engine

__all__ = ["PARTS_PER_JOB", "TIMINGS_LOG", "ShardResult", "replay_jobs", "shard_of"]

log = logging.getLogger(__name__)

_LEN: Final = struct.Struct(">I")
_CHUNK: Final = 2000  # records read from one spool before the next
#: Stage-2 partitions per process: the partitions are handed out largest first, so a partition
#: that cannot be split (the organisation-wide key) runs beside several small ones.
PARTS_PER_JOB: Final = 4
#: The INFO log message that precedes the JSON of a ``replay --jobs`` run's phase timings.
TIMINGS_LOG: Final = "replay --jobs timings:"


def shard_of(identity_key: str, jobs: int) -> int:
    """The shard of an identity (stable across processes and runs)."""
    return zlib.crc32(identity_key.encode()) % jobs


@dataclass
class ShardResult:
    """What one child saw and raised."""

    shard: int
    alerts: list[Alert] = field(default_factory=list)
    lines: int = 0
    events: int = 0
    duplicates: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    identities: int = 0
    identity_keys: list[str] = field(default_factory=list)
    first_ts: float | None = None
    last_ts: float | None = None
    #: Spool files, one per stage-2 partition, and the records written to each.
    spools: list[str] = field(default_factory=list)
    records: list[int] = field(default_factory=list)
    snapshot: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Wall and CPU seconds of this child's stage 1 (read, parse, its identities' detectors,
    #: spooling): CPU well under wall means the process waited for a core.
    seconds: float = 0.0
    cpu_seconds: float = 0.0


@dataclass
class _Job:
    files: list[Path]
    shard: int
    jobs: int
    config: dict[str, Any]
    seed: int
    make: Callable[[], list[Any]]
    spool_dir: str
    prefix: str | None
    quarantine: Quarantine | None
    on_engine: Callable[[Engine, int], dict[str, Any]] | None
    on_event: Callable[[int], Callable[[Any], None] | None] | None
    keep_snapshot: bool
    parts: int
    lateness: float


#: The jobs of the running :func:`replay_jobs`, inherited by its forked children (closures and open
#: quarantines do not pickle).
_JOBS: list[_Job] = []


def _run_index(index: int) -> ShardResult:
    return _run_shard(_JOBS[index])


class _ShardStage:
    """One child's stage 1, as the engine of :func:`~vaultwatch.service.replay.run_engine`.

    Every event is numbered (the same numbers in every child, second copies included); the events
    of this shard's identities go through :class:`~vaultwatch.service.cross.IdentityStage`, the
    others only count. Cross records go to the spool through ``put``.
    """

    def __init__(
        self,
        job: _Job,
        engine: Engine,
        stage: IdentityStage,
        put: Callable[[XRecord], None],
    ) -> None:
        self.engine = engine
        self.stage = stage
        self.put = put
        self.shard = job.shard
        self.jobs = job.jobs
        self.archive = job.on_event(job.shard) if job.on_event is not None else None
        self.hour: int | None = None
        self.ordinal = 0
        self.first_ts: float | None = None

    def process(self, ev: AuditEvent) -> list[Alert]:
        ordinal = self.ordinal
        self.ordinal += 1
        if self.first_ts is None:
            self.first_ts = ev.ts
        if shard_of(ev.identity.key, self.jobs) != self.shard:
            return []
        if self.archive is not None:
            self.archive(ev)
        self.hour, found, records = self.stage.step(ev, self.hour, self.shard, ordinal)
        for rec in records:
            self.put(rec)
        return found

    def duplicate(self, ev: AuditEvent) -> None:
        """A second copy ``run_engine`` dropped: shard 0 alone hands it to the cross stage's
        completeness detectors (their ``witness``); every shard numbers it."""
        if self.shard == 0:
            for rec in self.stage.route(ev, 0, self.ordinal, witness=True):
                self.put(rec)
        self.ordinal += 1

    def flush(self, now: float) -> list[Alert]:
        return self.engine.flush(now)


def _raise_gc() -> tuple[int, int, int]:
    """Replay's garbage-collector thresholds (see :func:`~vaultwatch.service.replay.replay`);
    the ones they replace."""
    saved = gc.get_threshold()
    gc.set_threshold(max(saved[0], 50_000), max(saved[1], 20), max(saved[2], 100))
    return saved


def _run_shard(job: _Job) -> ShardResult:
    started, cpu = time.perf_counter(), time.process_time()
    saved = _raise_gc()
    local, _, _, scopes = build_split(job.make)
    engine = Engine(dict(job.config), seed=job.seed, detectors=local)
    res = ShardResult(shard=job.shard)
    failures: Counter[str] = Counter()
    counter = [0]
    quarantine = job.quarantine if job.shard == 0 and job.quarantine is not None else MemoryQuarantine()
    spools = [Path(job.spool_dir) / f"shard-{job.shard}-x{p}.xid" for p in range(job.parts)]
    records = [0] * job.parts
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(open(path, "wb", buffering=1 << 18)) for path in spools]
        parts = job.parts

        def put(rec: XRecord) -> None:
            p = partition_for(rec.scope, rec.key, parts)
            data = encode(rec)
            out = outs[p]
            out.write(_LEN.pack(len(data)))
            out.write(data)
            records[p] += 1

        events = read_events(
            job.files,
            parser=Parser(prefix=job.prefix),
            quarantine=quarantine,
            failures=failures,
            counter=counter,
        )
        feed = _ShardStage(job, engine, IdentityStage(engine, scopes), put)
        run = run_engine(events, feed, on_duplicate=feed.duplicate)
    if job.quarantine is not None and job.shard == 0:
        job.quarantine.close()
    res.alerts = list(run.alerts.values())
    res.events = run.events
    res.first_ts, res.last_ts = feed.first_ts, run.last_ts
    res.lines = counter[0]
    res.duplicates = run.duplicates
    res.failures = dict(failures)
    res.identity_keys = engine.identities()
    res.identities = len(res.identity_keys)
    res.spools = [str(path) for path in spools]
    res.records = records
    if job.keep_snapshot:
        snap = Path(job.spool_dir) / f"shard-{job.shard}.engine"
        snap.write_bytes(engine.snapshot())
        res.snapshot = str(snap)
    if job.on_engine is not None:
        res.extra = job.on_engine(engine, job.shard)
    gc.set_threshold(*saved)
    res.seconds = time.perf_counter() - started
    res.cpu_seconds = time.process_time() - cpu
    return res


def _run_cross(task: tuple[int, list[str], float | None]) -> tuple[int, list[Alert], float, float, int]:
    """Stage 2 of one partition, from its spools (one per shard, in shard order):
    ``(partition, alerts in their final state, wall seconds, CPU seconds, records)``."""
    part, spools, last = task
    started, cpu = time.perf_counter(), time.process_time()
    saved = _raise_gc()
    job = _JOBS[0]
    _, cross, carried, _ = build_split(job.make)
    state = CrossState(
        cross, carried, dict(job.config), seed=job.seed, sources=job.jobs, lateness=job.lateness
    )
    alerts: dict[str, Alert] = {}
    streams = [_spool(path) for path in spools]
    live = list(range(len(spools)))
    n = 0
    while live:
        for s in list(live):
            chunk = next(streams[s], None)
            if chunk is None:
                live.remove(s)
                found = state.offer(XMark(s, 1 << 62, float("inf"), idle=True))
            else:
                n += len(chunk)
                for rec in chunk:
                    for a in state.offer(rec):
                        alerts[a.id] = a
                found = state.offer(XMark(s, chunk[-1].off, max(r.ts for r in chunk)))
            for a in found:
                alerts[a.id] = a
    for a in state.release(final=True):
        alerts[a.id] = a
    if last is not None:
        for a in state.flush(last + FINAL_FLUSH):
            alerts[a.id] = a
    gc.set_threshold(*saved)
    return part, list(alerts.values()), time.perf_counter() - started, time.process_time() - cpu, n


def _spool(path: str) -> Iterator[list[XRecord]]:
    with open(path, "rb", buffering=1 << 20) as f:
        chunk: list[XRecord] = []
        while True:
            head = f.read(_LEN.size)
            if not head:
                break
            msg = decode(f.read(_LEN.unpack(head)[0]))
            assert isinstance(msg, XRecord)
            if len(chunk) >= _CHUNK and msg.off != chunk[-1].off:
                yield chunk  # whole offsets only: a mark after a chunk covers all its records
                chunk = []
            chunk.append(msg)
        if chunk:
            yield chunk


def replay_jobs(
    files: list[Path],
    jobs: int,
    *,
    config: dict[str, Any],
    make: Callable[[], list[Any]],
    seed: int = 0,
    prefix: str | None = None,
    quarantine: Quarantine | None = None,
    lateness: float = DEFAULT_LATENESS,
    on_engine: Callable[[Engine, int], dict[str, Any]] | None = None,
    on_event: Callable[[int], Callable[[Any], None] | None] | None = None,
    keep_snapshots: bool = False,
) -> tuple[ReplayResult, list[ShardResult]]:
    """Replay ``files`` with ``jobs`` stage-1 processes and one cross stage (see the module).

    ``make`` builds the full detector list (called in each child, once per stage, and once per
    stage-2 partition); ``on_engine`` runs in each child at the end of stage 1 and returns plain
    data (a drift report, say); ``on_event(shard)`` returns a per-child callable handed each of
    its shard's events (an archive's ``append``).
    """
    started = time.perf_counter()
    parts = jobs * PARTS_PER_JOB
    with tempfile.TemporaryDirectory(prefix="vw-replay-jobs-") as spool_dir:
        todo = [
            _Job(
                files,
                s,
                jobs,
                config,
                seed,
                make,
                spool_dir,
                prefix,
                quarantine,
                on_engine,
                on_event,
                keep_snapshots,
                parts,
                lateness,
            )
            for s in range(jobs)
        ]
        _JOBS[:] = todo
        cross: dict[int, tuple[list[Alert], float, float, int]] = {}
        try:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(jobs) as pool:
                shards = pool.map(_run_index, range(jobs), chunksize=1)
                stage1 = time.perf_counter()
                last = max((r.last_ts for r in shards if r.last_ts is not None), default=None)
                sizes = [sum(r.records[p] for r in shards) for p in range(parts)]
                # Largest first: the biggest partition starts at once, the small ones fill in.
                order = sorted(range(parts), key=lambda p: (-sizes[p], p))
                tasks = [(p, [r.spools[p] for r in shards], last) for p in order]
                for part, found, wall, cpu, n in pool.imap_unordered(_run_cross, tasks, chunksize=1):
                    cross[part] = (found, wall, cpu, n)
        finally:
            _JOBS.clear()
        stage2 = time.perf_counter()
        alerts: dict[str, Alert] = {}
        for res in shards:
            for a in res.alerts:
                alerts[a.id] = a
        for p in range(parts):  # partition order, whichever finished first
            for a in cross[p][0]:
                alerts[a.id] = a
        for res in shards:
            for path in res.spools:
                os.unlink(path)
        if keep_snapshots:
            for res in shards:
                res.extra["snapshot"] = Path(res.snapshot).read_bytes()
    timings = {
        "jobs": jobs,
        "stage1_seconds": stage1 - started,
        "stage1_child_seconds": [r.seconds for r in shards],
        "stage1_child_cpu_seconds": [r.cpu_seconds for r in shards],
        "stage2_seconds": stage2 - stage1,
        "stage2_partition_seconds": [cross[p][1] for p in range(parts)],
        "stage2_partition_cpu_seconds": [cross[p][2] for p in range(parts)],
        "stage2_partition_records": [cross[p][3] for p in range(parts)],
        "merge_seconds": time.perf_counter() - stage2,
    }
    log.info("%s %s", TIMINGS_LOG, json.dumps(timings))
    first = shards[0]
    result = ReplayResult(
        lines=first.lines,
        events=first.events,
        duplicates=first.duplicates,
        parse_failures=dict(first.failures),
        identities=len({k for r in shards for k in r.identity_keys}),
        alerts=list(alerts.values()),
        seconds=time.perf_counter() - started,
    )
    return result, shards
