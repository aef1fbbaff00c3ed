"""``vaultwatch ship``: tail an audit file, listen as a socket audit device, or read stdin, and
produce every entry (parsed, redacted) to a Kafka topic keyed by identity."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from ingest.dedup import Deduplicator
from ingest.errors import IngestError, SourceError
from ingest.kafka_config import (
    COMPRESSION_TYPES,
    KafkaSettings,
    ProducerSettings,
    import_kafka,
    producer_config,
)
from ingest.parse import DEFAULT_MAX_LINE_BYTES, Parser
from ingest.quarantine import FileQuarantine, Quarantine
from ingest.ship import Backoff, ShipInterrupted, Shipper
from ingest.sources.base import Source
from ingest.sources.stdin import StdinSource

from ..errors import ConfigError
from ..settings import ENV_PREFIX, load_settings

log = logging.getLogger(__name__)

HELP = "tail an audit file or listen as a socket audit device; produce to Kafka"
DESCRIPTION = """\
Ship Vault/OpenBao audit entries to a Kafka topic, keyed by identity so that one identity's
events stay in one partition, in order. Every line is parsed once; what is produced is the
redacted entry, never the raw line (a `log_raw` device writes secrets in plaintext). Lines that do
not parse go, with their reason, to the dead-letter topic <topic>.dlq (default) or to a
quarantine file (mode 0600) with --quarantine. Copies of one entry written by two audit devices
are shipped once.

The connection to Kafka (brokers, TLS, SASL) is the [kafka] section of the vaultwatch
configuration (--config FILE or $VAULTWATCH_CONFIG, with VAULTWATCH_KAFKA__* overrides), read
exactly as `vaultwatch run` reads it; --bootstrap replaces its broker list.

Delivery is at-least-once: the source position (the --checkpoint file for --file) is committed
only after the broker acknowledged the whole batch (acks=all). A crash or `kill -9` loses nothing
and may send the last batch again. While the broker is unavailable the shipper retries with
backoff and commits nothing. SIGTERM or Ctrl-C finishes the current batch, flushes and commits,
then exits.

sources (pick one):
  --file PATH [--follow] [--checkpoint FILE]   a file, .gz file or directory; --follow tails
                                               one plain file across rotations (tail -F)
  --listen tcp://127.0.0.1:9090 | unix:///run/vaultwatch/audit.sock
                                               be a `socket` audit device (spooled to disk
                                               under --spool-dir when Kafka is slow)
  --stdin                                      lines on standard input (no checkpoint)

examples:
  vaultwatch ship --file /var/log/openbao/audit.log --follow \\
      --checkpoint /var/lib/vaultwatch/ship.ckpt --bootstrap kafka1:9092,kafka2:9092
  vaultwatch ship --listen tcp://127.0.0.1:9090 --spool-dir /var/lib/vaultwatch/spool
  zcat audit.log.1.gz | vaultwatch ship --stdin --quarantine bad-lines.jsonl

