"""KafkaSource and DeadLetterQueue against the real broker (Tansu)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from ingest.errors import ParseError
from ingest.kafka_config import (
    FAST_GROUP,
    ConsumerSettings,
    GroupTimings,
    KafkaSettings,
    ProducerSettings,
    consumer_config,
    import_kafka,
    keyed_partitioner,
    producer_config,
)
from ingest.parse import Parser
from ingest.quarantine import dlq_record, open_records
from ingest.sources.base import RawRecord, Source
from ingest.sources.kafka import DeadLetterQueue, KafkaPosition, KafkaSource, dlq_topic
from vaultwatch.demo.servers import KafkaBroker

_kafka = import_kafka()
KafkaConsumer, KafkaProducer, TopicPartition = (
    _kafka.KafkaConsumer,
    _kafka.KafkaProducer,
    _kafka.TopicPartition,
)

# -- pure -----------------------------------------------------------------------------------------


def test_position_round_trips_through_its_string_form() -> None:
    pos = KafkaPosition("vault-audit.v2", 3, 1234)
    assert str(pos) == "vault-audit.v2:3:1234"
    assert KafkaPosition.parse(str(pos)) == pos
    assert KafkaPosition.parse("/var/log/audit.log:12:34:56") == KafkaPosition(
        "/var/log/audit.log:12", 34, 56
    )
    assert KafkaPosition.parse("inode-7:offset") is None
    assert KafkaPosition.parse("nothing") is None


def test_consumer_config_refuses_kafka_python_defaults_for_a_detector() -> None:
    cfg = consumer_config(KafkaSettings("b:9092"), ConsumerSettings(group_id="g", timings=FAST_GROUP))
    assert cfg["enable_auto_commit"] is False
    assert cfg["auto_offset_reset"] == "earliest"
    assert cfg["session_timeout_ms"] == 6000 and cfg["heartbeat_interval_ms"] == 1000
    assert cfg["bootstrap_servers"] == ["b:9092"]


def test_settings_validate_and_hide_the_password() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        GroupTimings(session_timeout_ms=3000, heartbeat_interval_ms=2000)
    with pytest.raises(ValueError, match="compression"):
        ProducerSettings(compression="brotli")
    k = KafkaSettings("b:9092", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="canary-sasl-9d1")
    assert "canary-sasl-9d1" not in repr(k)
    assert producer_config(k, ProducerSettings())["sasl_plain_password"] == "canary-sasl-9d1"
    cfg = producer_config(k, ProducerSettings(linger_ms=50, delivery_timeout_ms=1))
    assert cfg["acks"] == "all"
    assert cfg["delivery_timeout_ms"] >= 50 + k.request_timeout_ms  # kafka-python refuses less


def test_keyed_partitioner_agrees_with_the_default_one() -> None:
    from kafka.partitioner.default import DefaultPartitioner

    class Cluster:
        def topics(self) -> set[str]:
            return {"t"}

        def partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1, 2, 3, 4, 5}

        def available_partitions_for_topic(self, topic: str) -> set[int]:
            return {0, 1, 2, 3, 4, 5}

    ours, theirs = keyed_partitioner(cache_size=8), DefaultPartitioner()
    keys = [f"entity:{i:04d}".encode() for i in range(40)] * 2
    got = [ours.partition("t", k, k, None, None, Cluster()) for k in keys]
    assert got == [theirs.partition("t", k, k, None, None, Cluster()) for k in keys]
    assert len(set(got)) == 6
    assert ours.partition("t", None, None, b"v", b"v", Cluster()) in range(6)


# -- real broker ----------------------------------------------------------------------------------


def _produce(bootstrap: str, topic: str, n: int) -> dict[bytes, tuple[int, int]]:
    """Send ``n`` keyed values; where each landed, as ``value -> (partition, offset)``."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        values = [f"value-{i}".encode() for i in range(n)]
        futs = [p.send(topic, key=f"k{i % 7}".encode(), value=v) for i, v in enumerate(values)]
        p.flush(timeout=20)
        meta = [f.get(timeout=1) for f in futs]
        return {v: (m.partition, m.offset) for v, m in zip(values, meta, strict=True)}
    finally:
        p.close()


def _drain(source: KafkaSource, want: int, deadline: float = 20.0) -> list[RawRecord]:
    """Poll until ``want`` records came, then one more idle poll to catch any extra."""
    got: list[RawRecord] = []
    end = time.monotonic() + deadline
    it = source.batches(max_records=50, timeout=0.5)
    for batch in it:
        got.extend(batch)
        if len(got) >= want and not batch:
            break
        if time.monotonic() > end:
            break
    return got


@pytest.fixture
def settings(kafka_broker: KafkaBroker) -> KafkaSettings:
    return KafkaSettings(kafka_broker.bootstrap, client_id="vaultwatch-test")


