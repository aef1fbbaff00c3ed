"""Wiring the streaming service from settings: store, archive, router, Kafka source, worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa

from alerts.errors import MigrationError, StoreError
from detect.alert import Alert
from detect.drift import DriftReport, DriftWatch, merge_reports
from detect.engine import Engine
from detect.errors import StateError
from detect.policy import CAPABILITY_KEY, AccessPolicy, CapabilityRoleBook, default_policy
from detect.rules import default_rules

from ..settings import Settings, load_policy
from ..vault.connect import vault_auth, vault_client
from ..vault.rotation import DETECTOR as ROTATION_DETECTOR
from ..vault.rotation import RotationMonitor
from .cross import DEFAULT_LATENESS
from .reports import render_scheduled
from .stage2 import CrossProducer, CrossWorker, cross_topic, ensure_cross_topic, pin_layout
from .worker import Worker, WorkerConfig

__all__ = [
    "ROTATION_CHECKPOINT",
    "RotationScan",
    "build_delivery",
    "build_worker",
    "open_store",
    "periodic_tasks",
    "run_both",
    "vault_auth",
    "vault_client",
]

log = logging.getLogger(__name__)


#: How long start-up waits for a database server that refuses connections (still starting,
#: recovering after a crash, failing over) before giving up.
STORE_WAIT = 60.0


def open_store(
    s: Settings,
    *,
    wait: float = STORE_WAIT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """The alert store, its schema brought up to date. A database server that refuses
    connections is retried for up to ``wait`` seconds (:func:`retry_store`), so a worker started
    beside it does not exit; any other error is raised."""
    from alerts.store import Store

    url = s.store.url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    store = Store(url)
    try:
        retry_store(store, store.migrate, "migrating the schema", wait=wait, clock=clock, sleep=sleep)
    except Exception:
        store.close()
        raise
    return store


def retry_store(
    store: Any,
    action: Callable[[], Any],
    what: str,
    *,
    wait: float = STORE_WAIT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """``action()``, retried with backoff for up to ``wait`` seconds while the store's database
    server refuses connections; any other error, or SQLite's, is raised at once. Every start-up
    step that touches the store goes through it: a soak saw a worker restarted while PostgreSQL
    recovered from a crash migrate its schema, then exit on the next step ("cannot start")."""
    deadline = clock() + wait
    delay = 0.5
    while True:
        try:
            return action()
        except (MigrationError, StoreError) as exc:
            transient = store.dialect != "sqlite" and isinstance(exc.__cause__, sa.exc.OperationalError)
            if not transient or clock() + delay > deadline:
                raise
            log.warning("the alert store is not reachable (%s): %s again in %.1fs", exc, what, delay)
            sleep(delay)
            delay = min(5.0, delay * 2)


def build_worker(
    s: Settings,
    *,
    store: Any | None = None,
    checkpoint_interval: float = 5.0,
    cross: bool = True,
    cross_topic_name: str | None = None,
    lateness: float = DEFAULT_LATENESS,
    idle_after: float = 5.0,
) -> Worker:
    """A worker consuming ``s.kafka.topic`` as ``s.kafka.group_id``, with DLQ, archive and routing.

    With ``cross`` (the default) it is stage 1 of two: it produces the events cross-identity
    detectors need onto ``cross_topic_name`` (``<topic>.xid``, created with the input topic's
    partition count when missing), and ``worker.cross_worker`` is the stage-2 worker (group
    ``<group_id>.xid``) the caller runs beside it (:func:`run_both`).
    """
    from ingest.kafka_config import ConsumerSettings, ProducerSettings, import_kafka, producer_config
    from ingest.sources.kafka import DeadLetterQueue, KafkaSource, dlq_topic

    from .archive import EventArchive

    ks, cs = s.kafka.client_settings(), s.kafka.consumer_settings()
    store = store or open_store(s)
    archive = (
        EventArchive(
            s.archive.path,
            retention_days=s.archive.retention_days,
            max_rows=s.archive.max_rows,
            flush_interval=s.archive.flush_interval_s,
        )
        if s.archive.enabled
        else None
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
    cfg.idle_after = idle_after
    detect_config = cfg.detect_config

    def detectors() -> list[Any]:
        return with_drift_watch(detect_config)

    cross_out = None
    cross_worker = None
    if cross:
        xtopic = cross_topic_name or cross_topic(s.kafka.topic)
        layout = retry_store(
            store,
            lambda: pin_layout(store, ks, s.kafka.topic, xtopic, s.kafka.group_id),
            "reading the group's layout",
        )
        sources, xparts = layout.sources, layout.partitions
        # No auto-creation: a broker that lost its data would create the topic with its default
        # partition count; the producer creates it with the group's own (CrossLayout).
        pconf = {**producer_config(ks, ProducerSettings()), "allow_auto_create_topics": False}
        cross_out = CrossProducer(
            xtopic,
            xparts,
            factory=lambda: import_kafka().KafkaProducer(**pconf),
            ensure=lambda: ensure_cross_topic(ks, xtopic, xparts),
        )
        xcs = ConsumerSettings(
            group_id=f"{s.kafka.group_id}.xid",
            timings=cs.timings,
            max_poll_records=cs.max_poll_records,
            fetch_max_wait_ms=cs.fetch_max_wait_ms,
        )

        def xsource(**hooks: Any) -> KafkaSource:
            return KafkaSource(xtopic, kafka=ks, consumer=xcs, **hooks)

        xcfg = WorkerConfig(
            topic=xtopic,
            group_id=f"{s.kafka.group_id}.xid",
            batch_size=s.kafka.max_poll_records,
            checkpoint_interval=checkpoint_interval,
            detect_config=detect_config,
        )
        cross_worker = CrossWorker(
            xcfg,
            make=detectors,
            sources=sources,
            lateness=lateness,
            source_factory=xsource,
            store=store,
            router=router,
        )
    worker = Worker(
        cfg,
        source_factory=source,
        store=store,
        archive=archive,
        router=router,
        dlq=dlq,
        detectors_factory=detectors,
        cross_out=cross_out,
    )
    worker.cross_worker = cross_worker
    return worker


def run_both(worker: Worker) -> None:
    """Run stage 1 (``worker``) here and its stage-2 worker, if any, on a thread; stop both together.

    Either loop ending (SIGTERM, or an error) stops the other; the caller's ``worker.stop()``
    stops both.
    """
    import threading

    cross = worker.cross_worker
    if cross is None:
        worker.run()
        return
    failure: list[BaseException] = []

    def stage2() -> None:
        try:
            cross.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failure.append(exc)
        finally:
            worker.stop()

    thread = threading.Thread(target=stage2, name="cross-stage", daemon=True)
    thread.start()
    try:
        worker.run()
    finally:
        cross.stop()
        thread.join(timeout=60)
    if failure:
        raise failure[0]


def _detect_config(s: Settings) -> dict[str, Any]:
    config = s.detect.engine_config()
    if s.vault is not None:
        # Roles by capability: filled and swapped by a background refresher once `run` has a
        # Vault client (start_capability_refresh); every partition's engine reads the same book.
        config[CAPABILITY_KEY] = CapabilityRoleBook()
    return config


# -- access-model drift and roles by capability (issue 14 items 2 and 4) ---------------------------
def with_drift_watch(config: dict[str, Any]) -> list[Any]:
    """The engine's default detectors plus a :class:`~detect.drift.DriftWatch` on its policy."""
    rules = default_rules(config)
    policy = config.get("policy")
    return [*rules, DriftWatch(policy if isinstance(policy, AccessPolicy) else default_policy())]


