"""Kafka client settings shared by the consumer source, the DLQ and the shipper's producer.

kafka-python takes a flat ``**configs`` dict; these small frozen dataclasses hold what vaultwatch
chooses to expose, validate it once, and render the dict. The password is kept out of ``repr``.

Group timings matter more than they look: with kafka-python's defaults (45 s session timeout) a
consumer group takes over 20 s to form against a fresh broker, and a crashed member holds its
partitions for as long. :data:`FAST_GROUP` (6 s session, 1 s heartbeat, 10 s poll interval) forms a
group in about 3 s; it suits tests, the demo and small deployments whose batches are short.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Final

__all__ = [
    "COMPRESSION_TYPES",
    "FAST_GROUP",
    "ConsumerSettings",
    "GroupTimings",
    "KafkaSettings",
    "ProducerSettings",
    "consumer_config",
    "import_kafka",
    "keyed_partitioner",
    "producer_config",
]

#: Compression codecs kafka-python knows; all but gzip need an optional library installed.
COMPRESSION_TYPES: Final = ("gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True)
class KafkaSettings:
    """Where the cluster is and how to talk to it (shared by every client)."""

    bootstrap: str | Sequence[str] = "127.0.0.1:9092"
    client_id: str = "vaultwatch"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    request_timeout_ms: int = 30_000
    #: How long a client's constructor waits for a first broker before raising.
    bootstrap_timeout_ms: int = 10_000
    retry_backoff_ms: int = 100
    reconnect_backoff_max_ms: int = 5_000

    def common(self) -> dict[str, Any]:
        """The kafka-python settings every client takes."""
        servers = [self.bootstrap] if isinstance(self.bootstrap, str) else list(self.bootstrap)
        cfg: dict[str, Any] = {
            "bootstrap_servers": servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            "retry_backoff_ms": self.retry_backoff_ms,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.sasl_password,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
        }
        cfg.update({k: v for k, v in optional.items() if v is not None})
        return cfg


@dataclass(frozen=True)
class GroupTimings:
    """Consumer-group liveness timings (milliseconds). Defaults are kafka-python's own."""

    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000

    def __post_init__(self) -> None:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms should be at most a third of session_timeout_ms")


#: Fast group formation (about 3 s instead of over 20 s); used by the tests and the demo.
FAST_GROUP: Final = GroupTimings(
    session_timeout_ms=6_000, heartbeat_interval_ms=1_000, max_poll_interval_ms=10_000
)


@dataclass(frozen=True)
class ConsumerSettings:
    """How the detector consumes. ``group_id=None`` means no group: explicit partitions only,
    and offsets live wherever the caller keeps them (commits are then local)."""

    group_id: str | None = "vaultwatch"
    timings: GroupTimings = GroupTimings()
    max_poll_records: int = 1_000
    fetch_max_wait_ms: int = 500
    #: How often the consumer re-reads the cluster's metadata. kafka-python's default (5 minutes)
    #: is also how long a consumer subscribed to a topic that does not exist yet (the repartition
    #: topic after a broker lost its data, an input topic re-created) takes to notice it: it sits
    #: in its group with no partitions until then. One small metadata request every 10 s is cheap.
    metadata_max_age_ms: int = 10_000
    # The caller's batch must finish within max_poll_interval_ms; these settings are for the group
    # liveness only. Offsets are never committed automatically (see ingest.sources.kafka).

    def with_timings(self, timings: GroupTimings) -> ConsumerSettings:
        return replace(self, timings=timings)


@dataclass(frozen=True)
class ProducerSettings:
    """How the shipper and the DLQ produce. ``acks="all"`` is fixed: an entry counts as shipped
    only once every in-sync replica has it, which is what lets the shipper commit its source."""

    linger_ms: int = 20
    batch_size: int = 256 * 1024
    compression: str | None = None
    max_request_size: int = 4 * 1024 * 1024
    #: How long send() may block waiting for metadata (broker down at start-up, say).
    max_block_ms: int = 10_000
    #: How long the client itself retries one record before its future fails.
    delivery_timeout_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.compression is not None and self.compression not in COMPRESSION_TYPES:
            raise ValueError(f"compression must be one of {COMPRESSION_TYPES} or None")
        if self.linger_ms < 0 or self.batch_size <= 0:
            raise ValueError("linger_ms must be >= 0 and batch_size > 0")