@pytest.mark.integration
def test_manual_commit_then_restart_resumes_at_the_committed_offset(
    settings: KafkaSettings, kafka_broker: KafkaBroker, topic: str
) -> None:
    values = _produce(kafka_broker.bootstrap, topic, 40)
    group = ConsumerSettings(group_id=f"g-{uuid.uuid4().hex[:8]}", timings=FAST_GROUP)
    assigned: list[list[tuple[str, int]]] = []
    revoked: list[list[tuple[str, int]]] = []
    first = KafkaSource(
        topic, kafka=settings, consumer=group, on_assigned=assigned.append, on_revoked=revoked.append
    )
    assert isinstance(first, Source)
    try:
        batch: list[RawRecord] = []
        for batch in first.batches(max_records=25, timeout=0.5):
            if len(batch) >= 10:
                break
        assert len(batch) >= 10
        assert all(isinstance(r.position, KafkaPosition) and r.key for r in batch)
        # Commit a record in the middle: it and every record before it in the batch count as handled.
        middle = batch[len(batch) // 2]
        first.commit(middle)
        handled = {r.data for r in batch[: len(batch) // 2 + 1]}
        committed = first.committed_offsets()
        for r in batch[: len(batch) // 2 + 1]:
            assert committed[(r.position.topic, r.position.partition)] >= r.position.offset + 1
        assert assigned and assigned[0] == first.assignment() and len(assigned[0]) == 4
    finally:
        first.close()
    assert revoked and revoked[-1] == assigned[0]  # leaving the group revokes its partitions

    second = KafkaSource(topic, kafka=settings, consumer=group)
    try:
        rest = _drain(second, len(values) - len(handled))
    finally:
        second.close()
    got = [r.data for r in rest]
    assert len(got) == len(set(got))  # nothing re-read twice
    assert set(got) == set(values) - handled  # resumed exactly after the commit, nothing skipped


@pytest.mark.integration
def test_explicit_partitions_and_start_offsets_without_a_group(
    settings: KafkaSettings, kafka_broker: KafkaBroker, topic: str
) -> None:
    landed = _produce(kafka_broker.bootstrap, topic, 30)
    # End offsets from the producer's acknowledgements (Tansu's ListOffsets(latest) is not exact).
    ends = {(topic, p): 0 for p in range(4)}
    for part, off in landed.values():
        ends[(topic, part)] = max(ends[(topic, part)], off + 1)
    assert sum(ends.values()) == 30
    start = {pair: off // 2 for pair, off in ends.items()}
    src = KafkaSource(
        topic,
        kafka=settings,
        consumer=ConsumerSettings(group_id=None),
        partitions=list(ends),
        start_offsets=start,
    )
    try:
        got = _drain(src, sum(ends[p] - start[p] for p in ends), deadline=10)
        assert sorted(src.assignment()) == sorted(ends)
        src.commit(got[-1])  # no group: commits are kept locally for the caller to store
        assert src.committed_offsets()[(got[-1].position.topic, got[-1].position.partition)] == (
            got[-1].position.offset + 1
        )
    finally:
        src.close()
    for (t, p), off in ends.items():
        offs = sorted(r.position.offset for r in got if (r.position.topic, r.position.partition) == (t, p))
        assert offs == list(range(start[(t, p)], off))


@pytest.mark.integration
def test_subscription_without_group_is_refused(settings: KafkaSettings, topic: str) -> None:
    with pytest.raises(ValueError, match="group id"):
        KafkaSource(topic, kafka=settings, consumer=ConsumerSettings(group_id=None))


@pytest.fixture
def dlq_reader(kafka_broker: KafkaBroker) -> Iterator[Any]:
    c = KafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    yield c
    c.close()


def _read_all(c: Any, topic: str, want: int) -> list[object]:
    c.assign([TopicPartition(topic, p) for p in c.partitions_for_topic(topic) or {0}])
    c.seek_to_beginning()
    out: list[object] = []
    end = time.monotonic() + 15
    while len(out) < want and time.monotonic() < end:
        for recs in c.poll(timeout_ms=500).values():
            out.extend(recs)
    return out


@pytest.mark.integration
def test_refused_kafka_records_go_to_the_dlq_with_reason_headers(
    settings: KafkaSettings, kafka_broker: KafkaBroker, topic: str, dlq_reader: Any
) -> None:
    junk = [b"not json at all", b'{"time": "2026-01-01T00:00:00Z", "type":', b"\xff\xfe{}"]
    p = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    try:
        for i, v in enumerate(junk):
            p.send(topic, key=b"k", value=v).get(timeout=10)
            assert i >= 0
    finally:
        p.close()
    parser = Parser()
    src = KafkaSource(
        topic,
        kafka=settings,
        consumer=ConsumerSettings(group_id=None),
        partitions=[(topic, n) for n in range(4)],
    )
    dlq = DeadLetterQueue(dlq_topic(topic), kafka=settings)
    try:
        records = _drain(src, len(junk), deadline=10)
        assert [r.data for r in records] == junk  # one key: one partition, in order
        reasons = []
        for r in records:
            with pytest.raises(ParseError) as ei:
                parser.parse(r.data)
            reasons.append(ei.value.reason)
            dlq.put(r.data, ei.value, source=r.source, position=str(r.position))
        dlq.flush()
        src.commit(records[-1])
    finally:
        dlq.close()
        src.close()
    assert sum(dlq.counts.values()) == 3 and dlq.counts["no_json"] == 1
    got = _read_all(dlq_reader, dlq_topic(topic), len(junk))
    # Sealed with the quarantine key (issue 18): decrypted, each record is the refused line.
    sealed = [dlq_record(m.value, m.headers) for m in got]  # type: ignore[attr-defined]
    assert [r.line() for r in open_records(sealed)] == junk
    assert reasons == ["no_json", "invalid_json", "wrong_type"]
    for m, r, reason in zip(got, records, reasons, strict=True):
        h = {k: v.decode() for k, v in m.headers}  # type: ignore[attr-defined]
        assert h["vaultwatch.reason"] == reason
        assert h["vaultwatch.source"] == f"kafka:{topic}"
        assert h["vaultwatch.source_topic"] == topic
        assert int(h["vaultwatch.source_partition"]) == r.position.partition
        assert int(h["vaultwatch.source_offset"]) == r.position.offset
        assert h["vaultwatch.position"] == str(r.position)
        assert m.key == f"kafka:{topic}".encode()  # type: ignore[attr-defined]


@pytest.mark.slow
@pytest.mark.integration
def test_a_member_that_stops_polling_loses_its_partitions(
    settings: KafkaSettings, kafka_broker: KafkaBroker, topic: str
) -> None:
    _produce(kafka_broker.bootstrap, topic, 8)
    events: list[tuple[str, list[tuple[str, int]]]] = []
    src = KafkaSource(
        topic,
        kafka=settings,
        consumer=ConsumerSettings(group_id=f"g-{uuid.uuid4().hex[:8]}", timings=FAST_GROUP),
        on_assigned=lambda p: events.append(("assigned", p)),
        on_revoked=lambda p: events.append(("revoked", p)),
        on_lost=lambda p: events.append(("lost", p)),
    )
    try:
        it = src.batches(max_records=100, timeout=0.5)
        got = _drain(src, 8)
        assert len(got) == 8 and events and events[0][0] == "assigned"
        time.sleep(FAST_GROUP.max_poll_interval_ms / 1000 + 2)  # a batch that took too long
        again: list[RawRecord] = []
        for _, batch in zip(range(40), it, strict=False):
            again.extend(batch)
            kinds = [kind for kind, _ in events]
            if "lost" in kinds and kinds[-1] == "assigned" and len(again) >= 8:
                break
        kinds = [kind for kind, _ in events]
        assert "lost" in kinds and kinds[-1] == "assigned"  # evicted, then rejoined
        # Nothing was committed, so everything comes again after the rejoin (at-least-once).
        assert sorted(r.data for r in again) == sorted(r.data for r in got)
        src.commit(again[-1])
    finally:
        src.close()


@pytest.mark.integration
def test_a_join_taking_longer_than_its_limit_is_reported_and_an_assignment_ends_it(
    settings: KafkaSettings, kafka_broker: KafkaBroker, topic: str
) -> None:
    """``join_stalled`` measures from the start of a join to its assignment. Against the real
    broker a first join takes about 3 s (the broker's initial rebalance delay): with a limit of
    0.5 s it must be reported while the join is under way, and never once the member has its
    partitions. A stalled join is how a worker learns to replace its consumer."""
    _produce(kafka_broker.bootstrap, topic, 4)
    src = KafkaSource(
        topic,
        kafka=settings,
        consumer=ConsumerSettings(group_id=f"g-{uuid.uuid4().hex[:8]}", timings=FAST_GROUP),
    )
    assert src.join_limit == (10_000 + settings.request_timeout_ms + 6_000) / 1000
    src.join_limit = 0.5
    reported: list[float] = []
    try:
        deadline = time.monotonic() + 30
        for _ in src.batches(max_records=10, timeout=0.2):
            if src.assignment():
                break
            waited = src.join_stalled()
            if waited is not None:
                reported.append(waited)
            assert time.monotonic() < deadline, "the group never formed"
        assert reported and all(w > 0.5 for w in reported)
        assert src.join_stalled() is None  # assigned: nothing to report, however long it took
    finally:
        src.close()
    assert src.join_stalled() is None  # closed
