"""Shipper throughput against the bare kafka-python producer, same bytes, same broker, same run.

Entries come from a real OpenBao dev server driven through its API (``bench.common``), repeated
with fresh request ids up to ``--entries``.

Measured, each on a fresh topic:

* ``producer``: ``KafkaProducer.send`` of the exact (key, value) pairs the shipper produces
  (the redacted re-encoding keyed by identity), flushed once at the end: the ceiling;
* ``producer+flush``: the same, flushed every ``--batch`` records as the shipper does;
* ``shipper(memory)``: :class:`~ingest.ship.Shipper` over an in-memory source: parse, dedup,
  encode, produce, flush, commit per batch;
* ``shipper(file)``: the same over :class:`~ingest.sources.file.FileSource` reading the file,
  with a checkpoint file written (fsync) at every commit.

Run: ``python -m bench.bench_ship [--entries 50000] [--bootstrap HOST:PORT]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ingest.codec import encode_entry
from ingest.kafka_config import KafkaSettings, ProducerSettings, import_kafka, producer_config
from ingest.parse import Parser
from ingest.quarantine import MemoryQuarantine
from ingest.ship import Shipper
from ingest.sources.base import RawRecord
from vaultwatch.demo.servers import KafkaBroker

from .common import real_openbao_log, scaled_lines


class MemorySource:
    name = "memory"

    def __init__(self, lines: list[bytes]) -> None:
        self.records = [RawRecord(line, i, "memory") for i, line in enumerate(lines)]
        self.last = -1

    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Iterator[list[RawRecord]]:
        for i in range(0, len(self.records), max_records):
            yield self.records[i : i + max_records]

    def commit(self, record: RawRecord) -> None:
        self.last = record.position

    def close(self) -> None:
        pass


def bare_producer(
    kafka: KafkaSettings, ps: ProducerSettings, topic: str, pairs: list[Any], every: int
) -> float:
    k = import_kafka()
    p = k.KafkaProducer(**producer_config(kafka, ps))
    try:
        p.send(topic, value=b"warm-up").get(timeout=30)  # metadata, connection, producer id
        t0 = time.perf_counter()
        futs = []
        for i, (key, value) in enumerate(pairs, 1):
            futs.append(p.send(topic, value=value, key=key))
            if every and i % every == 0:
                p.flush()
        p.flush()
        elapsed = time.perf_counter() - t0
        assert all(f.succeeded() for f in futs)
        return elapsed
    finally:
        p.close()


def shipper_run(kafka: KafkaSettings, ps: ProducerSettings, topic: str, source: Any, batch: int) -> float:
    k = import_kafka()
    p = k.KafkaProducer(**producer_config(kafka, ps))
    try:
        p.send(topic, value=b"warm-up").get(timeout=30)
        shipper = Shipper(source, p, topic, quarantine=MemoryQuarantine(), max_batch=batch)
        t0 = time.perf_counter()
        stats = shipper.run()
        elapsed = time.perf_counter() - t0
        assert stats.produce_errors == 0 and not stats.quarantined, stats
        return elapsed
    finally:
        p.close()


def file_run(
    kafka: KafkaSettings, ps: ProducerSettings, topic: str, log: Path, work: Path, batch: int
) -> float:
    from ingest.sources.file import FileSource

    ckpt = work / f"ship-{uuid.uuid4().hex[:8]}.ckpt"
    src = FileSource(log, checkpoint=ckpt)
    try:
        return shipper_run(kafka, ps, topic, src, batch)
    finally:
        src.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--linger-ms", type=int, default=20)
    ap.add_argument("--compression", default=None)
    ap.add_argument("--bootstrap", help="use this broker instead of starting Tansu")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best of each is reported")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ship-") as tmp:
        work = Path(tmp)
        lines = scaled_lines(real_openbao_log(), args.entries)
        log = work / "audit.log"
        log.write_bytes(b"\n".join(lines) + b"\n")
        print(f"{len(lines)} real OpenBao entries ({log.stat().st_size / 1e6:.1f} MB)")
        parser = Parser()
        events = [parser.parse(line) for line in lines]
        pairs = [(e.identity.key.encode(), encode_entry(e)) for e in events]
        out_bytes = sum(len(v) for _, v in pairs)
        ps = ProducerSettings(linger_ms=args.linger_ms, compression=args.compression)

        broker = None if args.bootstrap else KafkaBroker().start()
        try:
            kafka = KafkaSettings(args.bootstrap or broker.bootstrap)  # type: ignore[union-attr]
            topic = lambda: f"bench-{uuid.uuid4().hex[:8]}"  # noqa: E731 - a fresh topic per run
            runs: dict[str, Any] = {
                "producer": lambda: bare_producer(kafka, ps, topic(), pairs, 0),
                "producer+flush": lambda: bare_producer(kafka, ps, topic(), pairs, args.batch),
                "shipper(memory)": lambda: shipper_run(kafka, ps, topic(), MemorySource(lines), args.batch),
                "shipper(file)": lambda: file_run(kafka, ps, topic(), log, work, args.batch),
            }
            # Interleaved rounds, best of each: the machine is shared, so take the least disturbed.
            results: dict[str, float] = {}
            for _ in range(args.repeat):
                for name, fn in runs.items():
                    secs = fn()
                    results[name] = min(secs, results.get(name, secs))
        finally:
            if broker is not None:
                broker.stop()

    n = len(lines)
    ceiling = results["producer"]
    print(
        f"{n} entries, {out_bytes / 1e6:.1f} MB produced per run, batch {args.batch}, best of {args.repeat}, "
        f"linger {args.linger_ms} ms, compression {args.compression}"
    )
    print(f"{'run':<18}{'seconds':>9}{'entries/s':>12}{'MB/s':>8}{'vs producer':>13}")
    for name, secs in results.items():
        print(
            f"{name:<18}{secs:>9.2f}{n / secs:>12,.0f}{out_bytes / 1e6 / secs:>8.1f}{ceiling / secs:>13.2f}"
        )


if __name__ == "__main__":
    main()