exit status: 0 done (source ended or stopped cleanly), 1 stopped while entries were still
unacknowledged (they are re-read on restart from a checkpoint), 2 bad arguments or source.
"""

_DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: The broker list's environment variable from before ``--config`` (``VAULTWATCH_KAFKA__BOOTSTRAP``
#: is the configuration's own, read with the rest of ``[kafka]``).
_LEGACY_BOOTSTRAP_ENV = "VAULTWATCH_KAFKA_BOOTSTRAP"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("source")
    one = src.add_mutually_exclusive_group(required=True)
    one.add_argument("--file", metavar="PATH", help="audit log file, .gz file or directory")
    one.add_argument(
        "--listen",
        metavar="URL",
        help="listen as a socket audit device: tcp://HOST:PORT or unix:///PATH",
    )
    one.add_argument("--stdin", action="store_true", help="read audit lines from standard input")
    src.add_argument("--follow", action="store_true", help="with --file: keep tailing (tail -F)")
    src.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="with --file: where the resume position is stored (inode + offset); without it a "
        "restart starts from the beginning",
    )
    src.add_argument(
        "--spool-dir",
        metavar="DIR",
        default="vaultwatch-spool",
        help="with --listen: spool and its commit state (default ./vaultwatch-spool)",
    )
    src.add_argument("--prefix", help="the audit device's `prefix` option, if one is set")
    src.add_argument(
        "--max-line-bytes",
        type=int,
        default=DEFAULT_MAX_LINE_BYTES,
        help=f"longer lines are quarantined as too_large (default {DEFAULT_MAX_LINE_BYTES})",
    )

    k = p.add_argument_group("Kafka")
    k.add_argument(
        "--config",
        metavar="FILE",
        help="vaultwatch TOML configuration (default $VAULTWATCH_CONFIG) whose [kafka] section "
        "(TLS, SASL, brokers) the producer uses, exactly as `vaultwatch run` does",
    )
    k.add_argument(
        "--bootstrap",
        default=os.environ.get(_LEGACY_BOOTSTRAP_ENV),
        help=f"comma-separated brokers (default ${_LEGACY_BOOTSTRAP_ENV}, else [kafka] bootstrap of "
        f"--config, else {_DEFAULT_BOOTSTRAP})",
    )
    k.add_argument("--topic", default="vault-audit", help="topic to produce to (default %(default)s)")
    k.add_argument(
        "--client-id",
        default="vaultwatch-ship",
        help="Kafka client id (default %(default)s; [kafka] client_id names the worker)",
    )
    k.add_argument(
        "--linger-ms", type=int, default=20, help="wait up to this long to fill a batch (default 20)"
    )
    k.add_argument(
        "--batch-bytes",
        type=int,
        default=256 * 1024,
        help="producer batch size per partition in bytes (default 262144)",
    )
    k.add_argument("--compression", choices=COMPRESSION_TYPES, help="compress batches (default none)")

    q = p.add_argument_group("refused lines")
    qq = q.add_mutually_exclusive_group()
    qq.add_argument("--quarantine", metavar="FILE", help="write unparseable lines to FILE (mode 0600)")
    qq.add_argument(
        "--quarantine-key-file",
        metavar="PATH",
        help="the key encrypting the quarantine (default: $VAULTWATCH_QUARANTINE_KEY_FILE, "
        "else ~/.config/vaultwatch/quarantine.key, created on first use)",
    )
    qq.add_argument(
        "--dlq",
        action="store_true",
        help="produce unparseable lines to <topic>.dlq with the reason in headers (the default)",
    )

    t = p.add_argument_group("tuning")
    t.add_argument("--max-batch", type=int, default=1000, help="entries per batch (default 1000)")
    t.add_argument(
        "--dedup-window",
        type=int,
        default=65_536,
        help="how many recent (request.id, type) keys to remember (default 65536)",
    )
    t.add_argument(
        "--retry-max", type=float, default=30.0, help="longest wait between retries, s (default 30)"
    )
    t.add_argument("--stats", action="store_true", help="print the final counters as one JSON line on stdout")


def run(args: argparse.Namespace) -> int:
    """Build the source, producer and quarantine from ``args``; ship until done or signalled."""
    if (args.follow or args.checkpoint) and not args.file:
        log.error("--follow and --checkpoint go with --file")
        return 2
    stop = threading.Event()
    previous = _install_signals(stop)
    try:
        return _run(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """The producer's client settings: the ``[kafka]`` section of ``--config`` (and its
    ``VAULTWATCH_KAFKA__*`` overrides) through the one mapping,
    :meth:`~vaultwatch.settings.KafkaConfig.client_settings`, with ``--bootstrap`` and
    ``--client-id`` in place of its brokers and client id. TLS, SASL and the parsing of the broker
    list are therefore those of ``vaultwatch run``. Raises
    :class:`~vaultwatch.errors.ConfigError` naming the bad key."""
    env = dict(os.environ)
    if args.bootstrap:
        env[f"{ENV_PREFIX}KAFKA__BOOTSTRAP"] = args.bootstrap
    env[f"{ENV_PREFIX}KAFKA__CLIENT_ID"] = args.client_id
    return load_settings(args.config, env).kafka.client_settings()


def _run(args: argparse.Namespace, stop: threading.Event) -> int:
    try:
        kafka = kafka_settings(args)
    except ConfigError as exc:
        log.error("%s%s", exc, "\n  (--bootstrap stands for kafka.bootstrap)" if args.bootstrap else "")
        return 2
    settings = ProducerSettings(
        linger_ms=args.linger_ms, batch_size=args.batch_bytes, compression=args.compression
    )
    backoff = Backoff(maximum=args.retry_max)
    try:
        source = _open_source(args)
    except (SourceError, OSError, ValueError) as exc:
        log.error("cannot open the source: %s", exc)
        return 2
    producer: Any = None
    quarantine: Quarantine | None = None
    try:
        producer = _connect(kafka, settings, backoff, stop)
        if producer is None:
            return 1
        quarantine = _open_quarantine(args, kafka, settings)
        shipper = Shipper(
            source,
            producer,
            args.topic,
            quarantine=quarantine,
            parser=Parser(prefix=args.prefix, max_line_bytes=args.max_line_bytes),
            dedup=Deduplicator(args.dedup_window),
            max_batch=args.max_batch,
            backoff=backoff,
            reconnect=lambda: _new_producer(kafka, settings),
        )
        stop_watch = threading.Thread(target=_relay_stop, args=(stop, shipper), daemon=True)
        stop_watch.start()
        log.info("shipping %s to %s on %s", source.name, args.topic, kafka.bootstrap)
        code = 0
        try:
            shipper.run()
        except ShipInterrupted as exc:
            log.error("%s", exc)
            code = 1
        finally:
            stop.set()
            producer = shipper.producer  # it may have been replaced
        if args.stats:
            sys.stdout.write(json.dumps(shipper.stats.as_dict(), sort_keys=True) + "\n")
            sys.stdout.flush()
        return code
    except IngestError as exc:
        log.error("shipping failed: %s", exc)
        return 1
    finally:
        stop.set()
        if quarantine is not None:
            quarantine.close()
        if producer is not None:
            producer.close(timeout=10)
        source.close()


def _relay_stop(stop: threading.Event, shipper: Shipper) -> None:
    # A signal handler only sets an Event; this thread turns it into shipper.stop().
    stop.wait()
    shipper.stop()


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            return
        log.warning("signal %d: finishing the current batch, then exiting", signum)
        stop.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handle)
    return previous


def _connect(
    kafka: KafkaSettings, settings: ProducerSettings, backoff: Backoff, stop: threading.Event
) -> Any:
    """A KafkaProducer, retrying with backoff while no broker answers; None if stopped."""
    import random

    kafka_error = import_kafka().errors.KafkaError
    rng = random.Random()
    attempt = 0
    while not stop.is_set():
        try:
            return _new_producer(kafka, settings)
        except kafka_error as exc:
            delay = backoff.delay(attempt, rng)
            log.warning("Kafka at %s unavailable (%s); retrying in %.1fs", kafka.bootstrap, exc, delay)
            attempt += 1
            stop.wait(delay)
    return None


def _new_producer(kafka: KafkaSettings, settings: ProducerSettings) -> Any:
    return import_kafka().KafkaProducer(**producer_config(kafka, settings))


def _open_quarantine(
    args: argparse.Namespace, kafka: KafkaSettings, settings: ProducerSettings
) -> Quarantine:
    if args.quarantine:
        return FileQuarantine(args.quarantine, key_file=args.quarantine_key_file)
    from ingest.sources.kafka import DeadLetterQueue, dlq_topic

    # Its own producer, so that it can replace it if it ever fails for good.
    return DeadLetterQueue(
        dlq_topic(args.topic), kafka=kafka, settings=settings, key_file=args.quarantine_key_file
    )


def _open_source(args: argparse.Namespace) -> Source:
    # Sources are imported here so this module (and `vaultwatch ship --help`) loads fast.
    if args.file:
        from ingest.sources.file import FileSource

        return FileSource(
            args.file,
            follow=args.follow,
            checkpoint=args.checkpoint,
            max_line_bytes=args.max_line_bytes,
        )
    if args.listen:
        from ingest.sources.socket import SocketSource

        kind, address = _parse_listen(args.listen)
        return SocketSource(
            address,
            socket_type=kind,
            spool_dir=args.spool_dir,
            max_line_bytes=args.max_line_bytes,
        ).start()
    return StdinSource(sys.stdin.buffer, max_line_bytes=args.max_line_bytes)


def _parse_listen(url: str) -> tuple[str, str]:
    """``tcp://host:port`` -> ("tcp", "host:port"); ``unix:///path`` -> ("unix", "/path")."""
    parts = urlsplit(url)
    if parts.scheme == "tcp" and parts.hostname and parts.port is not None:
        return "tcp", f"{parts.hostname}:{parts.port}"
    if parts.scheme == "unix" and parts.path:
        return "unix", parts.path
    raise ValueError(f"--listen wants tcp://HOST:PORT or unix:///PATH, not {url!r}")