def drift_report(worker: Any) -> DriftReport:
    """One drift report over every partition engine's :class:`~detect.drift.DriftWatch`."""
    watches = [
        d for st in list(worker.parts.values()) for d in st.engine.detectors if isinstance(d, DriftWatch)
    ]
    busy = watches[0].busy_events if watches else 1000
    return merge_reports([w.report() for w in watches], busy_events=busy)


def drift_task(worker: Any, metrics: Any = None, interval: float = 3600.0) -> Any:
    """A periodic task that logs the access model's drift when it changes and sets the gauge."""
    from .worker import PeriodicTask

    last: list[tuple[str, ...]] = [()]

    def check(now: float) -> None:
        report = drift_report(worker)
        if metrics is not None:
            metrics.observe_drift(report)
        globs = tuple(d.glob for d in report.drifting)
        if globs != last[0]:
            for line in report.lines():
                log.warning("%s", line)
            if not globs and last[0]:
                log.info("access model: every protected and rotation glob matches the stream again")
            last[0] = globs

    return PeriodicTask("access-model-drift", interval, check)


def start_capability_refresh(worker: Any, vault: Any, *, ttl: float = 600.0) -> Any | None:
    """Start refreshing the worker's roles-by-capability book from ``vault`` (None without one)."""
    book = worker.cfg.detect_config.get(CAPABILITY_KEY)
    if vault is None or not isinstance(book, CapabilityRoleBook):
        return None
    from ..vault.roles import CapabilityRefresher

    return CapabilityRefresher(vault, book=book, ttl=ttl).start()


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
    if not s.routes:
        log.warning(
            "[channels] has %d receiver(s) but there is no [routes] table, so no alert is sent to "
            "them: add [[routes.receivers]] and [routes.route] (see examples/vaultwatch.toml)",
            len(cfg.receivers),
        )
    channels = build_channels(cfg, SecretResolver(vault=vault))
    return DeliveryWorker(
        store,
        channels,
        policy=cfg.retry_policy(),
        attempt_timeout=cfg.delivery.attempt_timeout,
        lease_seconds=cfg.delivery.lease_seconds,
    )


