"""The streaming worker against the real broker: exactly-once state across crashes, SIGTERM, poison.

The stream is a real OpenBao audit log (demo traffic with attacks), shipped to a 3-partition topic
keyed by identity. A clean run gives the reference alert set; a worker killed with SIGKILL at
random points and restarted must end with exactly the same alert ids and no duplicate rows.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ingest.codec import encode_entry
from ingest.dedup import Deduplicator
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.demo.servers import KafkaBroker, OpenBaoServer

from .pipeline_state import cross_done, cross_states

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture(scope="module")
def audit_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    from vaultwatch.cli.demo import drive_traffic, setup_org

    work = tmp_path_factory.mktemp("pipeline-bao")
    with OpenBaoServer(work / "srv") as srv:
        drive_traffic(srv, setup_org(srv.client()), 120)
        srv.stop()
        lines = srv.audit_log.read_bytes().splitlines()
    assert len(lines) > 2500
    return lines


def _create_topic(broker: KafkaBroker, topic: str, partitions: int = PARTITIONS) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=[broker.bootstrap])
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def _send(
    broker: KafkaBroker, topic: str, events: Iterable[AuditEvent], extra: tuple[bytes, ...] = ()
) -> dict[int, int]:
    """What the shipper does: each event keyed by its identity (``extra``: raw poison records);
    the end offset of each partition, from the broker's acknowledgements.

    (Tansu's ListOffsets answer lags behind the log, so the acknowledgements are the truth.)
    """
    from kafka import KafkaProducer

    prod = KafkaProducer(
        bootstrap_servers=[broker.bootstrap], acks="all", linger_ms=5, max_request_size=8 << 20
    )
    try:
        futures = [prod.send(topic, value=encode_entry(ev), key=ev.identity.key.encode()) for ev in events]
        futures += [prod.send(topic, value=bad, key=b"poison") for bad in extra]
        prod.flush()
        ends: dict[int, int] = {}
        for f in futures:
            md = f.get(timeout=30)
            ends[md.partition] = max(ends.get(md.partition, 0), md.offset + 1)
    finally:
        prod.close()
    return ends


def _produce(
    broker: KafkaBroker, topic: str, lines: list[bytes], extra: tuple[bytes, ...] = ()
) -> dict[int, int]:
    """Send the stream (second copies dropped), then ``extra``; the end offsets (see _send)."""
    parser, dedup = Parser(), Deduplicator()
    events = (ev for ev in map(parser.parse, lines) if not dedup.is_duplicate(ev))
    return _send(broker, topic, events, extra)


def _config(
    tmp: Path,
    broker: KafkaBroker,
    topic: str,
    group: str,
    db: str,
    archive: Path | None = None,
    batch: int = 200,
) -> Path:
    """A ``vaultwatch run`` configuration file (the archive off unless a directory is given)."""
    cfg = tmp / f"{group}.toml"
    arch = f'enabled = true\npath = "{archive}"\nflush_interval_s = 0.2' if archive else "enabled = false"
    cfg.write_text(
        f"""
[kafka]
bootstrap = "{broker.bootstrap}"
topic = "{topic}"
group_id = "{group}"
max_poll_records = {batch}

[store]
url = "{db}"

[archive]
{arch}
"""
    )
    return cfg


def _start(cfg: Path, tmp: Path, name: str, interval: float = 0.3) -> subprocess.Popen[bytes]:
    """``vaultwatch run --config cfg`` as a child process logging to ``<tmp>/<name>.log``."""
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vaultwatch.cli",
                "--log-level",
                "INFO",
                "run",
                "--config",
                str(cfg),
                "--checkpoint-interval",
                str(interval),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()


def _offsets_done(db: str, group: str, total_by_partition: dict[int, int]) -> bool:
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            rows = c.execute(sa.text("SELECT * FROM consumer_offsets")).mappings().all()
    except sa.exc.SQLAlchemyError:
        return False
    finally:
        eng.dispose()
    got = {int(r["partition"]): int(r["offset"]) for r in rows if r["group_id"] == group}
    if not all(got.get(p, 0) >= n for p, n in total_by_partition.items()):
        return False
    # The cross-identity stage has judged everything too (its alerts are in the store).
    return cross_done(db, group, total_by_partition)


def _alert_ids(db: str) -> list[str]:
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            return [r[0] for r in c.execute(sa.text("SELECT id FROM alerts"))]
    finally:
        eng.dispose()


def _wait_done(
    db: str,
    group: str,
    ends: dict[int, int],
    procs: list[subprocess.Popen[bytes]],
    timeout: float = 120,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _offsets_done(db, group, ends):
            return
        for p in procs:
            assert p.poll() is None, f"worker exited early with {p.returncode}"
        time.sleep(0.3)
    tail = "" if log is None else "\nworker log:\n" + log.read_text(errors="replace")[-12000:]
    raise AssertionError(f"the worker did not catch up in time: {_progress(db, group, ends)}{tail}")


def _progress(db: str, group: str, ends: dict[int, int]) -> str:
    """Where the group stands against ``ends``, for a failure message."""
    eng = sa.create_engine(db)
    try:
        with eng.connect() as c:
            rows = c.execute(sa.text("SELECT * FROM consumer_offsets")).mappings().all()
    except sa.exc.SQLAlchemyError as exc:
        return f"store unreadable: {exc}"
    finally:
        eng.dispose()
    got = {int(r["partition"]): int(r["offset"]) for r in rows if r["group_id"] == group}
    cross = [{k: st[k] for k in ("heard", "idle", "pending") if k in st} for st in cross_states(db, group)]
    return f"wanted {ends}, offsets {got}, cross stage {cross}"


def _wait_for_log(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    start = path.stat().st_size if path.exists() else 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace")[start:]:
            return
        assert proc.poll() is None, f"worker exited with {proc.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"{text!r} never logged")


def _wait_loaded(path: Path, topic: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    """Wait until the worker logging to ``path`` owns every partition of ``topic`` and of its
    repartition topic, then 3 s more: an owned partition's state is loaded within about a second
    (on records, or by the worker's check of its owned partitions on an empty poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if all(
            "partitions assigned: [" + ", ".join(f"('{t}', {p})" for p in range(PARTITIONS)) + "]" in text
            for t in (topic, f"{topic}.xid")
        ):
            time.sleep(3.0)
            return
        assert proc.poll() is None, f"worker exited with {proc.returncode}"
        time.sleep(0.2)
    raise AssertionError(f"the worker never took every partition:\n{path.read_text()[-6000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


@pytest.fixture(scope="module")
def stream(
    audit_lines: list[bytes], kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    topic = f"pipeline-{random.randrange(1 << 30):x}"
    _create_topic(kafka_broker, topic)
    ends = _produce(kafka_broker, topic, audit_lines)
    assert len(ends) >= 2  # identities hash onto several partitions
    tmp = tmp_path_factory.mktemp("pipeline")
    db = f"sqlite:///{tmp / 'clean.db'}"
    cfg = _config(tmp, kafka_broker, topic, "clean", db)
    proc = _start(cfg, tmp, "clean")
    try:
        _wait_done(db, "clean", ends, [proc])
    finally:
        assert _stop(proc) == 0, (tmp / "clean.log").read_text()[-3000:]
    clean = _alert_ids(db)
    assert clean, "the clean run raised no alert"
    yield {"topic": topic, "ends": ends, "clean": clean, "tmp": tmp}


def test_clean_run_has_no_duplicate_rows_and_catches_attacks(stream: dict[str, Any]) -> None:
    clean = stream["clean"]
    assert len(clean) == len(set(clean))


def test_kill_9_five_times_gives_the_same_alert_set(
    stream: dict[str, Any], kafka_broker: KafkaBroker
) -> None:
    tmp: Path = stream["tmp"]
    db = f"sqlite:///{tmp / 'crash.db'}"
    cfg = _config(tmp, kafka_broker, stream["topic"], "crash", db)
    rng = random.Random(1234)
    kills = 0
    for _ in range(5):
        proc = _start(cfg, tmp, "crash")
        time.sleep(rng.uniform(3.5, 6.0))  # group join takes ~3 s; then kill mid-stream
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait(timeout=30)
    assert kills == 5
    proc = _start(cfg, tmp, "crash")
    try:
        _wait_for_log(tmp / "crash.log", "partitions assigned", proc)
        _wait_done(db, "crash", stream["ends"], [proc])
    finally:
        assert _stop(proc) == 0
    got = _alert_ids(db)
    assert len(got) == len(set(got)), "duplicate alert rows"
    assert sorted(got) == sorted(stream["clean"])


def test_sigterm_twice_gives_the_same_alert_set(stream: dict[str, Any], kafka_broker: KafkaBroker) -> None:
    tmp: Path = stream["tmp"]
    db = f"sqlite:///{tmp / 'term.db'}"
    cfg = _config(tmp, kafka_broker, stream["topic"], "term", db)
    for extra in (0.5, 1.5):
        proc = _start(cfg, tmp, "term")
        _wait_for_log(tmp / "term.log", "partitions assigned", proc)
        time.sleep(extra)  # mid-stream
        assert _stop(proc) == 0
    proc = _start(cfg, tmp, "term")
    try:
        _wait_for_log(tmp / "term.log", "partitions assigned", proc)
        _wait_done(db, "term", stream["ends"], [proc])
    finally:
        assert _stop(proc) == 0
    assert sorted(_alert_ids(db)) == sorted(stream["clean"])


def test_two_workers_on_postgresql_survive_losing_one(
    stream: dict[str, Any], kafka_broker: KafkaBroker, pg_fresh_url: str
) -> None:
    """Scale-out: two workers share the group on PostgreSQL; one is killed; the other takes over."""
    tmp: Path = stream["tmp"]
    pg_url = pg_fresh_url
    cfg = _config(tmp, kafka_broker, stream["topic"], "scale", pg_url)
    a = _start(cfg, tmp, "scale-a")
    b = _start(cfg, tmp, "scale-b")
    try:
        time.sleep(6.0)  # both joined and working
        a.kill()
        a.wait(timeout=30)
        _wait_done(pg_url, "scale", stream["ends"], [b], timeout=180)
        # Done in the store can come from the killed worker's last checkpoints, before the
        # survivor owns its partitions. Alerts an engine raises only when it is flushed at a clean
        # stop (the clean run's end) come from whichever worker holds that engine then: wait until
        # the survivor has taken and loaded every partition of both stages.
        _wait_loaded(tmp / "scale-b.log", stream["topic"], b)
        _wait_done(pg_url, "scale", stream["ends"], [b], timeout=60)
    finally:
        if a.poll() is None:
            a.kill()
        assert _stop(b) == 0, (tmp / "scale-b.log").read_text()[-3000:]
    got = _alert_ids(pg_url)
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(stream["clean"])


def test_poison_records_go_to_the_dlq_and_nothing_valid_is_lost(
    audit_lines: list[bytes], kafka_broker: KafkaBroker, stream: dict[str, Any]
) -> None:
    from kafka import KafkaConsumer

    topic = f"poison-{random.randrange(1 << 30):x}"
    _create_topic(kafka_broker, topic)
    poison = (
        b'{"time": "2026-11-28T00:00:00Z", "type": "req',
        b"\xff\xfe\x00not utf-8 \xc3\x28",
        b'{"time":"2026-11-28T00:00:00Z","type":"request","request":{"data":{"x":"'
        + b"a" * 2_200_000
        + b'"}}}',
    )
    ends = _produce(kafka_broker, topic, audit_lines, extra=poison)
    tmp: Path = stream["tmp"]
    db = f"sqlite:///{tmp / 'poison.db'}"
    proc = _start(_config(tmp, kafka_broker, topic, "poison", db), tmp, "poison")
    try:
        _wait_done(db, "poison", ends, [proc])
    finally:
        assert _stop(proc) == 0
    assert sorted(_alert_ids(db)) == sorted(stream["clean"])
    c = KafkaConsumer(
        f"{topic}.dlq",
        bootstrap_servers=[kafka_broker.bootstrap],
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    try:
        dlq = list(c)
    finally:
        c.close()
    reasons = sorted(dict(m.headers)["vaultwatch.reason"].decode() for m in dlq)
    assert reasons == ["invalid_json", "no_json", "too_large"]
    # Kept whole, sealed with the quarantine key (issue 18).
    from ingest.quarantine import dlq_record, open_records

    lines = [r.line() for r in open_records([dlq_record(m.value, m.headers) for m in dlq])]
    assert sorted(lines) == sorted(poison)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_broker_outage_recovers_without_restart_or_busy_loop(
    audit_lines: list[bytes], stream: dict[str, Any], tmp_path: Path
) -> None:
    broker = KafkaBroker().start()
    topic = "outage"
    try:
        _create_topic(broker, topic)
        ends = _produce(broker, topic, audit_lines[:600])
        db = f"sqlite:///{tmp_path / 'outage.db'}"
        cfg = _config(tmp_path, broker, topic, "outage", db)
        proc = _start(cfg, tmp_path, "outage")
        try:
            _wait_done(db, "outage", ends, [proc])
            broker.kill()
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(8.0)
            cpu = _cpu_seconds(proc.pid) - cpu0
            wall = time.monotonic() - t0
            assert proc.poll() is None, "the worker died with the broker"
            assert cpu < 0.5 * wall, f"busy loop while the broker was down: {cpu:.1f}s CPU in {wall:.1f}s"
            # The broker keeps data in memory only: it comes back empty, on the same port.
            broker = KafkaBroker(port=broker.port).start()
            _create_topic(broker, topic)
            # Re-send the stream (already in state: skipped) plus the rest of the log: new offsets.
            # The repartition topic came back empty too: the cross stage follows it from its start.
            ends2 = _produce(broker, topic, audit_lines)
            # Up to 3 minutes: a consumer whose rejoin stalls (see KafkaSource.join_stalled) is
            # replaced after its join limit, 46 s with these timings, and must then catch up.
            _wait_done(db, "outage", ends2, [proc], timeout=180, log=tmp_path / "outage.log")
            assert _stop(proc) == 0, (tmp_path / "outage.log").read_text()[-3000:]
            # Nothing lost, nothing doubled: the alerts of one uninterrupted run of the same log.
            assert sorted(_alert_ids(db)) == sorted(stream["clean"])
        finally:
            if proc.poll() is None:
                assert _stop(proc) == 0, (tmp_path / "outage.log").read_text()[-3000:]
    finally:
        broker.stop()
