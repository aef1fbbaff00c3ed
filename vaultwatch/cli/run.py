"""``vaultwatch run``: the streaming service."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
from typing import Any

HELP = "the streaming service: consume the audit topic, detect, store, route alerts"
DESCRIPTION = """\
Consume the audit topic (as one member of a consumer group), run detection per partition, write
alerts to the store and route them to the configured receivers. Engine state is checkpointed
with the Kafka offsets in the same database transaction, so a crash or a rebalance resumes from a
consistent point without losing or doubling alerts. Run several workers with the same group id
and a PostgreSQL store to scale out.

Configuration comes from a TOML file (--config or $VAULTWATCH_CONFIG) with VAULTWATCH_*
environment overrides; `vaultwatch config check` shows the effective settings.

SIGTERM or Ctrl-C: finish the current batch, checkpoint, commit, close.

examples:
  vaultwatch run --config /etc/vaultwatch/vaultwatch.toml
  VAULTWATCH_KAFKA__BOOTSTRAP=kafka:9092 VAULTWATCH_STORE__URL=postgresql+psycopg://... vaultwatch run
"""

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (default $VAULTWATCH_CONFIG)")
    p.add_argument(
        "--ops-port",
        type=int,
        default=None,
        help="port for /healthz, /readyz, /metrics (default: [metrics] port, or none)",
    )
    p.add_argument(
        "--checkpoint-interval",
        type=float,
        default=5.0,
        help="seconds between engine checkpoints (default 5; 0 = every batch)",
    )
    p.add_argument(
        "--cross-topic",
        metavar="TOPIC",
        help="repartition topic of the cross-identity stage (default <topic>.xid, created when missing)",
    )
    p.add_argument(
        "--cross-lateness",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="event-time disorder within a partition that the cross-identity stage waits out before "
        "judging entries in one order; its alerts come that much later (default 2)",
    )
    p.add_argument(
        "--no-cross-stage",
        action="store_true",
        help="run every detector per partition (the cross-identity detectors then see one partition only)",
    )


def run(args: argparse.Namespace) -> int:
    import threading

    from ..service.metrics import Metrics
    from ..service.ops import BackgroundServer, ops_app
    from ..service.wiring import (
        build_delivery,
        build_worker,
        drift_task,
        periodic_tasks,
        run_both,
        start_capability_refresh,
        vault_client,
    )
    from ..settings import ConfigError, load_settings
    from .console import console

    err = console(stderr=True)
    # A crash inside a compiled extension (no Python traceback) still names where every thread
    # was, on stderr: a long-running service must leave something to debug.
    faulthandler.enable(all_threads=True)
    # Handle SIGTERM from the very start: a stop during start-up must still be a clean exit.
    stopping = threading.Event()
    holder: dict[str, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: finishing the batch and stopping", signum)
        stopping.set()
        if "worker" in holder:
            holder["worker"].stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        return 2
    try:
        worker = build_worker(
            settings,
            checkpoint_interval=args.checkpoint_interval,
            cross=not args.no_cross_stage,
            cross_topic_name=args.cross_topic,
            lateness=args.cross_lateness,
        )
    except Exception as exc:  # noqa: BLE001 - report the cause in one line, not a traceback
        err.print(f"[red]cannot start:[/red] {type(exc).__name__}: {exc}")
        return 1
    holder["worker"] = worker
    if stopping.is_set():
        return 0
    try:
        delivery = build_delivery(settings, worker.store)
    except Exception as exc:  # noqa: BLE001 - configuration problems, reported in one line
        err.print(f"[red]cannot start delivery:[/red] {type(exc).__name__}: {exc}")
        return 2
    if delivery is not None:
        delivery.start()
    metrics = Metrics()
    worker.metrics = metrics
    if worker.cross_worker is not None:
        worker.cross_worker.metrics = metrics  # one /metrics for both stages (vaultwatch_cross_*)
    vault = None
    if settings.vault is not None:
        try:
            vault = vault_client(settings, renew=True)
        except Exception as exc:  # noqa: BLE001 - detection runs without Vault; say why once
            err.print(
                f"[yellow]warning:[/yellow] Vault unavailable, rotation scans off: {type(exc).__name__}"
            )
    worker.tasks = periodic_tasks(settings, worker, metrics=metrics, vault=vault)
    worker.tasks.append(drift_task(worker, metrics))
    refresher = start_capability_refresh(worker, vault)
    server = None
    port = args.ops_port or settings.metrics.port
    if port:

        def ready() -> tuple[bool, str]:
            return (True, "ok") if worker.parts or worker._owned else (False, "no partitions assigned yet")

        app = ops_app(metrics=metrics, healthy=worker.healthy, ready=ready)
        server = BackgroundServer(app, settings.metrics.host, port).start()

    try:
        run_both(worker)
    except Exception as exc:  # noqa: BLE001
        err.print(f"[red]worker stopped on an error:[/red] {type(exc).__name__}: {exc}")
        return 1
    finally:
        if refresher is not None:
            refresher.close()
        if vault is not None:
            vault.close()
        if delivery is not None:
            delivery.stop()
        if server is not None:
            server.stop()
    print(f"stopped: {dict(worker.stats)}", file=sys.stderr)  # noqa: T201
    return 0
