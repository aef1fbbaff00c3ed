"""Kafka plumbing of the cross-identity stage (:mod:`vaultwatch.service.cross`).

:class:`CrossProducer` is stage 1's side: records and marks onto the repartition topic
(``<topic>.xid`` by default), flushed before stage 1 commits a checkpoint, so a checkpoint never
covers a record the broker has not acknowledged. :class:`CrossWorker` is stage 2: a
:class:`~vaultwatch.service.worker.Worker` whose per-partition "engine" is a
:class:`~vaultwatch.service.cross.CrossState`, checkpointed with its offsets in the same store
transaction as its alerts, exactly as stage 1.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from detect.alert import Alert
from detect.types import Detector
from ingest.errors import ShipError
from ingest.kafka_config import import_kafka

from ..errors import ConfigError
from .cross import CrossState, XBatch, XMark, XRecord, build_split, decode, encode, partition_for
from .worker import PartitionState, Worker

__all__ = [
    "CrossLayout",
    "CrossProducer",
    "CrossWorker",
    "cross_checkpoint_key",
    "cross_topic",
    "ensure_cross_topic",
    "layout_key",
    "pin_layout",
]

log = logging.getLogger(__name__)


def cross_checkpoint_key(group: str, topic: str, partition: int) -> str:
    """Where a stage-2 partition's state is checkpointed (beside, not among, engine checkpoints)."""
    return f"cross/{group}/{topic}/{partition}"


def cross_topic(topic: str) -> str:
    """The default repartition topic of ``topic``."""
    return f"{topic}.xid"


def topic_partitions(kafka: Any, topic: str) -> int:
    """The number of partitions of ``topic`` (0 when it does not exist)."""
    k = import_kafka()
    admin = k.KafkaAdminClient(**kafka.common())
    try:
        meta = admin.describe_topics([topic])
    finally:
        admin.close()
    for t in meta:
        if (t.get("name") or t.get("topic")) == topic and not t.get("error_code"):
            return len(t.get("partitions") or [])
    return 0