def periodic_tasks(s: Settings, worker: Any, *, metrics: Any = None, vault: Any = None) -> list[Any]:
    """The service's housekeeping: archive retention (daily) and, with ``[vault]``, the
    KV-metadata rotation scan (every 10 minutes) whose alerts name the last write the archive saw.
    """
    from datetime import UTC, datetime

    from .worker import PeriodicTask

    tasks: list[Any] = []
    archive = worker.archive
    if archive is not None:

        def retention(now: float) -> None:
            archive.prune(datetime.fromtimestamp(now, UTC))

        tasks.append(PeriodicTask("archive-retention", 86400.0, retention))
    if vault is not None:
        policy = load_policy(s.detect.policy_file)

        def last_write(path: str) -> float | None:
            if archive is None:
                return None
            mount, _, rest = path.partition("/")
            df = archive.query(
                path_prefix=f"{mount}/data/{rest}",
                operation=["create", "update", "patch"],
                outcome="ok",
                descending=True,
                limit=1,
                columns=["ts", "path"],
            )
            exact = df[df["path"] == f"{mount}/data/{rest}"]
            return float(exact["ts"].iloc[0]) if len(exact) else None

        # Its findings go through an engine of their own (no detectors, no behaviour), with the
        # service's detection settings: suppression and aggregation windows as configured.
        engine = Engine(
            {**s.detect.engine_config(), "behaviour_enabled": False, "model_enabled": False}, detectors=[]
        )
        monitor = RotationMonitor(vault, policy, last_stream_write=last_write, engine=engine)
        tasks.append(PeriodicTask("rotation-metadata", 600.0, RotationScan(worker.store, monitor, metrics)))
    for period in s.reports.periods:
        tasks.append(PeriodicTask(f"report-{period}", 3600.0, _report_task(s, period)))
    return tasks


#: The store checkpoint of the KV-metadata rotation scan (:class:`RotationScan`).
ROTATION_CHECKPOINT = "rotation/kv-metadata"


class _RotationState(msgspec.Struct):
    # The last analyst verdict applied (id, and its time for the next read), and the engine.
    verdict_id: int
    verdicts_seen_at: float
    engine: bytes


