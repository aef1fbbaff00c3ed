"""The streaming worker behind ``vaultwatch run``: Kafka → detection → alert store → routing.

**Exactly-once state over at-least-once transport.** Each Kafka partition has its own detection
engine, and the engine's state is stored with the offset it corresponds to, in one row, in the
same database transaction as the alerts of that batch::

    poll batch ─▶ per partition: skip offsets already in state, parse, detect
               ─▶ one transaction: alerts (idempotent ids) [+ partition checkpoints + offsets]
               ─▶ after the commit: Kafka offset commit, routing (outbox), archive

A crash anywhere replays from the last checkpoint, whose state matches its offset exactly; the
replayed events regenerate the same alerts (detection is deterministic per partition), and
inserting an alert that exists is a no-op. So a restarted worker ends with the same set of alert
rows as an uninterrupted one: none lost, none doubled. Checkpoints are written every
``checkpoint_interval`` seconds (and on revoke and shutdown) rather than every batch, because a
snapshot costs time proportional to the partition's identities; alerts are written every batch.

**Scale-out.** Workers share a consumer group. The shipper keys messages by identity, so an
identity's baseline lives in exactly one partition, hence one worker. On revoke the worker
checkpoints the revoked partitions and releases them; on assign it loads their checkpoints; on
lost (the group evicted it) it drops their state without writing anything. Rebalance callbacks run
on kafka-python's I/O thread, so they only hand work to this loop; the revoke callback waits a
bounded time for the loop to write the checkpoint.

**Cross-identity stage.** With a ``cross_out`` producer, each partition's engine runs only the
identity-scoped detectors; events that detectors keyed by something else need (a source network, a
login account, a peer group: :mod:`detect.partition`) go to the repartition topic as records with
the identity's baseline facts, followed after each batch by a mark per output partition, and idle
marks for caught-up partitions. The producer is flushed before every checkpoint. Stage 2
(:class:`vaultwatch.service.stage2.CrossWorker`) runs the cross detectors over that topic in a
canonical order (:mod:`vaultwatch.service.cross`).

The module is long (about 650 lines) because the poll loop, the rebalance callbacks, the
checkpoints and the archive and cross-stage hand-offs share one state (the partitions owned, their
engines and offsets) and one lock; the exactly-once argument above holds only if they are read
together.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from alerts.errors import StoreError
from detect.alert import Alert
from detect.engine import Engine
from detect.rules import default_rules
from ingest.errors import ParseError, ShipError, SourceError
from ingest.parse import Parser
from ingest.sources.base import RawRecord

from ..errors import ArchiveError, VaultwatchError
from .cross import IdentityStage, build_split


class JoinStalled(VaultwatchError, SourceError):
    """The consumer's group join has not completed in far longer than it may take: the worker
    replaces the consumer (see :meth:`Worker.run`)."""


__all__ = ["Worker", "WorkerConfig", "PartitionState", "PeriodicTask", "checkpoint_key"]

log = logging.getLogger(__name__)


def checkpoint_key(group: str, topic: str, partition: int) -> str:
    return f"engine/{group}/{topic}/{partition}"


class _Checkpoint(msgspec.Struct):
    offset: int  # next offset to read
    hour: int | None
    engine: bytes
    verdict_id: int = 0  # analyst verdicts up to this id are folded into ``engine``
    #: The broker's id of the topic when this state was saved: a new id means the topic was
    #: deleted and created again (or the broker lost its data), so its offsets started over.
    topic_id: str | None = None
    #: Added to the log's offsets where they leave the worker (archive positions, the cross
    #: stage): the logs a partition had before its topic was recreated, counted in sequence.
    base: int = 0
    max_ts: float | None = None  # latest event time handled
    #: After a recreation: entries at or before this event time were handled from the old log,
    #: so their copies in the new one (a shipper re-sending from its own checkpoint) are skipped.
    resent_until: float | None = None


#: Built at import, in one thread: see ``detect.engine._STATE_DECODER``.
CHECKPOINT_DECODER: Final = msgspec.msgpack.Decoder(_Checkpoint)


@dataclass
class WorkerConfig:
    topic: str = "vault-audit"
    group_id: str = "vaultwatch"
    batch_size: int = 1000
    poll_timeout: float = 0.5
    checkpoint_interval: float = 5.0  # seconds; 0 = every batch
    revoke_wait: float = 3.0
    verdict_interval: float = 5.0  # seconds between reads of analyst verdicts from the store
    min_backoff: float = 0.5
    max_backoff: float = 10.0
    detect_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    #: Seconds a caught-up partition must have had no record before it is announced idle to the
    #: cross stage (which then stops waiting for it).
    idle_after: float = 5.0
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")


@dataclass
class PeriodicTask:
    """Housekeeping run by the worker's loop between batches (so it shares no state across
    threads): e.g. the KV-metadata rotation scan or archive retention. ``fn(now)`` may return
    alerts; they are stored and routed like the stream's. A failing task is logged and retried at
    its next interval; it never stops the worker."""

    name: str
    interval: float
    fn: Callable[[float], list[Alert] | None]
    next_at: float = 0.0
    runs: int = 0
    failures: int = 0


@dataclass
class PartitionState:
    topic: str
    partition: int
    engine: Any  # an Engine (stage 1) or a CrossState (stage 2)
    next_offset: int | None = None  # None until the first record (no checkpoint yet)
    hour: int | None = None
    verdict_id: int = 0
    last_record: RawRecord | None = None  # last handled record, for the Kafka commit
    dirty: bool = False
    stage: Any = None  # the IdentityStage routing to the cross stage, when there is one
    max_ts: float = float("-inf")  # latest event time handled
    seen_at: float = 0.0  # wall time of the last record (for idle marks)
    idle_sent: bool = False
    topic_id: str | None = None  # see _Checkpoint
    base: int = 0
    resent_until: float | None = None

    def engine_now(self) -> float:
        """The partition's event time (verdicts are applied at it, not at the wall clock)."""
        return float(self.hour * 3600) if self.hour is not None else 0.0