def ensure_cross_topic(kafka: Any, topic: str, partitions: int) -> int:
    """Create the repartition topic with ``partitions`` when it is missing, and grow it to
    ``partitions`` when it has fewer; its partition count. (More is harmless: only the first
    ``partitions`` are written, and the others stay empty.)"""
    have = topic_partitions(kafka, topic)
    if have >= partitions:
        return have
    k = import_kafka()
    admin = k.KafkaAdminClient(**kafka.common())
    try:
        if have:
            log.warning(
                "%s has %d partitions, fewer than this group's %d: adding them", topic, have, partitions
            )
            try:
                admin.create_partitions({topic: k.admin.NewPartitions(total_count=partitions)})
            except k.errors.KafkaError as exc:  # a broker without CreatePartitions: the caller says
                log.warning("cannot add partitions to %s: %s", topic, type(exc).__name__)
        else:
            admin.create_topics([k.admin.NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    except k.errors.TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    return topic_partitions(kafka, topic) or partitions


class CrossLayout(msgspec.Struct, array_like=True):
    """A group's fixed shape: partitions of the repartition topic and of the input topic.

    Stage 2's state is kept per repartition partition and keyed by what lands there, and it
    expects a mark from every input partition: neither count may change under a group. It is
    pinned in the store the first time a group starts (:func:`pin_layout`). Before, a broker that
    lost its data let the first worker to produce auto-create the repartition topic with the
    broker's default count (Tansu does so whatever the client asks); workers started after it took
    that count, workers started before kept theirs, one key went to two partitions, two stage-2
    engines judged it, and one finding became two alerts. Every worker now writes to the pinned
    number of partitions, whatever the topic has.
    """

    partitions: int
    sources: int


_LAYOUT_DEC: Final = msgspec.msgpack.Decoder(CrossLayout)


def layout_key(group: str) -> str:
    """Where a group's :class:`CrossLayout` is kept (not under ``engine/`` or ``cross/``)."""
    return f"layout/{group}"


def pin_layout(store: Any, kafka: Any, topic: str, xtopic: str, group: str) -> CrossLayout:
    """The group's layout: read from the store, or taken from the topics and saved on first start.

    The repartition topic is created with the pinned count when missing. :class:`ConfigError`
    naming the fix when a topic's partition count differs from the pinned one.
    """
    found = topic_partitions(kafka, topic)
    sources = found or 1
    key = layout_key(group)
    with store.transaction(read_only=True) as tx:
        blob = tx.load_checkpoint(key)
    if blob is None:
        layout = CrossLayout(ensure_cross_topic(kafka, xtopic, sources), sources)
        if found:  # pinned once the input topic exists (not while a shipper has yet to create it)
            with store.transaction() as tx:
                tx.save_checkpoint(key, msgspec.msgpack.encode(layout))
        return layout
    layout = _LAYOUT_DEC.decode(blob)
    problems = []
    if sources != layout.sources:
        problems.append(
            (
                "kafka.topic",
                f"{topic} has {sources} partitions, but group {group} was started with "
                f"{layout.sources}: its state is keyed by that layout. Keep {layout.sources} "
                "partitions, or start a new kafka.group_id (its detection state starts empty)",
            )
        )
    have = ensure_cross_topic(kafka, xtopic, layout.partitions)
    if have < layout.partitions:
        problems.append(
            (
                "--cross-topic",
                f"{xtopic} has {have} partitions and could not be given the {layout.partitions} "
                f"group {group} keeps stage-2 state for. Delete {xtopic} and let a worker create "
                "it again, or start a new kafka.group_id",
            )
        )
    elif have > layout.partitions:
        log.warning(
            "%s has %d partitions; group %s uses the first %d (its stage-2 state is kept for them)",
            xtopic,
            have,
            group,
            layout.partitions,
        )
    if problems:
        raise ConfigError(problems)
    return layout


#: Encoded size at which a partition's gathered records go out as one message (well under the
#: producer's ``max_request_size``).
BATCH_BYTES = 256 * 1024
#: What one record adds to a batch beside its event bytes (scope, key, facts, framing), roughly.
_RECORD_OVERHEAD = 96


class CrossProducer:
    """Stage 1's producer of cross records and marks (asynchronous; :meth:`flush` waits).

    Records are gathered per output partition and sent as one :class:`XBatch` message each when a
    mark goes out (after every stage-1 batch), at :meth:`flush`, or when one partition's records
    reach :data:`BATCH_BYTES`. A mark always follows the records it covers in every partition.
    """

    def __init__(
        self,
        topic: str,
        partitions: int,
        *,
        producer: Any = None,
        factory: Callable[[], Any] | None = None,
        flush_timeout: float = 30.0,
        ensure: Callable[[], int] | None = None,
    ) -> None:
        if producer is None and factory is None:
            raise ValueError("pass a producer or a factory")
        self.topic = topic
        self.partitions = partitions
        #: Creates the topic with ``partitions`` when it is missing; its partition count. Called
        #: when a send fails (a broker that lost its data has no repartition topic any more).
        self._ensure = ensure
        self._kafka_error: type[Exception] = import_kafka().errors.KafkaError
        self._factory = factory
        self._producer = producer if producer is not None else factory()  # type: ignore[misc]
        self.flush_timeout = flush_timeout
        self._pending: list[Any] = []
        self._gathered: dict[int, list[XRecord]] = {}
        self._gathered_bytes: dict[int, int] = {}
        self.sent = 0
        #: Messages sent (records travel several to a message).
        self.messages = 0

    def send(self, records: list[XRecord]) -> None:
        gathered, size, parts = self._gathered, self._gathered_bytes, self.partitions
        for rec in records:
            part = partition_for(rec.scope, rec.key, parts)
            buf = gathered.get(part)
            if buf is None:
                buf = gathered[part] = []
                size[part] = 0
            buf.append(rec)
            size[part] += len(rec.event) + _RECORD_OVERHEAD
            if size[part] >= BATCH_BYTES:
                self._emit(part)
        self.sent += len(records)

    def _emit(self, part: int) -> None:
        recs = self._gathered.pop(part, None)
        self._gathered_bytes.pop(part, None)
        if recs:
            self._send(encode(recs[0] if len(recs) == 1 else XBatch(recs)), part)

    def _emit_all(self) -> None:
        for part in sorted(self._gathered):
            self._emit(part)

    def mark(self, src: int, off: int, ts: float, *, idle: bool = False, at: float = float("inf")) -> None:
        self._emit_all()  # the mark covers them: they go first
        data = encode(XMark(src, off, ts, idle, at))
        for part in range(self.partitions):
            self._send(data, part)

    def _send(self, data: bytes, partition: int) -> None:
        try:
            self._pending.append(self._producer.send(self.topic, value=data, partition=partition))
            self.messages += 1
        except self._kafka_error as exc:
            # No metadata for the topic (it is gone) or the partition: check the layout, create
            # the topic if missing, and let the worker rewind and send again.
            self._pending = []
            self._gathered.clear()
            self._gathered_bytes.clear()
            self._renew()
            self.check_layout()
            raise ShipError(f"{self.topic}: cannot send ({type(exc).__name__}); sending again") from exc

    def check_layout(self) -> None:
        """Create the topic when missing (grow it when it has fewer partitions than this group's);
        :class:`ShipError` when that fails (records would miss stage-2 engines)."""
        if self._ensure is None:
            return
        try:
            have = self._ensure()
        except Exception as exc:  # noqa: BLE001 - the broker may still be coming back
            raise ShipError(f"{self.topic}: cannot check its partitions ({type(exc).__name__})") from exc
        if have < self.partitions:
            raise ShipError(
                f"{self.topic} has {have} partitions, but this group's stage-2 state is kept for "
                f"{self.partitions}; nothing is sent until it has {self.partitions} again (delete "
                "it and let a worker create it)"
            )

    def flush(self) -> None:
        """Wait until everything sent is acknowledged; :class:`ShipError` when not (the caller
        rewinds to its checkpoint and sends again)."""
        self._emit_all()
        if not self._pending:
            return
        k = import_kafka()
        try:
            self._producer.flush(timeout=self.flush_timeout)
        except k.errors.KafkaError as exc:
            self._pending = []
            self._renew()
            raise ShipError(f"{self.topic} did not acknowledge in time: {exc}") from exc
        failed = [f for f in self._pending if not f.succeeded()]
        self._pending = []
        if failed:
            self.check_layout()
            # The worker rewinds to its checkpoint and sends everything again (the cross stage
            # drops what it already has): a fresh producer, since a failed idempotent one (its
            # producer id refused after a broker restart, say) never recovers by itself.
            self._renew()
            raise ShipError(f"{self.topic} refused {len(failed)} record(s): {failed[0].exception}")

    def _renew(self) -> None:
        if self._factory is None:
            return
        old = self._producer
        try:
            self._producer = self._factory()
        except Exception as exc:  # noqa: BLE001 - the next flush reports it again
            log.warning("cannot start a new cross-stage producer yet: %s", type(exc).__name__)
            return
        try:
            old.close(timeout=0)
        except Exception:  # noqa: BLE001 - a broken producer may fail to close
            log.info("the old cross-stage producer did not close cleanly")

    def close(self) -> None:
        try:
            self.flush()
        except ShipError as exc:
            log.warning("closing the cross-stage producer: %s", exc)
        finally:
            self._producer.close()


class CrossWorker(Worker):
    """Stage 2: consumes the repartition topic, runs the cross detectors (see the module).

    Re-delivered records are dropped by the state itself (by source partition and offset), so
    records below the checkpointed offset are handed to it rather than skipped.
    """

    skip_replayed = False

    def __init__(
        self,
        config: Any,
        *,
        make: Callable[[], list[Detector]],
        sources: int,
        lateness: float,
        **kw: Any,
    ) -> None:
        super().__init__(config, **kw)
        self._make = make
        self.sources = sources
        self.lateness = lateness
        self._late_said = float("-inf")

    def _checkpoint_key(self, topic: str, partition: int) -> str:
        # Not under ``engine/``: readers of engine checkpoints (the API's baselines) skip these.
        return cross_checkpoint_key(self.cfg.group_id, topic, partition)

    def _new_engine(self) -> Any:
        _, cross, carried, _ = build_split(self._make)
        return CrossState(
            cross,
            carried,
            dict(self.cfg.detect_config),
            seed=self.cfg.seed,
            sources=self.sources,
            lateness=self.lateness,
        )

    def _handle(self, st: PartitionState, rec: Any) -> list[Alert]:
        self.stats["records"] += 1
        try:
            msg = decode(rec.data)
        except msgspec.DecodeError as exc:
            self.stats["cross_refused"] += 1
            log.warning("cross record at %s refused: %s", rec.position, exc)
            return []
        late = st.engine.late
        if isinstance(msg, XBatch):
            self.stats["events"] += len(msg.records)
            out: list[Alert] = []
            for r in msg.records:
                out.extend(st.engine.offer(r))
        else:
            self.stats["cross_marks" if isinstance(msg, XMark) else "events"] += 1
            out = list(st.engine.offer(msg))
        if st.engine.late > late:
            self.stats["cross_late"] += st.engine.late - late
            now = time.monotonic()
            if now - self._late_said >= 60.0:
                self._late_said = now
                log.warning(
                    "cross stage %s:%d: a record from source partition %d came after records "
                    "later than it had been judged (%d so far): it is judged now, out of order, so "
                    "alerts may differ from a replay. A source was slower than --cross-lateness "
                    "(%.0fs), or idle and then resumed; raise --cross-lateness if this is common",
                    st.topic,
                    st.partition,
                    msg.records[-1].src if isinstance(msg, XBatch) else msg.src,
                    st.engine.late,
                    self.lateness,
                )
        return out

    def _owns_verdict(self, st: PartitionState, v: Any) -> bool:
        """Stage 2: the partition whose engines raised the alert takes its verdict (a cross
        detector's alert is keyed by a network, an account or the organisation, not by the
        identity a stage-1 partition holds)."""
        return bool(st.engine.raised(v.alert_id))

    def _take_verdict(self, st: PartitionState, alert: Alert, v: Any) -> None:
        st.engine.verdict(alert, v.verdict, comment=v.comment)

    def _observe(self, batch: list[Any], alerts: list[Alert]) -> None:
        assert self.metrics is not None
        self.metrics.observe_cross(self, batch, alerts)

    def pending(self) -> int:
        """Records buffered until every source partition's mark passes them."""
        return sum(st.engine.pending for st in self.parts.values())