def consumer_config(kafka: KafkaSettings, consumer: ConsumerSettings) -> dict[str, Any]:
    """kafka-python ``KafkaConsumer`` settings for a detector.

    kafka-python's defaults are wrong for a detector: ``enable_auto_commit=True`` commits offsets
    on a timer whether or not the entries were processed (a crash then skips them, unseen), and
    ``auto_offset_reset="latest"`` makes a new group start at the end of the topic, silently
    ignoring everything already written. We commit by hand after processing and start at the
    earliest offset.
    """
    t = consumer.timings
    cfg = kafka.common()
    cfg.update(
        group_id=consumer.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=t.session_timeout_ms,
        heartbeat_interval_ms=t.heartbeat_interval_ms,
        max_poll_interval_ms=t.max_poll_interval_ms,
        max_poll_records=consumer.max_poll_records,
        fetch_max_wait_ms=consumer.fetch_max_wait_ms,
        metadata_max_age_ms=consumer.metadata_max_age_ms,
    )
    return cfg


def producer_config(kafka: KafkaSettings, producer: ProducerSettings) -> dict[str, Any]:
    """kafka-python ``KafkaProducer`` settings: acks from all replicas, idempotent, batched."""
    cfg = kafka.common()
    cfg.update(
        acks="all",
        # Idempotence keeps the client's own retries from duplicating or reordering a partition.
        enable_idempotence=True,
        linger_ms=producer.linger_ms,
        batch_size=producer.batch_size,
        compression_type=producer.compression,
        max_request_size=producer.max_request_size,
        max_block_ms=producer.max_block_ms,
        partitioner=keyed_partitioner(),
        # kafka-python refuses a delivery timeout shorter than one linger plus one request.
        delivery_timeout_ms=max(producer.delivery_timeout_ms, producer.linger_ms + kafka.request_timeout_ms),
    )
    return cfg


def import_kafka() -> ModuleType:
    """The ``kafka`` package (kafka-python), imported on first use.

    Imported lazily so that ``ingest`` loads without the client's start-up cost. kafka-python 3.0
    reads its protocol schemas with ``importlib.resources.read_text`` at import time, which
    Python 3.11+ flags as deprecated; that warning is about the library, not us, so it is muted
    for the import only.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        import kafka
        import kafka.errors

    module: ModuleType = kafka
    return module


def keyed_partitioner(cache_size: int = 100_000) -> Any:
    """kafka-python's default partitioner (murmur2 of the key, as the Java client) with the hash
    cached per key.

    Audit traffic comes from few identities, so keys repeat, and kafka-python's murmur2 is pure
    Python: about a tenth of the shipper's time went to re-hashing the same keys. The partition
    chosen is exactly the default one, so other producers agree on where an identity lives.
    """
    import_kafka()
    from kafka.partitioner.default import DefaultPartitioner, murmur2

    class _KeyedPartitioner(DefaultPartitioner):  # type: ignore[misc]
        def __init__(self) -> None:
            self._hashes: dict[bytes, int] = {}

        def partition(
            self, topic: str, key: Any, serialized_key: bytes | None, value: Any, sv: Any, cluster: Any
        ) -> int:
            if serialized_key is None:
                part: int = super().partition(topic, key, serialized_key, value, sv, cluster)
                return part
            h = self._hashes.get(serialized_key)
            if h is None:
                if len(self._hashes) >= cache_size:
                    self._hashes.clear()
                h = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
            parts = cluster.partitions_for_topic(topic)
            if not parts:
                raise ValueError(f"Topic {topic} not found in ClusterMetadata")
            chosen: int = sorted(parts)[h % len(parts)]
            return chosen

    return _KeyedPartitioner()
