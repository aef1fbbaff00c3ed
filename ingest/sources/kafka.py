"""Kafka as a source (the detector's input) and as a dead-letter queue for refused records.

:class:`KafkaSource` consumes a topic as part of a consumer group (or from explicit partitions),
yields batches of :class:`~ingest.sources.base.RawRecord` whose ``position`` is a
:class:`KafkaPosition`, and commits only when told: ``commit(record)`` stores ``offset + 1`` for
that record's partition and for every partition of the records before it in the same batch. A
crash between poll and commit re-delivers the batch (at-least-once), never skips it.

:class:`DeadLetterQueue` implements the :class:`~ingest.quarantine.Quarantine` protocol by
producing a refused record to ``<topic>.dlq``, sealed with the quarantine key
(:class:`~ingest.quarantine.DlqSealer`), with clear headers saying why and where it came from.
``vaultwatch quarantine list|show|requeue kafka://HOST:PORT/<topic>.dlq`` reads them back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import ParseError, ShipError, SourceError
from ..kafka_config import (
    ConsumerSettings,
    KafkaSettings,
    ProducerSettings,
    consumer_config,
    import_kafka,
    producer_config,
)
from ..quarantine import DlqSealer
from ..ship import _NotSent
from .base import RawRecord

__all__ = [
    "DeadLetterQueue",
    "KafkaPosition",
    "KafkaSource",
    "PartitionHook",
    "dlq_topic",
]

log = logging.getLogger(__name__)

#: A rebalance hook: receives the ``(topic, partition)`` pairs concerned, sorted.
PartitionHook = Callable[[list[tuple[str, int]]], None]


class KafkaPosition(NamedTuple):
    """Where a Kafka record sits. ``str()`` gives ``topic:partition:offset`` (topic names
    cannot contain ``:``), the form the quarantine and the DLQ headers use."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> KafkaPosition | None:
        """The position written by ``str()``, or None when ``text`` is not one."""
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]))


def dlq_topic(topic: str) -> str:
    """The dead-letter topic that goes with ``topic``."""
    return f"{topic}.dlq"


def _kafka() -> Any:
    return import_kafka()


