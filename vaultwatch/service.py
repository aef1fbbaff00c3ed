"""Wiring the streaming service from settings: store, archive, router, Kafka source, worker."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ingest.kafka_config import ConsumerSettings, GroupTimings, KafkaSettings

from .pipeline import Worker, WorkerConfig
from .settings import Settings

__all__ = ["kafka_settings", "consumer_settings", "build_worker", "open_store"]

log = logging.getLogger(__name__)


def kafka_settings(s: Settings) -> KafkaSettings:
    k = s.kafka
    return KafkaSettings(
        bootstrap=[b.strip() for b in k.bootstrap.split(",") if b.strip()],
        client_id=k.client_id,
        security_protocol=k.security_protocol,
        sasl_mechanism=k.sasl_mechanism,
        sasl_username=k.sasl_username,
        sasl_password=k.sasl_password.get_secret_value() if k.sasl_password is not None else None,
        ssl_cafile=str(k.ssl_cafile) if k.ssl_cafile else None,
        ssl_certfile=str(k.ssl_certfile) if k.ssl_certfile else None,
        ssl_keyfile=str(k.ssl_keyfile) if k.ssl_keyfile else None,
    )


def consumer_settings(s: Settings) -> ConsumerSettings:
    k = s.kafka
    return ConsumerSettings(
        group_id=k.group_id,
        timings=GroupTimings(
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
        ),
        max_poll_records=k.max_poll_records,
    )


def open_store(s: Settings) -> Any:
    from alerts.store import Store

    url = s.store.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    store = Store(url)
    store.migrate()
    return store


def build_worker(s: Settings, *, store: Any | None = None, checkpoint_interval: float = 5.0) -> Worker:
    """A worker consuming ``s.kafka.topic`` as ``s.kafka.group_id``, with DLQ, archive and routing."""
    from ingest.sources.kafka import DeadLetterQueue, KafkaSource, dlq_topic

    from .archive import EventArchive

    ks, cs = kafka_settings(s), consumer_settings(s)
    store = store or open_store(s)
    archive = (
        EventArchive(s.archive.path, retention_days=s.archive.retention_days) if s.archive.enabled else None
    )
    router = None
    if s.routes:
        from alerts.route import Router, RouterConfig

        router = Router(RouterConfig.from_dict(s.routes), store)
    dlq = DeadLetterQueue(dlq_topic(s.kafka.topic), kafka=ks)

    def source(**hooks: Any) -> KafkaSource:
        return KafkaSource(s.kafka.topic, kafka=ks, consumer=cs, **hooks)

    cfg = WorkerConfig(
        topic=s.kafka.topic,
        group_id=s.kafka.group_id,
        batch_size=s.kafka.max_poll_records,
        checkpoint_interval=checkpoint_interval,
        detect_config=_detect_config(s),
    )
    return Worker(cfg, source_factory=source, store=store, archive=archive, router=router, dlq=dlq)


def _detect_config(s: Settings) -> dict[str, Any]:
    cfg = s.detect.options()
    if s.detect.policy_file is not None:
        cfg["policy_file"] = str(s.detect.policy_file)
    return cfg


def build_delivery(s: Settings, store: Any, *, vault: Any = None) -> Any | None:
    """The delivery worker for ``[channels]``, or None when no receiver is configured.

    Secret references in the channel table (``env:``, ``file:``, ``vault:``) are resolved here;
    ``vault`` is an authenticated hvac client for ``vault:`` references.
    """
    if not s.channels:
        return None
    from alerts.channels.config import build_channels, load_config
    from alerts.deliver import DeliveryWorker
    from alerts.secrets import SecretResolver

    cfg = load_config(s.channels)
    if not cfg.receivers:
        return None
    channels = build_channels(cfg, SecretResolver(vault=vault))
    return DeliveryWorker(
        store,
        channels,
        policy=cfg.retry_policy(),
        attempt_timeout=cfg.delivery.attempt_timeout,
        lease_seconds=cfg.delivery.lease_seconds,
    )
