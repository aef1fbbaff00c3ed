"""The group's layout (partitions of the repartition and input topics) is pinned, against the real
broker: a repartition topic that comes back with another partition count is refused, and one that
is gone is created again with the group's own count, never the broker's default."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alerts.store import Store
from ingest.errors import ShipError
from ingest.kafka_config import KafkaSettings, ProducerSettings, import_kafka, producer_config
from vaultwatch.demo.servers import KafkaBroker
from vaultwatch.errors import ConfigError
from vaultwatch.service.stage2 import CrossProducer, ensure_cross_topic, pin_layout, topic_partitions

from .test_worker import _create_topic

pytestmark = pytest.mark.integration


def _delete(broker: KafkaBroker, topic: str) -> None:
    k = import_kafka()
    admin = k.KafkaAdminClient(bootstrap_servers=[broker.bootstrap])
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    ks = KafkaSettings(bootstrap=broker.bootstrap)
    deadline = time.monotonic() + 30
    while topic_partitions(ks, topic) and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(f"sqlite:///{tmp_path / 'v.db'}")
    st.migrate()
    return st


def test_the_layout_is_pinned_and_a_shrunk_topic_is_grown(
    kafka_broker: KafkaBroker, topic: str, store: Store
) -> None:
    ks = KafkaSettings(bootstrap=kafka_broker.bootstrap)
    _create_topic(kafka_broker, topic, 3)
    xtopic = f"{topic}.xid"
    layout = pin_layout(store, ks, topic, xtopic, "g")
    assert (layout.partitions, layout.sources) == (3, 3)
    assert topic_partitions(ks, xtopic) == 3
    assert pin_layout(store, ks, topic, xtopic, "g") == layout  # a second worker agrees
    # Came back with more partitions (a broker's default): the group keeps its own count.
    _delete(kafka_broker, xtopic)
    _create_topic(kafka_broker, xtopic, 5)
    assert pin_layout(store, ks, topic, xtopic, "g") == layout
    # With fewer: grown back to the group's count, or (a broker that cannot add partitions, as
    # Tansu) refused with the fix; never taken as it is.
    _delete(kafka_broker, xtopic)
    _create_topic(kafka_broker, xtopic, 2)
    try:
        assert pin_layout(store, ks, topic, xtopic, "g") == layout
        assert topic_partitions(ks, xtopic) == 3
    except ConfigError as err:
        assert "could not be given the 3" in str(err) and f"Delete {xtopic}" in str(err)
        assert topic_partitions(ks, xtopic) == 2


def test_a_changed_input_topic_is_refused_with_the_fix(
    kafka_broker: KafkaBroker, topic: str, store: Store
) -> None:
    ks = KafkaSettings(bootstrap=kafka_broker.bootstrap)
    _create_topic(kafka_broker, topic, 2)
    pin_layout(store, ks, topic, f"{topic}.xid", "g")
    _delete(kafka_broker, topic)
    _create_topic(kafka_broker, topic, 4)
    with pytest.raises(ConfigError) as err:
        pin_layout(store, ks, topic, f"{topic}.xid", "g")
    assert f"{topic} has 4 partitions" in str(err.value) and "new kafka.group_id" in str(err.value)


def test_the_producer_writes_the_groups_partitions_whatever_the_topic_has(
    kafka_broker: KafkaBroker, topic: str, store: Store
) -> None:
    """A broker that lost its data: the topic comes back (auto-created by the broker on the first
    send, with its default count, or created by the producer's check); every worker still writes
    only the group's partitions, and a topic with too few is grown before anything is sent."""
    ks = KafkaSettings(bootstrap=kafka_broker.bootstrap)
    _create_topic(kafka_broker, topic, 3)
    xtopic = f"{topic}.xid"
    layout = pin_layout(store, ks, topic, xtopic, "g")
    conf = {**producer_config(ks, ProducerSettings(max_block_ms=3000)), "allow_auto_create_topics": False}
    _delete(kafka_broker, xtopic)  # the broker lost it; this worker starts after that
    out = CrossProducer(
        xtopic,
        layout.partitions,
        factory=lambda: import_kafka().KafkaProducer(**conf),
        ensure=lambda: ensure_cross_topic(ks, xtopic, layout.partitions),
    )
    k = import_kafka()
    try:
        try:
            out.mark(0, 1, 10.0, at=1.0)
            out.flush()
        except ShipError as exc:  # a broker that does not auto-create: the check created it
            assert "sending again" in str(exc)
            out.mark(0, 1, 10.0, at=1.0)
            out.flush()
        assert topic_partitions(ks, xtopic) >= 3
        out.check_layout()
        consumer = k.KafkaConsumer(bootstrap_servers=[kafka_broker.bootstrap], auto_offset_reset="earliest")
        try:
            parts = [k.TopicPartition(xtopic, p) for p in range(topic_partitions(ks, xtopic))]
            consumer.assign(parts)
            consumer.seek_to_end()
            written = {tp.partition for tp in parts if consumer.position(tp) > 0}
        finally:
            consumer.close()
        assert written == {0, 1, 2}  # a mark goes to each of the group's partitions, no other
        # Too few partitions: grown, or nothing is sent (a partition that is not there).
        _delete(kafka_broker, xtopic)
        _create_topic(kafka_broker, xtopic, 2)
        try:
            out.check_layout()
            assert topic_partitions(ks, xtopic) == 3
        except ShipError as exc:
            assert "has 2 partitions" in str(exc) and topic_partitions(ks, xtopic) == 2
    finally:
        out.close()