class Worker:
    """One detection worker. Build it, then :meth:`run` until :meth:`stop` (or SIGTERM)."""

    #: Skip records below a partition's checkpointed offset (its state has them). A worker whose
    #: state drops re-deliveries itself (the cross stage) sets it False: it then also follows a
    #: topic that was recreated and starts again below the checkpoint.
    skip_replayed: bool = True

    def __init__(
        self,
        config: WorkerConfig,
        *,
        source_factory: Callable[..., Any],
        store: Any,
        archive: Any | None = None,
        router: Any | None = None,
        dlq: Any | None = None,
        metrics: Any | None = None,
        detectors_factory: Callable[[], list[Any]] | None = None,
        clock: Callable[[], float] = time.time,
        tasks: list[PeriodicTask] | None = None,
        cross_out: Any | None = None,
    ) -> None:
        self.cfg = config
        self.cross_out = cross_out
        #: The stage-2 worker run beside this one (set by the wiring), or None.
        self.cross_worker: Worker | None = None
        self._scopes: tuple[str, ...] = ()
        self._idle_at = 0.0
        self.tasks = list(tasks or [])
        self._source_factory = source_factory
        self.store = store
        self.archive = archive
        self.router = router
        self.dlq = dlq
        self.metrics = metrics
        self._detectors_factory = detectors_factory
        self._clock = clock
        self.parser = Parser()
        self.parts: dict[tuple[str, int], PartitionState] = {}
        self._lock = threading.Lock()
        self._owned: set[tuple[str, int]] = set()
        self._revoke_request: list[tuple[str, int]] | None = None
        self._revoke_done = threading.Event()
        self._lost: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._source: Any = None
        self._last_checkpoint = 0.0
        self.last_commit_at: float | None = None
        self.last_progress_at: float = clock()
        self.stats: dict[str, int] = defaultdict(int)
        self._verdicts_at = 0.0
        self._verdicts_seen_at = 0.0
        self._lag: dict[tuple[str, int], int] = {}
        self._lag_at = 0.0
        self._recheck_at = 0.0
        self._closing = False

    # -- rebalance callbacks (kafka-python I/O thread: hand over, never block for long) ---------
    def _on_assigned(self, pairs: list[tuple[str, int]]) -> None:
        with self._lock:
            self._owned.update(pairs)
            self._lost.difference_update(pairs)

    def _on_revoked(self, pairs: list[tuple[str, int]]) -> None:
        if not pairs:
            return
        with self._lock:
            self._owned.difference_update(pairs)
            self._revoke_request = list(pairs)
            self._revoke_done.clear()
        if self._stop.is_set() or self._closing:
            return  # shutting down, or closing a stalled consumer: nothing to hand over
        # Let the loop checkpoint them; bounded, so a busy loop cannot stall the group.
        if not self._revoke_done.wait(self.cfg.revoke_wait):
            log.warning("revoked %s before their checkpoint was written; their new owner replays", pairs)

    def _on_lost(self, pairs: list[tuple[str, int]]) -> None:
        with self._lock:
            self._owned.difference_update(pairs)
            self._lost.update(pairs)

    def _apply_rebalance(self) -> None:
        with self._lock:
            revoked, self._revoke_request = self._revoke_request, None
            lost, self._lost = self._lost, set()
        for pair in lost:
            if self.parts.pop(pair, None) is not None:
                log.info("partition %s:%d lost: state dropped without a checkpoint", *pair)
            if self.archive is not None and hasattr(self.archive, "drop_buffered"):
                self.archive.drop_buffered(*pair)
        if revoked is not None:
            states = [self.parts[p] for p in revoked if p in self.parts]
            try:
                if states:
                    self._write(alerts=[], checkpoint=states)
            finally:
                for p in revoked:
                    self.parts.pop(p, None)
                self._revoke_done.set()
            log.info("partitions %s revoked: checkpointed and released", revoked)

    # -- state ---------------------------------------------------------------------------------
    def _checkpoint_key(self, topic: str, partition: int) -> str:
        return checkpoint_key(self.cfg.group_id, topic, partition)

    def _new_engine(self) -> Any:
        if self.cross_out is not None:
            local, _, _, self._scopes = build_split(self._full_detectors)
            return Engine(dict(self.cfg.detect_config), seed=self.cfg.seed, detectors=local)
        detectors = self._detectors_factory() if self._detectors_factory is not None else None
        return Engine(dict(self.cfg.detect_config), seed=self.cfg.seed, detectors=detectors)

    def _full_detectors(self) -> list[Any]:
        if self._detectors_factory is not None:
            return self._detectors_factory()
        return default_rules(dict(self.cfg.detect_config))

    def _partition(self, topic: str, partition: int) -> PartitionState:
        key = (topic, partition)
        st = self.parts.get(key)
        if st is not None:
            return st
        engine = self._new_engine()
        st = PartitionState(topic, partition, engine, seen_at=self._clock())
        if self.cross_out is not None:
            st.stage = IdentityStage(engine, self._scopes)
        with self.store.transaction(read_only=True) as tx:
            blob = tx.load_checkpoint(self._checkpoint_key(topic, partition))
        if blob is not None:
            cp = CHECKPOINT_DECODER.decode(blob)
            engine.restore(cp.engine)
            st.next_offset, st.hour, st.verdict_id = cp.offset, cp.hour, cp.verdict_id
            st.topic_id, st.base, st.resent_until = cp.topic_id, cp.base, cp.resent_until
            st.max_ts = cp.max_ts if cp.max_ts is not None else float("-inf")
            log.info("partition %s:%d resumes at offset %d from its checkpoint", topic, partition, cp.offset)
        if self.archive is not None and hasattr(self.archive, "rewind"):
            # What was archived past the checkpoint is processed, hence archived, again: once.
            since = float(st.hour * 3600) if st.hour is not None else None
            self.archive.rewind(topic, partition, st.base + (st.next_offset or 0), since=since)
        self.parts[key] = st
        return st

    def _snapshot(self, st: PartitionState) -> bytes:
        assert st.next_offset is not None
        return msgspec.msgpack.encode(
            _Checkpoint(
                st.next_offset,
                st.hour,
                st.engine.snapshot(),
                st.verdict_id,
                topic_id=st.topic_id,
                base=st.base,
                max_ts=st.max_ts if st.max_ts != float("-inf") else None,
                resent_until=st.resent_until,
            )
        )

    def _write(self, *, alerts: list[Alert], checkpoint: list[PartitionState]) -> None:
        """Alerts, and for ``checkpoint`` partitions their state and offsets, in one transaction;
        then the Kafka commit of those offsets."""
        cps = [st for st in checkpoint if st.next_offset is not None]
        if not alerts and not cps:
            return
        if cps and self.cross_out is not None:
            # The cross stage must hold every record a checkpoint covers before it is written.
            self.cross_out.flush()
        if cps and self.archive is not None:
            # So must the archive: after a crash, what follows the checkpoint is rewritten (rewind).
            self.archive.flush()
        with self.store.transaction() as tx:
            if alerts:
                tx.add_alerts(alerts)
            for st in cps:
                tx.save_checkpoint(self._checkpoint_key(st.topic, st.partition), self._snapshot(st))
            if cps:
                tx.save_offsets(self.cfg.group_id, {(st.topic, st.partition): st.next_offset for st in cps})
        for st in cps:
            st.dirty = False
            if st.last_record is not None and self._source is not None:
                try:
                    self._source.commit(st.last_record)
                except SourceError as exc:  # the database is the truth; Kafka's offset is advisory
                    log.warning("Kafka offset commit failed (state is safe in the store): %s", exc)
        if cps:
            self.last_commit_at = self._clock()
            self.stats["checkpoints"] += len(cps)

    # -- main loop -----------------------------------------------------------------------------
    def process_batch(self, batch: list[RawRecord]) -> list[Alert]:
        """Detect over one polled batch and write its alerts (and checkpoints when due)."""
        self._apply_rebalance()
        by_part: dict[tuple[str, int], list[RawRecord]] = defaultdict(list)
        for rec in batch:
            pos = rec.position
            by_part[(pos.topic, pos.partition)].append(rec)
        latest: dict[str, Alert] = {}
        touched: list[PartitionState] = []
        for (topic, partition), recs in by_part.items():
            with self._lock:
                owned = (topic, partition) in self._owned or not self._owned_mode
            if not owned:
                continue
            st = self._partition(topic, partition)
            if self._recreated(st):
                continue  # read again from the new log's beginning
            touched.append(st)
            for rec in recs:
                off = rec.position.offset
                if st.next_offset is not None and off < st.next_offset and self.skip_replayed:
                    self.stats["skipped_replayed"] += 1
                    continue  # already reflected in the checkpointed state
                if st.next_offset is not None and off > st.next_offset:
                    # Kafka is ahead of our state (its commit is advisory): go back.
                    log.warning(
                        "partition %s:%d at %d but state at %d: seeking back",
                        topic,
                        partition,
                        off,
                        st.next_offset,
                    )
                    self._source.seek(topic, partition, st.next_offset)
                    break
                for alert in self._handle(st, rec):
                    latest[alert.id] = alert
                st.next_offset = off + 1
                st.last_record = rec
                st.dirty = True
        alerts = list(latest.values())
        if self.cross_out is not None:
            self._cross_marks(touched)
        alerts += self._run_tasks(self._clock())
        if self.dlq is not None and hasattr(self.dlq, "flush"):
            # Refused records must be safe in the DLQ before their offsets can be committed.
            self.dlq.flush()
        now = self._clock()
        due = self._stop.is_set() or now - self._last_checkpoint >= self.cfg.checkpoint_interval
        if due:
            self._last_checkpoint = now
        self._write(alerts=alerts, checkpoint=[s for s in self.parts.values() if s.dirty] if due else [])
        if batch:
            self.last_progress_at = now
        if now - self._verdicts_at >= self.cfg.verdict_interval and self.parts:
            self._verdicts_at = now
            self._apply_verdicts(now)
        if now - self._lag_at >= 5.0:  # the consumer is not thread-safe: measure lag here
            self._lag_at = now
            self._lag = self._measure_lag()
        if not batch and self._owned_mode and now - self._recheck_at >= 1.0:
            self._recheck_at = now
            self._check_owned_logs()
            stalled = getattr(self._source, "join_stalled", None)
            waited = stalled() if stalled is not None else None
            if waited is not None:
                topic, group = self.cfg.topic, self.cfg.group_id
                raise JoinStalled(f"the consumer of {topic} has been joining group {group} for {waited:.0f}s")
        if self.router is not None and alerts:
            self.router.ingest(alerts, now)
        if self.metrics is not None:
            self._observe(batch, alerts)
        return alerts

    def _check_owned_logs(self) -> None:
        """Every owned partition's state against its topic's current id, records or not. After a
        broker lost its data, a consumer fetching at an offset of the old log past the new log's
        end gets nothing (Tansu does not answer out-of-range), so a check made only when records
        arrive could wait until the new log grows that long: minutes for the repartition topic,
        whose records travel many to a message (a stage-2 worker sat idle in CI)."""
        with self._lock:
            owned = sorted(self._owned)
        for topic, partition in owned:
            self._recreated(self._partition(topic, partition))

    def _observe(self, batch: list[RawRecord], alerts: list[Alert]) -> None:
        assert self.metrics is not None
        self.metrics.observe_batch(self, batch, alerts)

    def _recreated(self, st: PartitionState) -> bool:
        """True when ``st``'s topic has a new id since its state was saved: the topic was deleted
        and created again, or the broker came back without its data. Its offsets then start over,
        so the records below the checkpoint are new and must not be skipped as replayed. The
        partition is read again from its beginning; entries whose event time is at or before the
        latest one already handled are taken as re-sent copies and skipped (see ``_handle``)."""
        topic_id = getattr(self._source, "topic_id", None)
        tid = topic_id(st.topic) if topic_id is not None else None
        if tid is None or tid == st.topic_id:
            return False
        if st.topic_id is None:  # first sight (or a state saved before topic ids were kept)
            st.topic_id = tid
            return False
        old = st.next_offset if st.next_offset is not None else 0
        log.warning(
            "topic %s was recreated (id %s, now %s), or its broker lost its data: partition %d is "
            "read again from its beginning (the state had read %d records of the old log); entries "
            "older than those already handled are taken as re-sent and skipped",
            st.topic,
            st.topic_id,
            tid,
            st.partition,
            old,
        )
        self.stats["topic_recreated"] += 1
        st.topic_id, st.base, st.next_offset = tid, st.base + old, None
        if st.max_ts != float("-inf"):
            st.resent_until = st.max_ts
        st.last_record, st.dirty = None, True
        self._source.seek_to_beginning(st.topic, st.partition)
        return True

    def _cross_marks(self, touched: list[PartitionState]) -> None:
        """Marks for the partitions this batch advanced; idle marks for caught-up quiet ones."""
        out = self.cross_out
        assert out is not None
        now = self._clock()
        # Every mark carries this worker's wall time: the cross stage judges idle marks' age by
        # the times its marks carry, never by its own clock (see XMark).
        sent_at = time.time()
        for st in touched:
            if st.next_offset is not None:
                out.mark(st.partition, st.base + st.next_offset - 1, st.max_ts, at=sent_at)
                st.seen_at, st.idle_sent = now, False
        if now - self._idle_at < 1.0:
            return
        self._idle_at = now
        with self._lock:
            owned = sorted(self._owned) if self._owned_mode else sorted(self.parts)
        states = [self._partition(t, p) for t, p in owned]
        self._lag = lag = self._measure_lag() if self._owned_mode else {}
        wall = time.time()
        for st in states:
            if now - st.seen_at < self.cfg.idle_after:
                continue
            if self._recreated(st):
                # Its state is from a log the broker no longer has: a position past the new log's
                # end reads nothing, and "no lag" there is no promise. Read again, never idle.
                continue
            if lag.get((st.topic, st.partition), 0) == 0:
                # Repeated every second while idle: the cross stage trusts an idle mark only
                # briefly, so a worker that dies does not leave its partitions "idle" forever.
                off = st.base + (st.next_offset if st.next_offset is not None else 0) - 1
                out.mark(st.partition, off, st.max_ts, idle=True, at=wall)
                if st.idle_sent:
                    continue
                st.idle_sent = True
                log.info(
                    "partition %s:%d idle at offset %d: announced to the cross stage",
                    st.topic,
                    st.partition,
                    off,
                )

    def _run_tasks(self, now: float) -> list[Alert]:
        out: list[Alert] = []
        for task in self.tasks:
            if now < task.next_at:
                continue
            task.next_at = now + task.interval
            try:
                out.extend(task.fn(now) or [])
                task.runs += 1
            except Exception as exc:  # noqa: BLE001 - housekeeping must never stop detection
                task.failures += 1
                log.warning(
                    "periodic task %s failed (%s); next try in %.0fs",
                    task.name,
                    type(exc).__name__,
                    task.interval,
                )
        return out

    def _apply_verdicts(self, now: float) -> None:
        """Feed analysts' verdicts back to the engine owning the alert's identity.

        A false positive scopes a suppression and may fold the events into the baseline; a true
        positive keeps the identity's events out of it. Each partition remembers the last verdict
        it applied (in its checkpoint), so a replay applies each verdict once.
        """
        floor = min(st.verdict_id for st in self.parts.values())
        try:
            # Read from a little before the newest verdict seen (API servers' clocks differ);
            # the per-partition id watermark makes re-reading harmless.
            since = max(0.0, self._verdicts_seen_at - 300.0) if floor else 0.0
            records = [v for v in self.store.verdicts_since(since) if v.id > floor]
        except StoreError as exc:
            log.warning("cannot read verdicts: %s", exc)
            return
        for v in records:
            if v.verdict not in ("false_positive", "true_positive"):
                continue
            for st in self.parts.values():
                if v.id <= st.verdict_id or not self._owns_verdict(st, v):
                    continue
                try:
                    alert = self.store.get_alert(v.alert_id).alert
                    self._take_verdict(st, alert, v)
                except Exception as exc:  # noqa: BLE001 - one bad verdict must not stop the worker
                    log.warning("verdict %d on %s not applied: %s", v.id, v.alert_id, type(exc).__name__)
                st.dirty = True
                self.stats["verdicts"] += 1
        if records:
            self._verdicts_seen_at = max(self._verdicts_seen_at, max(v.at for v in records))
        for st in self.parts.values():
            if records:
                st.verdict_id = max(st.verdict_id, records[-1].id)
                st.dirty = True

    def _owns_verdict(self, st: PartitionState, v: Any) -> bool:
        """Stage 1: the partition whose engine holds the alert's identity takes its verdict."""
        return bool(v.identity_key in st.engine.identities())

    def _take_verdict(self, st: PartitionState, alert: Alert, v: Any) -> None:
        st.engine.verdict(alert, v.verdict, now=st.engine_now(), comment=v.comment)

    def _handle(self, st: PartitionState, rec: RawRecord) -> list[Alert]:
        self.stats["records"] += 1
        try:
            ev = self.parser.parse(rec.data, source=rec.source)
        except ParseError as err:
            self.stats["quarantined"] += 1
            log.info("record at %s refused (%s): sent to the quarantine", rec.position, err.reason)
            if self.dlq is not None:
                self.dlq.put(rec.data, err, source=rec.source, position=str(rec.position))
            else:
                log.warning("unparseable record at %s: %s (no DLQ configured)", rec.position, err.reason)
            return []
        if st.resent_until is not None and ev.ts <= st.resent_until:
            self.stats["skipped_resent"] += 1
            return []
        self.stats["events"] += 1
        st.max_ts = max(st.max_ts, ev.ts)
        if st.stage is not None:
            st.hour, found, records = st.stage.step(ev, st.hour, st.partition, st.base + rec.position.offset)
            if records and self.cross_out is not None:
                self.cross_out.send(records)
            self._archive(st, ev, rec)
            return list(found)
        out: list[Alert] = []
        hour = int(ev.ts // 3600)
        # Time-driven work at event-time hour boundaries: deterministic for a partition's stream.
        if st.hour is not None and hour > st.hour:
            out.extend(st.engine.flush(hour * 3600.0))
        if st.hour is None or hour > st.hour:
            st.hour = hour
        out.extend(st.engine.process(ev))
        self._archive(st, ev, rec)
        return out

    def _archive(self, st: PartitionState, ev: Any, rec: RawRecord) -> None:
        if self.archive is None:
            return
        pos = rec.position
        if all(hasattr(pos, a) for a in ("topic", "partition", "offset")):
            self.archive.append(ev, position=(pos.topic, pos.partition, st.base + pos.offset))
        else:
            self.archive.append(ev)

    @property
    def _owned_mode(self) -> bool:
        return (
            self._source is not None
            and getattr(self._source, "settings", None) is not None
            and bool(getattr(self._source.settings, "group_id", None))
        )

    def run(self) -> None:
        """Consume until :meth:`stop`; then finish the batch, checkpoint everything, close.

        A failure to poll, to write the store or to flush the DLQ never ends the worker: it
        rewinds every partition to its last checkpoint (so no half-handled batch leaks into the
        state) and retries with capped exponential backoff, without busy-looping.
        """
        self._source = self._new_source()
        self._last_checkpoint = self._clock()
        backoff = self.cfg.min_backoff
        try:
            while not self._stop.is_set():
                try:
                    if self._source is None:  # replaced after a stalled join (below)
                        self._source = self._new_source()
                        if self._stop.is_set():
                            break
                    for batch in self._source.batches(self.cfg.batch_size, self.cfg.poll_timeout):
                        self.process_batch(batch)
                        backoff = self.cfg.min_backoff
                        if self.router is not None:
                            self.router.tick(self._clock())
                        if self.archive is not None:
                            self.archive.tick()
                        if self._stop.is_set():
                            break
                    else:
                        break  # the source ended (stopped)
                except JoinStalled as exc:
                    self.stats["consumers_replaced"] += 1
                    log.warning(
                        "%s, far longer than a join may take (%.0fs): a new consumer joins in its place",
                        exc,
                        getattr(self._source, "join_limit", 0.0),
                    )
                    self._drop_source()
                    continue
                except (SourceError, ShipError, StoreError, ArchiveError) as exc:
                    self.stats["errors"] += 1
                    log.warning("%s; rewinding to the last checkpoint and retrying in %.1fs", exc, backoff)
                    if self._source is None:  # a new consumer could not be made yet
                        if self._stop.wait(backoff):
                            break
                        backoff = min(self.cfg.max_backoff, backoff * 2)
                        continue
                    self._rewind()
                    if self._stop.wait(backoff):
                        break
                    backoff = min(self.cfg.max_backoff, backoff * 2)
        finally:
            self._shutdown()

    def _new_source(self) -> Any:
        return self._source_factory(
            on_assigned=self._on_assigned, on_revoked=self._on_revoked, on_lost=self._on_lost
        )

    def _drop_source(self) -> None:
        """Close a consumer whose group join stalled; :meth:`run` makes a new one. What this worker
        held is dropped as on a lost partition (its new owner, maybe this worker again, resumes
        from the checkpoint); the closing consumer's revoke must not wait for this loop."""
        with self._lock:
            held = set(self._owned) | set(self.parts)
            self._owned.clear()
            self._lost.clear()
            self._revoke_request = None
        for pair in sorted(held):
            self.parts.pop(pair, None)
            if self.archive is not None and hasattr(self.archive, "drop_buffered"):
                self.archive.drop_buffered(*pair)
        old, self._source = self._source, None
        self._closing = True
        try:
            old.close()
        except Exception as exc:  # noqa: BLE001 - a wedged consumer may fail to close cleanly
            log.info("the stalled consumer did not close cleanly (%s)", type(exc).__name__)
        finally:
            self._closing = False
            with self._lock:
                self._owned.clear()
                self._revoke_request = None
            self._revoke_done.set()

    def _rewind(self) -> None:
        """Forget in-memory progress and seek every partition this worker reads back to its
        checkpoint: partitions reload from there when next seen.

        Every partition, not only those with state: a batch that failed part-way (a full archive
        disk raises while one partition's records are handled) has already taken the records of
        the partitions after it from Kafka. Their position must go back too, or those records are
        never seen again (a partition without a checkpoint takes whatever offset comes first).
        """
        pairs = {(st.topic, st.partition) for st in self.parts.values()}
        if self._owned_mode:
            with self._lock:
                pairs |= self._owned
        elif self._source is not None and hasattr(self._source, "assignment"):
            pairs |= set(self._source.assignment())
        self.parts.clear()
        if self.archive is not None and hasattr(self.archive, "drop_buffered"):
            # Rows buffered since the checkpoint come again with the replayed records (a full
            # disk, a store outage): drop them, or the retry would archive them twice.
            for pair in pairs:
                self.archive.drop_buffered(*pair)
        if self._source is None:
            return
        committed = self._source.committed_offsets() if hasattr(self._source, "committed_offsets") else {}
        topic_id = getattr(self._source, "topic_id", None)
        for topic, partition in sorted(pairs):
            try:
                with self.store.transaction(read_only=True) as tx:
                    blob = tx.load_checkpoint(self._checkpoint_key(topic, partition))
                cp = CHECKPOINT_DECODER.decode(blob) if blob is not None else None
                offset: int | None = cp.offset if cp is not None else 0
                tid = topic_id(topic) if topic_id is not None and cp is not None and cp.topic_id else None
                if cp is not None and tid is not None and tid != cp.topic_id:
                    # The checkpoint's offset is one of a log the broker lost (a rewind right after
                    # the topic came back empty): the new log is read from its beginning, and the
                    # partition's state sees the new id when it loads (see _recreated). Sought to
                    # the old offset, the partition read nothing while the new log was shorter, and
                    # looked caught up: its idle marks let the cross stage pass its records.
                    log.info(
                        "%s:%d: its checkpoint is of an earlier log: reading from the beginning",
                        topic,
                        partition,
                    )
                    offset = None
            except Exception as exc:  # noqa: BLE001 - the store may be what failed
                # Kafka's commit follows the store's, so it is at or before the checkpoint: the
                # records between are skipped as replayed once the checkpoint can be read.
                offset = committed.get((topic, partition), 0)
                log.info(
                    "checkpoint of %s:%d unreadable (%s): seeking to %d, at or before it",
                    topic,
                    partition,
                    type(exc).__name__,
                    offset,
                )
            try:
                if offset is None:
                    self._source.seek_to_beginning(topic, partition)
                else:
                    self._source.seek(topic, partition, offset)
            except Exception as exc:  # noqa: BLE001 - no longer assigned: its new owner reads it
                log.info("could not seek %s:%d (%s)", topic, partition, type(exc).__name__)

    def _shutdown(self) -> None:
        try:
            self._apply_rebalance()
            self._write(alerts=[], checkpoint=[s for s in self.parts.values() if s.dirty])
            if self.archive is not None:
                self.archive.flush()
        finally:
            if self.cross_out is not None:
                self.cross_out.close()
            if self.dlq is not None and hasattr(self.dlq, "close"):
                self.dlq.close()
            if self._source is not None:
                self._source.close()
            log.info("worker %s stopped: %s", self.cfg.worker_id, dict(self.stats))

    def stop(self) -> None:
        """Finish the current batch, commit, close (safe from a signal handler)."""
        self._stop.set()
        if self._source is not None:
            self._source.stop()

    # -- health --------------------------------------------------------------------------------
    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end of each owned partition, as last measured by the loop."""
        return dict(self._lag)

    def _measure_lag(self) -> dict[tuple[str, int], int]:
        consumer = getattr(self._source, "_consumer", None)
        if consumer is None:
            return {}
        try:
            # kafka-python stays lazy, as everywhere (ingest.kafka_config.import_kafka): `replay` and
            # the API import this module without using Kafka. Here the source has loaded it already.
            from kafka import TopicPartition

            with self._lock:
                owned = [TopicPartition(t, p) for t, p in sorted(self._owned)]
            ends = consumer.end_offsets(owned) if owned else {}
        except Exception:  # noqa: BLE001 - lag is best-effort for metrics
            return {}
        out = {}
        for tp, end in ends.items():
            st = self.parts.get((tp.topic, tp.partition))
            pos = st.next_offset if st is not None and st.next_offset is not None else 0
            out[(tp.topic, tp.partition)] = max(0, int(end) - pos)
        return out

    def healthy(self, stall_seconds: float = 60.0) -> tuple[bool, str]:
        """Unhealthy when there is lag and nothing was processed for ``stall_seconds``."""
        idle = self._clock() - self.last_progress_at
        behind = sum(self.lag().values())
        if behind > 0 and idle > stall_seconds:
            return False, f"stalled: {behind} messages behind and nothing processed for {idle:.0f}s"
        return True, "ok"
