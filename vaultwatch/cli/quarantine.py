"""``vaultwatch quarantine``: list, show, requeue and discard quarantined audit lines.

A thin command line over :mod:`ingest.quarantine`'s admin functions. The quarantine file keeps
each refused line encrypted (Fernet); ``list`` reads only the clear metadata and needs no key,
``show`` and ``requeue`` decrypt with the key file, ``discard`` removes records once requeued.
The Kafka dead-letter topic (``kafka://HOST:PORT/TOPIC``) is read the same way: its records are
sealed with the same key; a topic cannot drop single records, so ``discard`` is refused there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from ingest.kafka_config import consumer_config, import_kafka
from ingest.quarantine import (
    KEY_FILE_ENV,
    QuarantineError,
    QuarantineRecord,
    SealedRecord,
    default_key_file,
    discard,
    dlq_record,
    list_records,
    open_records,
    requeue,
    show_record,
)

from ..errors import ConfigError
from ..service.atomic import atomic_writer
from ..settings import ENV_PREFIX, KafkaConfig, load_settings

__all__ = [
    "HELP",
    "DESCRIPTION",
    "KAFKA_SCHEME",
    "add_arguments",
    "DlqContents",
    "dlq_consumer_config",
    "dlq_kafka_config",
    "read_dlq",
    "run",
]

HELP = "list, show, requeue or discard the audit lines a run quarantined (encrypted at rest)"
DESCRIPTION = f"""\
Work on a quarantine file written by `vaultwatch replay --quarantine`, `inspect` or `ship`, or on
the Kafka dead-letter topic `run` and `ship` write (FILE = kafka://HOST:PORT/TOPIC): the audit
lines that did not parse, each encrypted with the quarantine key. `list` shows the clear
metadata (id, time, source, position, reason, size) and needs no key; `show` decrypts one record;
`requeue` writes the decrypted lines to a file to feed back (after fixing the parser or the line);
`discard` removes records, e.g. once requeued. A Kafka topic is read with the [kafka] settings
(TLS, SASL) of the vaultwatch configuration (--config or $VAULTWATCH_CONFIG), as `run` reads them.

The key file is --key-file, else ${KEY_FILE_ENV}, else ~/.config/vaultwatch/quarantine.key
(the file the run that wrote the quarantine used). Ids may be shortened to a unique prefix.

examples:
  vaultwatch quarantine list bad-lines.jsonl
  vaultwatch quarantine list bad-lines.jsonl --json
  vaultwatch quarantine show bad-lines.jsonl 3fa2c1 --key-file /etc/vaultwatch/quarantine.key
  vaultwatch quarantine requeue bad-lines.jsonl --out requeued.log --discard
  vaultwatch replay requeued.log --alerts-out alerts.jsonl
  vaultwatch quarantine discard bad-lines.jsonl 3fa2c1 9b07de
  vaultwatch quarantine list kafka://127.0.0.1:9092/vault-audit.dlq
  vaultwatch quarantine requeue kafka://127.0.0.1:9092/vault-audit.dlq --out fixed.log
"""

#: The FILE argument naming a Kafka dead-letter topic instead of a file.
KAFKA_SCHEME = "kafka://"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the records' metadata (no key needed)")
    ls.add_argument("file", metavar="FILE", help="the quarantine file, or kafka://HOST:PORT/TOPIC")
    ls.add_argument("--json", action="store_true", help="one JSON object per record")
    show = sub.add_parser("show", help="one record, decrypted (the line may hold a secret)")
    show.add_argument("file", metavar="FILE", help="the quarantine file, or kafka://HOST:PORT/TOPIC")
    show.add_argument("id", metavar="ID", help="the record's id or a unique prefix")
    show.add_argument("--json", action="store_true", help="as one JSON object")
    rq = sub.add_parser("requeue", help="write the decrypted lines to a file, to feed back")
    rq.add_argument("file", metavar="FILE", help="the quarantine file, or kafka://HOST:PORT/TOPIC")
    rq.add_argument("ids", nargs="*", metavar="ID", help="records to requeue (default: all)")
    rq.add_argument(
        "--out", required=True, metavar="PATH", help="write the lines here (mode 0600; '-' for stdout)"
    )
    rq.add_argument("--discard", action="store_true", help="remove the records once written")
    dc = sub.add_parser("discard", help="remove records from the file")
    dc.add_argument("file", metavar="FILE", help="the quarantine file")
    dc.add_argument("ids", nargs="+", metavar="ID", help="records to remove")
    for sp in (ls, show, rq, dc):
        sp.add_argument(
            "--key-file",
            metavar="PATH",
            default=os.environ.get(KEY_FILE_ENV) or None,
            help=f"the quarantine key (default: ${KEY_FILE_ENV}, else ~/.config/vaultwatch/quarantine.key)",
        )
    for sp in (ls, show, rq):
        sp.add_argument(
            "--config",
            metavar="FILE",
            help="with kafka://: the vaultwatch TOML configuration (default $VAULTWATCH_CONFIG) whose "
            "[kafka] section (TLS, SASL, client id) the consumer uses, as `vaultwatch run` does; the "
            "brokers are the URL's",
        )


def _fail(message: str) -> int:
    print(f"vaultwatch quarantine: {message}", file=sys.stderr)  # noqa: T201
    return 2


def run(args: argparse.Namespace) -> int:
    """Entry point of ``vaultwatch quarantine``."""
    if args.file.startswith(KAFKA_SCHEME):
        return _run_dlq(args)
    path = Path(args.file)
    if not path.is_file():
        return _fail(f"no quarantine file at {path}: give the --quarantine PATH the run wrote to")
    key_file = Path(args.key_file) if args.key_file else default_key_file()
    if args.action in ("show", "requeue") and not key_file.is_file():
        return _fail(
            f"no quarantine key at {key_file}: pass --key-file (or set ${KEY_FILE_ENV}) to the key "
            "file the run that wrote the quarantine used"
        )
    try:
        return _ACTIONS[args.action](args, path, key_file)
    except QuarantineError as exc:
        hint = ""
        if "decrypt" in str(exc).lower() or "key" in str(exc).lower():
            hint = f" (is {key_file} the key the run that wrote {path} used? pass it with --key-file)"
        return _fail(f"{exc}{hint}")


def _list(args: argparse.Namespace, path: Path, key_file: Path) -> int:
    return _print_list(args, list_records(path), str(path))


def _print_list(args: argparse.Namespace, records: list[SealedRecord], where: str) -> int:
    if args.json:
        for r in records:
            print(  # noqa: T201
                json.dumps(
                    {
                        "id": r.id,
                        "quarantined_at": r.quarantined_at,
                        "source": r.source,
                        "position": r.position,
                        "reason": r.reason,
                        "size": r.size,
                    }
                )
            )
        return 0
    for r in records:
        print(f"{r.id[:12]}  {r.quarantined_at}  {r.reason:<20} {r.size:>8}  {r.source}:{r.position}")  # noqa: T201
    print(f"{len(records)} record(s) in {where}", file=sys.stderr)  # noqa: T201
    return 0


def _show(args: argparse.Namespace, path: Path, key_file: Path) -> int:
    return _print_record(args, show_record(path, args.id, key_file=key_file))


def _print_record(args: argparse.Namespace, rec: QuarantineRecord) -> int:
    line = rec.line().decode("utf-8", "replace")
    if args.json:
        print(  # noqa: T201
            json.dumps(
                {
                    "id": rec.id,
                    "quarantined_at": rec.quarantined_at,
                    "source": rec.source,
                    "position": rec.position,
                    "reason": rec.reason,
                    "detail": rec.detail,
                    "size": rec.size,
                    "line": line,
                }
            )
        )
        return 0
    for name in ("id", "quarantined_at", "source", "position", "reason", "detail", "size"):
        print(f"{name:<15} {getattr(rec, name)}")  # noqa: T201
    print(f"{'line':<15} {line}")  # noqa: T201
    return 0


def _requeue(args: argparse.Namespace, path: Path, key_file: Path) -> int:
    records = list(requeue(path, args.ids or None, key_file=key_file))
    removed = _write_lines(args, records, lambda: discard(path, [r.id for r in records]))
    where = "stdout" if args.out == "-" else args.out
    print(  # noqa: T201
        f"{len(records)} line(s) written to {where}"
        + (f"; {removed} record(s) discarded" if removed else ""),
        file=sys.stderr,
    )
    return 0


def _write_lines(
    args: argparse.Namespace, records: list[QuarantineRecord], drop: Callable[[], int] | None
) -> int:
    """Write the records' lines to ``args.out`` (whole or not at all); discard them if asked."""
    data = b"".join(r.line().rstrip(b"\n") + b"\n" for r in records)
    if args.out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        out = Path(args.out)
        with atomic_writer(out) as f:
            os.fchmod(f.fileno(), 0o600)  # the lines may hold secrets
            f.write(data)
    return drop() if drop is not None and args.discard and records else 0


def _discard(args: argparse.Namespace, path: Path, key_file: Path) -> int:
    removed = discard(path, args.ids)
    print(f"{removed} record(s) discarded from {path}", file=sys.stderr)  # noqa: T201
    return 0


_ACTIONS = {"list": _list, "show": _show, "requeue": _requeue, "discard": _discard}


# -- the Kafka dead-letter topic ---------------------------------------------------------------
def _run_dlq(args: argparse.Namespace) -> int:
    servers, _, topic = args.file.removeprefix(KAFKA_SCHEME).partition("/")
    if not servers or not topic or "/" in topic:
        return _fail(f"{args.file}: expected kafka://HOST:PORT[,HOST:PORT]/TOPIC")
    if args.action == "discard":
        return _fail(
            "a Kafka topic cannot drop single records: DLQ records age out with the topic's "
            "retention (requeue them, then let retention remove them)"
        )
    if args.action == "requeue" and args.discard:
        return _fail("--discard does not apply to a Kafka topic (records age out with its retention)")
    key_file = Path(args.key_file) if args.key_file else default_key_file()
    if args.action in ("show", "requeue") and not key_file.is_file():
        return _fail(
            f"no quarantine key at {key_file}: pass --key-file (or set ${KEY_FILE_ENV}) to the key "
            "file the `run` or `ship` that wrote the DLQ used"
        )
    where = f"{KAFKA_SCHEME}{servers}/{topic}"
    try:
        kafka = dlq_kafka_config(servers, args.config)
    except ConfigError as exc:
        return _fail(f"{exc}\n  (the brokers of {KAFKA_SCHEME}HOST:PORT/TOPIC stand for kafka.bootstrap)")
    try:
        records, unsealed, repeated = read_dlq(kafka, topic)
    except Exception as exc:  # noqa: BLE001 - any client error is reported, never a traceback
        return _fail(f"cannot read {where}: {exc.__class__.__name__}: {exc}")
    if repeated:
        print(  # noqa: T201
            f"vaultwatch quarantine: {repeated} repeated copies in {where} (a worker re-read its "
            "records after a fault) are shown once",
            file=sys.stderr,
        )
    if unsealed:
        print(  # noqa: T201
            f"vaultwatch quarantine: {unsealed} record(s) in {where} are not sealed vaultwatch "
            "DLQ records (written before the DLQ was encrypted?) and are not shown",
            file=sys.stderr,
        )
    try:
        if args.action == "list":
            return _print_list(args, records, where)
        if args.action == "show":
            (rec,) = open_records(records, [args.id], key_file=key_file, where=where)
            return _print_record(args, rec)
        opened = list(open_records(records, args.ids or None, key_file=key_file, where=where))
        _write_lines(args, opened, None)
        dest = "stdout" if args.out == "-" else args.out
        print(f"{len(opened)} line(s) written to {dest}", file=sys.stderr)  # noqa: T201
        return 0
    except QuarantineError as exc:
        hint = ""
        if "key" in str(exc).lower():
            hint = f" (is {key_file} the key the run that wrote {where} used? pass it with --key-file)"
        return _fail(f"{exc}{hint}")


def dlq_kafka_config(servers: str, config: str | None) -> KafkaConfig:
    """The ``[kafka]`` section of ``config`` (``None``: ``$VAULTWATCH_CONFIG``, if set) with the
    brokers of a ``kafka://`` URL, validated as ``vaultwatch run`` validates its own (blanks
    around the commas dropped). Raises :class:`~vaultwatch.errors.ConfigError`."""
    return load_settings(config, {**os.environ, f"{ENV_PREFIX}KAFKA__BOOTSTRAP": servers}).kafka


def dlq_consumer_config(kafka: KafkaConfig) -> dict[str, Any]:
    """kafka-python settings to read a DLQ topic whole: the client settings of the one mapping
    (:meth:`~vaultwatch.settings.KafkaConfig.client_settings`, so TLS and SASL are ``run``'s),
    no consumer group, from the earliest offset, and fetches large enough for a record holding an
    over-long line."""
    cfg = consumer_config(kafka.client_settings(), replace(kafka.consumer_settings(), group_id=None))
    cfg.update(max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=16 * 1024 * 1024)
    return cfg


class DlqContents(NamedTuple):
    """What :func:`read_dlq` found: each record once, the messages that were not sealed vaultwatch
    DLQ records, and the repeated copies skipped."""

    records: list[SealedRecord]
    unsealed: int
    repeated: int


def read_dlq(kafka: KafkaConfig | Sequence[str], topic: str, *, timeout: float = 30.0) -> DlqContents:
    """Every record of ``topic`` from its beginning to its end when called, as sealed records
    (nothing decrypted), how many were not sealed vaultwatch DLQ records, and how many repeated
    copies were skipped.

    A refused record is put again when its worker re-reads it (a rewind after a store or broker
    fault): the DLQ is at-least-once, so a record id seen before is skipped here, and each refused
    record appears once.

    ``kafka`` is the ``[kafka]`` configuration (:func:`dlq_kafka_config`), or only the brokers of
    a plaintext cluster, which then stand for a configuration with nothing else set."""
    if not isinstance(kafka, KafkaConfig):
        kafka = KafkaConfig(bootstrap=",".join([kafka] if isinstance(kafka, str) else kafka))
    k = import_kafka()
    consumer = k.KafkaConsumer(**dlq_consumer_config(kafka))
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise QuarantineError(f"no topic {topic!r} (or it has no partitions)")
        tps = [k.TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[SealedRecord] = []
        seen: set[str] = set()
        unsealed = repeated = 0
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise QuarantineError(f"timed out reading {topic!r} to its end")
            for batch in consumer.poll(timeout_ms=500).values():
                for m in batch:
                    try:
                        rec = dlq_record(m.value, m.headers or [])
                    except QuarantineError:
                        unsealed += 1
                        continue
                    if rec.id and rec.id in seen:
                        repeated += 1
                        continue
                    seen.add(rec.id)
                    records.append(rec)
        return DlqContents(records, unsealed, repeated)
    finally:
        consumer.close()