class RotationScan:
    """The KV-metadata rotation scan as the worker's periodic task, fed the analysts' verdicts.

    The scan's ``rotation-overdue`` alerts come from the monitor's own engine, which the worker's
    verdict flow (the partition engines) never reaches. So each run first reads the verdicts
    recorded since the last one it applied and gives those on ``rotation-overdue`` alerts to that
    engine (:meth:`detect.engine.Engine.verdict`): a false positive suppresses the alert of that
    secret at that version for the configured ``suppression_days``, as for every other detector.
    Then it scans and returns the alerts. The engine and the last verdict applied are saved in the
    store (:data:`ROTATION_CHECKPOINT`) after a run that changed them and restored at start, so
    a restarted service keeps its suppressions and open alerts.
    """

    def __init__(self, store: Any, monitor: Any, metrics: Any = None) -> None:
        self.store = store
        self.monitor = monitor
        self.metrics = metrics
        self.verdict_id = 0
        self.verdicts_seen_at = 0.0
        self._restore()

    def _restore(self) -> None:
        try:
            blob = self.store.load_checkpoint(ROTATION_CHECKPOINT)
            if blob is None:
                return
            state = msgspec.msgpack.decode(blob, type=_RotationState)
            self.monitor.engine.restore(state.engine)
        except (StoreError, StateError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("rotation scan state not restored (%s): starting afresh", type(exc).__name__)
            return
        self.verdict_id, self.verdicts_seen_at = state.verdict_id, state.verdicts_seen_at

    def _save(self, now: float) -> None:
        state = _RotationState(self.verdict_id, self.verdicts_seen_at, self.monitor.engine.snapshot())
        try:
            self.store.save_checkpoint(ROTATION_CHECKPOINT, msgspec.msgpack.encode(state), now=now)
        except StoreError as exc:
            # The run's alerts still go out; the next run that changes something saves again.
            log.warning("rotation scan state not saved: %s", exc)

    def apply_verdicts(self, now: float) -> bool:
        """Give the verdicts on ``rotation-overdue`` alerts recorded since the last run to the
        monitor's engine; True when any verdict was read."""
        # From a little before the newest verdict seen (API servers' clocks differ); the id
        # watermark makes reading one twice harmless.
        since = max(0.0, self.verdicts_seen_at - 300.0) if self.verdict_id else 0.0
        try:
            records = [v for v in self.store.verdicts_since(since) if v.id > self.verdict_id]
        except StoreError as exc:
            log.warning("rotation scan: cannot read verdicts: %s", exc)
            return False
        for v in records:
            if v.detector != ROTATION_DETECTOR or v.verdict not in ("false_positive", "true_positive"):
                continue
            try:
                alert = self.store.get_alert(v.alert_id).alert
                self.monitor.engine.verdict(alert, v.verdict, now=now, comment=v.comment)
            except Exception as exc:  # noqa: BLE001 - one bad verdict must not stop the scan
                log.warning("verdict %d on %s not applied: %s", v.id, v.alert_id, type(exc).__name__)
        if records:
            self.verdict_id = max(v.id for v in records)
            self.verdicts_seen_at = max(self.verdicts_seen_at, max(v.at for v in records))
        return bool(records)

    def __call__(self, now: float) -> list[Alert]:
        changed = self.apply_verdicts(now)
        ages = self.monitor.scan(now)
        if self.metrics is not None:
            for a in ages:
                self.metrics.secret_age.labels(a.path, a.rotation_class).set(a.age_seconds)
        alerts: list[Alert] = self.monitor.alerts(now, ages)
        if alerts or changed:
            self._save(now)
        return alerts


def _report_task(s: Settings, period: str) -> Any:
    """Render the last complete ``period`` once, when its report does not exist yet."""
    from datetime import UTC, datetime

    def render(now: float) -> None:
        from ..report import period_for

        when = datetime.fromtimestamp(now, UTC)
        out = s.reports.directory(s.archive)
        if (out / "reports" / period_for(period, when).id / "report.json").exists():
            return
        result = render_scheduled(
            s, period, when, out=out, check_path=s.reports.check_json, notify=s.reports.notify
        )
        log.info("audit review report %s written to %s", result.period.id, result.directory)

    return render