class KafkaSource:
    """A consumer-group (or explicitly assigned) Kafka source with manual commits.

    ``partitions`` switches from group subscription to explicit assignment (``(topic, partition)``
    pairs; the group id, if any, is then used for commits only). ``start_offsets`` maps
    ``(topic, partition)`` to the next offset to read; it overrides the group's committed offset,
    for callers that keep offsets in their own database next to their state.

    ``on_assigned``/``on_revoked``/``on_lost`` are called on the consumer's I/O thread during a
    rebalance: they must return promptly and must not call :meth:`commit` (that blocks on the
    same thread). Calling :meth:`seek` from ``on_assigned`` is the supported way to start newly
    assigned partitions at offsets loaded from elsewhere. ``on_lost`` means the group evicted this
    member (a missed session): in-flight work for those partitions will be redone by their new
    owner, so discard it; its default is ``on_revoked``.
    """

    def __init__(
        self,
        topics: str | Sequence[str],
        *,
        kafka: KafkaSettings,
        consumer: ConsumerSettings | None = None,
        partitions: Iterable[tuple[str, int]] | None = None,
        start_offsets: Mapping[tuple[str, int], int] | None = None,
        on_assigned: PartitionHook | None = None,
        on_revoked: PartitionHook | None = None,
        on_lost: PartitionHook | None = None,
    ) -> None:
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise ValueError("at least one topic is required")
        self.name = "kafka:" + ",".join(self.topics)
        self.settings = consumer or ConsumerSettings()
        self._start_offsets = dict(start_offsets or {})
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._batch: list[RawRecord] = []
        self._index: dict[KafkaPosition, int] | None = None
        self._committed: dict[tuple[str, int], int] = {}
        # Rebalance callbacks run on the consumer's I/O thread; they touch _committed too.
        self._lock = threading.Lock()
        self._closed = False
        #: Since when this consumer has waited for a group assignment (joining, or rejoining after
        #: a revoke or a loss); None while it holds one. See :meth:`join_stalled`.
        self._waiting_since: float | None = time.monotonic()
        t = self.settings.timings
        #: How long a group join may take before :meth:`join_stalled` says so: the broker may hold
        #: a JoinGroup for the rebalance timeout (``max_poll_interval_ms``) while other members
        #: rejoin, and each request may take ``request_timeout_ms``.
        self.join_limit = (t.max_poll_interval_ms + kafka.request_timeout_ms + t.session_timeout_ms) / 1000
        k = _kafka()
        try:
            self._consumer = k.KafkaConsumer(**consumer_config(kafka, self.settings))
        except k.errors.KafkaError as exc:
            raise SourceError(f"cannot connect to Kafka at {kafka.bootstrap!r}: {exc}") from exc
        self._tp = k.TopicPartition
        self._oam = k.OffsetAndMetadata
        if partitions is not None:
            tps = [self._tp(t, int(p)) for t, p in partitions]
            self._consumer.assign(tps)
            for tp in tps:
                if (tp.topic, tp.partition) in self._start_offsets:
                    self._consumer.seek(tp, self._start_offsets[(tp.topic, tp.partition)])
            self._waiting_since = None  # no group: nothing to wait for
            log.info("assigned %d partition(s) of %s", len(tps), ",".join(self.topics))
        else:
            if self.settings.group_id is None:
                self._consumer.close(autocommit=False)
                raise ValueError("a consumer group id is required unless partitions are given")
            self._consumer.subscribe(self.topics, listener=self._listener(k))
            log.info("subscribed to %s as group %r", ",".join(self.topics), self.settings.group_id)

    def __repr__(self) -> str:
        return f"KafkaSource(topics={self.topics!r}, group_id={self.settings.group_id!r})"

    # -- rebalance ------------------------------------------------------------------------------
    def _listener(self, k: Any) -> Any:
        source = self

        class _Listener(k.ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_assigned(self, assigned: Iterable[Any]) -> None:
                source._assigned(_pairs(assigned))

            def on_partitions_revoked(self, revoked: Iterable[Any]) -> None:
                source._revoked(_pairs(revoked), lost=False)

            def on_partitions_lost(self, lost: Iterable[Any]) -> None:
                source._revoked(_pairs(lost), lost=True)

        return _Listener()

    def _assigned(self, pairs: list[tuple[str, int]]) -> None:
        self._waiting_since = None  # the join completed, whatever it gave this member
        if not pairs:  # kafka-python reports empty changes too (eager rebalancing)
            return
        log.info("partitions assigned: %s", pairs)
        for pair in pairs:
            if pair in self._start_offsets:
                self.seek(pair[0], pair[1], self._start_offsets[pair])
        if self._on_assigned is not None:
            self._on_assigned(pairs)

    def _revoked(self, pairs: list[tuple[str, int]], *, lost: bool) -> None:
        if self._waiting_since is None:  # a rejoin starts: an assignment must follow
            self._waiting_since = time.monotonic()
        if not pairs:
            return
        log.info("partitions %s: %s", "lost" if lost else "revoked", pairs)
        # Whatever of the current batch is not committed yet will be re-delivered to the new
        # owner; commit() skips partitions this consumer no longer owns.
        with self._lock:
            for pair in pairs:
                self._committed.pop(pair, None)
        hook = self._on_lost if lost and self._on_lost is not None else self._on_revoked
        if hook is not None:
            hook(pairs)

    # -- Source ---------------------------------------------------------------------------------
    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Iterator[list[RawRecord]]:
        """Poll until :meth:`stop` or :meth:`close`; an idle poll yields ``[]`` after ``timeout``."""
        k = _kafka()
        while not self._stop.is_set() and not self._closed:
            try:
                polled = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
            except k.errors.KafkaError as exc:
                raise SourceError(f"polling {self.name} failed: {exc}") from exc
            batch = [
                RawRecord(
                    data=rec.value if rec.value is not None else b"",
                    position=KafkaPosition(rec.topic, rec.partition, rec.offset),
                    source=self.name,
                    key=rec.key,
                )
                for records in polled.values()
                for rec in records
            ]
            self._batch = batch
            self._index = None
            yield batch

    def commit(self, record: RawRecord) -> None:
        """Commit ``record`` and the records before it in its batch (``offset + 1`` each).

        Partitions this consumer no longer owns (a rebalance happened) are skipped: their new
        owner re-reads from the last commit. Raises :class:`SourceError` if the broker refuses.
        """
        pos = record.position
        if not isinstance(pos, KafkaPosition):
            raise TypeError(f"not a Kafka record position: {pos!r}")
        upto: dict[tuple[str, int], int] = {}
        idx = self._find(pos)
        for r in self._batch[: idx + 1] if idx is not None else [record]:
            p = r.position
            key = (p.topic, p.partition)
            upto[key] = max(upto.get(key, -1), p.offset + 1)
        with self._lock:
            todo = {k: v for k, v in upto.items() if v > self._committed.get(k, -1)}
        if not todo:
            return
        if self.settings.group_id is not None:
            owned = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
            skipped = [k for k in todo if k not in owned]
            if skipped:
                log.info("not committing partitions no longer assigned: %s", sorted(skipped))
            offsets = {
                self._tp(t, p): self._oam(off, "", -1) for (t, p), off in todo.items() if (t, p) in owned
            }
            if offsets:
                try:
                    self._consumer.commit(offsets)
                except _kafka().errors.KafkaError as exc:
                    raise SourceError(f"committing offsets of {self.name} failed: {exc}") from exc
            todo = {k: v for k, v in todo.items() if k in owned}
        with self._lock:
            for k, v in todo.items():
                self._committed[k] = max(v, self._committed.get(k, -1))

    def _find(self, pos: KafkaPosition) -> int | None:
        if self._batch and self._batch[-1].position == pos:
            return len(self._batch) - 1
        if self._index is None:
            self._index = {r.position: i for i, r in enumerate(self._batch)}
        return self._index.get(pos)

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``(topic, partition)`` from ``offset`` next. The partition must be assigned
        (call it from ``on_assigned`` in group mode)."""
        self._consumer.seek(self._tp(topic, partition), offset)
        log.info("seeking %s:%d to offset %d", topic, partition, offset)

    def seek_to_beginning(self, topic: str, partition: int) -> None:
        """Read ``(topic, partition)`` from the first offset the broker still holds."""
        self._consumer.seek_to_beginning(self._tp(topic, partition))
        log.info("seeking %s:%d to its beginning", topic, partition)

    def topic_id(self, topic: str) -> str | None:
        """The broker's id of ``topic`` (a UUID that changes when the topic is deleted and created
        again, KIP-516), from the consumer's latest metadata; None when the broker predates topic
        ids or no metadata has named the topic yet."""
        cluster = getattr(getattr(self._consumer, "_client", None), "cluster", None)
        tid = cluster.topic_id(topic) if cluster is not None and hasattr(cluster, "topic_id") else None
        return str(tid) if tid is not None else None

    def join_stalled(self) -> float | None:
        """Seconds this consumer has been joining its group, when that is longer than
        :attr:`join_limit` while its group coordinator is known; otherwise None.

        A join that has not completed by then never will: after a broker restarted empty,
        kafka-python 3.0 was seen (1 run in 4 on a loaded 2-core machine) to send the SyncGroup of a
        rejoin and then neither deliver its answer nor time it out, with heartbeats off for the
        join. The member then owned nothing, for good, and its worker read nothing. The caller
        replaces such a consumer (:meth:`~vaultwatch.service.worker.Worker.run`)."""
        since = self._waiting_since
        if since is None or self._closed:
            return None
        waited = time.monotonic() - since
        if waited <= self.join_limit:
            return None
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is not None and getattr(coordinator, "coordinator_id", None) is None:
            return None  # no coordinator (the broker is down): joining cannot even start
        return waited

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The next offset to read per partition, as committed through this source."""
        with self._lock:
            return dict(self._committed)

    def assignment(self) -> list[tuple[str, int]]:
        """The partitions this consumer currently owns."""
        return _pairs(self._consumer.assignment())

    def stop(self) -> None:
        """Make :meth:`batches` end after the current poll (safe from a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        """Leave the group without committing anything more."""
        if not self._closed:
            self._closed = True
            self._stop.set()
            self._consumer.close(autocommit=False)


def _pairs(tps: Iterable[Any]) -> list[tuple[str, int]]:
    return sorted((tp.topic, tp.partition) for tp in tps)


class DeadLetterQueue:
    """A :class:`~ingest.quarantine.Quarantine` that produces refused records to a Kafka topic.

    The value is the record and parser detail sealed with the quarantine key (see
    :class:`~ingest.quarantine.DlqSealer`); headers (UTF-8) carry ``vaultwatch.reason`` (a
    :data:`~ingest.errors.REASONS` code), ``vaultwatch.source``, ``vaultwatch.position``,
    ``vaultwatch.quarantined_at``, ``vaultwatch.id``, ``vaultwatch.size``, ``vaultwatch.sealed``
    and, for a record that came from Kafka,
    ``vaultwatch.source_topic``/``source_partition``/``source_offset``. :meth:`put` is
    asynchronous; :meth:`flush` waits for the broker and raises :class:`ShipError` on failure,
    so a caller flushes before committing its source.
    """

    def __init__(
        self,
        topic: str,
        *,
        kafka: KafkaSettings | None = None,
        producer: Any = None,
        settings: ProducerSettings | None = None,
        flush_timeout: float = 30.0,
        key_file: str | Path | None = None,
    ) -> None:
        if (kafka is None) == (producer is None):
            raise ValueError("pass either kafka settings or a producer")
        self.topic = topic
        self._sealer = DlqSealer(key_file=key_file)  # the quarantine's key: no raw byte in the topic
        self.counts: Counter[str] = Counter()
        self.flush_timeout = flush_timeout
        self._owned = producer is None
        self._config: dict[str, Any] = {}
        if producer is None:
            assert kafka is not None
            self._config = producer_config(kafka, settings or ProducerSettings())
            producer = self._new_producer()
        self._producer = producer
        self._pending: list[tuple[Any, bytes, list[tuple[str, bytes]]]] = []

    def _new_producer(self) -> Any:
        k = _kafka()
        try:
            return k.KafkaProducer(**self._config)
        except k.errors.KafkaError as exc:
            servers = self._config.get("bootstrap_servers")
            raise ShipError(f"cannot connect to Kafka at {servers!r}: {exc}") from exc

    def __repr__(self) -> str:
        return f"DeadLetterQueue(topic={self.topic!r})"

    def put(self, line: bytes, error: ParseError, *, source: str, position: str) -> None:
        """Send ``line``, sealed, to the DLQ topic with the reason in its headers."""
        line, headers = self._sealer.seal(line, error, source=source, position=position)
        kpos = KafkaPosition.parse(position)
        if kpos is not None:
            headers += [
                ("vaultwatch.source_topic", kpos.topic),
                ("vaultwatch.source_partition", str(kpos.partition)),
                ("vaultwatch.source_offset", str(kpos.offset)),
            ]
        encoded = [(k, v.encode("utf-8", "replace")) for k, v in headers]
        self._pending.append((self._send(line, encoded), line, encoded))
        self.counts[error.reason] += 1

    def _send(self, line: bytes, headers: list[tuple[str, bytes]]) -> Any:
        try:
            # Keyed by source so one source's refused records stay in order in one partition.
            key = dict(headers)["vaultwatch.source"]
            return self._producer.send(self.topic, value=line, key=key, headers=headers)
        except _kafka().errors.KafkaError as exc:
            # Not queued (no metadata within max_block_ms, say): flush() reports and re-sends it.
            return _NotSent(exc)

    def flush(self) -> None:
        """Wait until every record put so far is acknowledged.

        Raises :class:`ShipError` if some were not; those are sent again, so calling ``flush``
        again (after a pause) retries them. Nothing put is dropped.
        """
        if not self._pending:
            return
        k = _kafka()
        try:
            self._producer.flush(timeout=self.flush_timeout)
        except k.errors.KafkaError as exc:
            raise ShipError(f"DLQ {self.topic} did not acknowledge in time: {exc}") from exc
        failed = [(f, line, h) for f, line, h in self._pending if not f.succeeded()]
        if not failed:
            self._pending = []
            return
        first = failed[0][0].exception
        if self._owned and any(not getattr(f.exception, "retriable", True) for f, _, _ in failed):
            # A producer stuck in a failed state (see ingest.ship): start a new one.
            log.warning("the DLQ producer failed with a non-retriable error; replacing it")
            old, self._producer = self._producer, self._new_producer()
            old.close(timeout=0)
        self._pending = [(self._send(line, h), line, h) for _, line, h in failed]
        raise ShipError(f"DLQ {self.topic} refused {len(failed)} record(s): {first}")

    def close(self) -> None:
        """Flush what is pending (best effort) and close the producer if this queue made it."""
        try:
            self.flush()
        except ShipError as exc:
            log.error("closing the DLQ with unacknowledged records: %s", exc)
        finally:
            if self._owned:
                self._producer.close()
