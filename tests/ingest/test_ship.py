"""The shipper: unit tests over a list source and a fake producer (behind the Producer protocol),
then the real chain OpenBao -> audit file -> ship -> broker -> consume, and `vaultwatch ship`
killed with SIGKILL mid-stream."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest

from ingest.codec import encode_entry
from ingest.errors import ParseError
from ingest.kafka_config import KafkaSettings, ProducerSettings, import_kafka, producer_config
from ingest.parse import Parser
from ingest.quarantine import FileQuarantine, MemoryQuarantine, dlq_record, open_records
from ingest.ship import Backoff, ShipInterrupted, Shipper
from ingest.sources.base import RawRecord
from ingest.sources.checkpoint import load_checkpoint
from ingest.sources.file import FileSource
from vaultwatch.demo.servers import AuditDevice, KafkaBroker, OpenBaoServer, free_port

_kafka = import_kafka()

CANARY_SECRET = "canary-ship-secret-5e0c9a71"
CANARY_PASSWORD = "canary-ship-pw-13b8f2d4"
ROOT = Path(__file__).resolve().parents[2]


def _traffic(srv: OpenBaoServer, rounds: int = 1) -> None:
    """Real requests: a secret with a canary value, a login, reads, a denial, a failed login."""
    root = srv.client()
    root.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    root.secrets.kv.v2.create_or_update_secret(
        path="app/db", secret={"password": CANARY_SECRET}, mount_point="kv"
    )
    root.sys.create_or_update_acl_policy("reader", 'path "kv/data/app/*" { capabilities = ["read"] }')
    root.sys.enable_auth_method("userpass")
    root.auth.userpass.create_or_update_user("alice", password=CANARY_PASSWORD, policies=["reader"])
    for _ in range(rounds):
        alice = srv.client(token="")
        alice.auth.userpass.login("alice", CANARY_PASSWORD)
        alice.secrets.kv.v2.read_secret_version("app/db", mount_point="kv", raise_on_deleted_version=False)
        with pytest.raises(hvac.exceptions.Forbidden):
            alice.secrets.kv.v2.read_secret_version(
                "other/x", mount_point="kv", raise_on_deleted_version=False
            )
        with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
            srv.client(token="").auth.userpass.login("alice", "wrong-password")
        root.secrets.kv.v2.read_secret_version("app/db", mount_point="kv", raise_on_deleted_version=False)


@pytest.fixture(scope="module")
def bao_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A real OpenBao with two file devices in one directory: HMAC'd and ``log_raw``."""
    work = tmp_path_factory.mktemp("bao-ship")
    logs = work / "logs"
    logs.mkdir()
    devices = [
        AuditDevice("file", "file", {"file_path": str(logs / "audit.log")}),
        AuditDevice("file", "raw", {"file_path": str(logs / "raw.log"), "log_raw": "true"}),
    ]
    srv = OpenBaoServer(work / "srv", devices=devices)
    srv.start()
    try:
        _traffic(srv, rounds=2)
    finally:
        srv.stop()
    yield {"dir": logs, "hmac": logs / "audit.log", "raw": logs / "raw.log"}
    srv.cleanup()


# -- fakes behind the seams -----------------------------------------------------------------------


class ListSource:
    """A finite Source over byte lines; records every commit and what was acknowledged then."""

    name = "list"

    def __init__(self, lines: list[bytes], producer: FakeProducer | None = None) -> None:
        self.records = [RawRecord(line, i, "list") for i, line in enumerate(lines)]
        self.commits: list[int] = []
        self.acked_at_commit: list[int] = []
        self.producer = producer

    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Iterator[list[RawRecord]]:
        for i in range(0, len(self.records), max_records):
            yield self.records[i : i + max_records]

    def commit(self, record: RawRecord) -> None:
        self.commits.append(record.position)
        if self.producer is not None:
            self.acked_at_commit.append(len(self.producer.acked))

    def close(self) -> None:
        pass


class FakeFuture:
    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None


class FakeProducer:
    """Acknowledges on flush, except that the first ``fail_flushes`` flushes fail every record."""

    def __init__(self, fail_flushes: int = 0) -> None:
        self.fail_flushes = fail_flushes
        self.pending: list[tuple[FakeFuture, str, bytes | None, bytes | None]] = []
        self.acked: list[tuple[str, bytes | None, bytes | None]] = []
        self.flushes = 0

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
        f = FakeFuture()
        self.pending.append((f, topic, key, value))
        return f

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        for f, topic, key, value in self.pending:
            f.is_done = True
            if self.fail_flushes > 0:
                f.exception = ConnectionError("broker unavailable")
            else:
                self.acked.append((topic, key, value))
        self.pending = []
        self.fail_flushes = max(0, self.fail_flushes - 1)


# -- unit -----------------------------------------------------------------------------------------


def test_ships_redacted_entries_keyed_by_identity_then_commits(bao_logs: dict[str, Path]) -> None:
    raw_lines = bao_logs["raw"].read_bytes().splitlines()
    assert any(CANARY_SECRET.encode() in line for line in raw_lines)  # the raw device leaks it
    junk = [b"not an audit entry", b'{"time":"2026-01-01T00:00:00Z","type":', b""]
    lines = raw_lines[:5] + junk + raw_lines[5:]
    producer = FakeProducer()
    source = ListSource(lines, producer)
    quarantine = MemoryQuarantine()
    shipper = Shipper(source, producer, "vault-audit", quarantine=quarantine, max_batch=7)
    stats = shipper.run()

    parser = Parser()
    events = [parser.parse(line) for line in raw_lines]
    assert [k for _, k, _ in producer.acked] == [e.identity.key.encode() for e in events]
    assert {t for t, _, _ in producer.acked} == {"vault-audit"}
    for _, _, value in producer.acked:
        assert value is not None and CANARY_SECRET.encode() not in value
        assert CANARY_PASSWORD.encode() not in value
    # What is shipped parses back to the same (redacted) event.
    assert parser.parse(producer.acked[0][2] or b"").request_id == events[0].request_id
    assert stats.lines == len(lines) and stats.shipped == len(raw_lines) and stats.blank == 1
    assert dict(stats.quarantined) == {"no_json": 1, "invalid_json": 1}
    assert [r.line() for r in quarantine.records] == junk[:2]
    assert quarantine.records[0].position == "5"
    # One commit per batch, on its last record, after everything before it was acknowledged.
    n_batches = -(-len(lines) // 7)
    assert source.commits == [min(i * 7 + 6, len(lines) - 1) for i in range(n_batches)]
    assert source.acked_at_commit[-1] == len(raw_lines) and stats.produce_errors == 0


def test_two_devices_copies_are_shipped_once(bao_logs: dict[str, Path]) -> None:
    hmac_lines = bao_logs["hmac"].read_bytes().splitlines()
    raw_lines = bao_logs["raw"].read_bytes().splitlines()
    producer = FakeProducer()
    stats = Shipper(ListSource(hmac_lines + raw_lines), producer, "t", quarantine=MemoryQuarantine()).run()
    keys, no_id = _entry_keys(bao_logs["hmac"], bao_logs["raw"])
    # Each device also gets its own start-up test entry (sys/audit/test), so the union is shipped.
    assert stats.shipped == len(keys) + no_id == len(producer.acked)
    assert stats.duplicates == len(hmac_lines) + len(raw_lines) - stats.shipped > len(hmac_lines) // 2
    assert _shipped_keys([v or b"" for _, _, v in producer.acked]) == (keys, no_id)


def test_broker_failures_are_retried_with_backoff_and_nothing_is_committed_meanwhile(
    bao_logs: dict[str, Path],
) -> None:
    lines = bao_logs["hmac"].read_bytes().splitlines()[:6]
    producer = FakeProducer(fail_flushes=3)
    source = ListSource(lines, producer)
    waits: list[float] = []
    commits_during_waits: list[int] = []

    def sleep(seconds: float) -> bool:
        waits.append(seconds)
        commits_during_waits.append(len(source.commits))
        return False

    shipper = Shipper(
        source, producer, "t", quarantine=MemoryQuarantine(), backoff=Backoff(0.2, 5.0), sleep=sleep, seed=1
    )
    stats = shipper.run()
    assert len(waits) == 3 and all(w >= 0.1 for w in waits)  # never a busy loop
    assert commits_during_waits == [0, 0, 0]
    assert source.commits == [5] and source.acked_at_commit == [6]
    assert stats.produce_errors == 18 and stats.retries == 3 and stats.shipped == 6
    # Each record was acknowledged exactly once, in order.
    assert [v for _, _, v in producer.acked] == [v for _, _, v in FakeProducerRun(lines).acked]


def FakeProducerRun(lines: list[bytes]) -> FakeProducer:  # noqa: N802 - reads like a value
    p = FakeProducer()
    Shipper(ListSource(lines), p, "t", quarantine=MemoryQuarantine()).run()
    return p


def test_a_producer_refusing_to_queue_is_asked_once_per_attempt(bao_logs: dict[str, Path]) -> None:
    class Refusing(FakeProducer):
        calls = 0
        refusals = 2

        def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> FakeFuture:
            self.calls += 1
            if self.refusals > 0:
                self.refusals -= 1
                raise TimeoutError("no metadata for the topic within max_block_ms")
            return super().send(topic, value, key)

    lines = bao_logs["hmac"].read_bytes().splitlines()[:10]
    producer = Refusing()
    source = ListSource(lines, producer)
    stats = Shipper(source, producer, "t", quarantine=MemoryQuarantine(), sleep=lambda s: False).run()
    # Attempt 1 and 2: one blocking refusal each, the rest refused at once; attempt 3 sends all.
    assert producer.calls == 1 + 1 + 10
    assert stats.retries == 2 and stats.shipped == 10 and source.commits == [9]
    assert len(producer.acked) == 10


def test_stop_while_the_broker_is_down_raises_and_leaves_the_source_uncommitted(
    bao_logs: dict[str, Path],
) -> None:
    lines = bao_logs["hmac"].read_bytes().splitlines()[:4]
    producer = FakeProducer(fail_flushes=1_000)
    source = ListSource(lines, producer)
    shipper = Shipper(source, producer, "t", quarantine=MemoryQuarantine(), sleep=lambda s: True)
    with pytest.raises(ShipInterrupted, match="not committed"):
        shipper.run()
    assert source.commits == [] and producer.acked == []


def test_too_large_records_are_quarantined_not_parsed(bao_logs: dict[str, Path], tmp_path: Path) -> None:
    class Cut(tuple[int, int]):
        @property
        def too_large(self) -> int:
            return self[1]

    head = bao_logs["hmac"].read_bytes().splitlines()[0][:100]
    source = ListSource([])
    source.records = [RawRecord(head, Cut((0, 5_000_000)), "list")]
    q = FileQuarantine(tmp_path / "q.jsonl", fsync=False)
    try:
        stats = Shipper(source, FakeProducer(), "t", quarantine=q).run()
    finally:
        q.close()
    assert dict(stats.quarantined) == {"too_large": 1} and stats.shipped == 0
    (rec,) = FileQuarantine.read(tmp_path / "q.jsonl")
    assert rec.reason == "too_large" and "5000000" in rec.detail and rec.line() == head
    assert oct((tmp_path / "q.jsonl").stat().st_mode & 0o777) == "0o600"


def test_parse_error_reasons_stay_stable() -> None:
    with pytest.raises(ValueError):
        ParseError("no-such-reason")


# -- real broker ----------------------------------------------------------------------------------


def _consume(bootstrap: str, topic: str, want: int, deadline: float = 20.0) -> list[Any]:
    c = _kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        end = time.monotonic() + 10
        parts: set[int] | None = None
        while not parts and time.monotonic() < end:
            parts = c.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        assert parts, f"topic {topic} never appeared"
        c.assign([_kafka.TopicPartition(topic, p) for p in parts])
        out: list[Any] = []
        end = time.monotonic() + deadline
        idle = 0
        while time.monotonic() < end and (len(out) < want or idle < 1):
            polled = c.poll(timeout_ms=500)
            got = [r for recs in polled.values() for r in recs]
            out.extend(got)
            idle = 0 if got else idle + 1
        return out
    finally:
        c.close()


def _entry_keys(*paths: Path) -> tuple[set[tuple[str, str]], int]:
    """Every ``(request.id, type)`` written to ``paths``, and how many entries had no id
    (OpenBao writes a few; they cannot be deduplicated, so each copy is shipped)."""
    keys: set[tuple[str, str]] = set()
    no_id = 0
    for path in paths:
        for line in path.read_bytes().splitlines():
            entry = json.loads(line)
            rid = (entry.get("request") or {}).get("id")
            if rid:
                keys.add((rid, entry["type"]))
            else:
                no_id += 1
    return keys, no_id


def _shipped_keys(values: list[bytes]) -> tuple[set[tuple[str, str]], int]:
    parser = Parser()
    keys: set[tuple[str, str]] = set()
    no_id = 0
    for v in values:
        ev = parser.parse(v)
        if ev.request_id:
            keys.add((ev.request_id, ev.type))
        else:
            no_id += 1
    return keys, no_id


@pytest.mark.integration
def test_openbao_file_to_topic_every_request_id_no_plaintext(
    bao_logs: dict[str, Path], kafka_broker: KafkaBroker, topic: str
) -> None:
    kafka = KafkaSettings(kafka_broker.bootstrap)
    producer = _kafka.KafkaProducer(**producer_config(kafka, ProducerSettings(linger_ms=5)))
    source = FileSource(bao_logs["dir"])  # both devices' files: the raw one holds plaintext
    try:
        stats = Shipper(source, producer, topic, quarantine=MemoryQuarantine(), max_batch=25).run()
    finally:
        producer.close()
        source.close()
    keys, no_id = _entry_keys(bao_logs["hmac"], bao_logs["raw"])
    assert stats.shipped == len(keys) + no_id and stats.duplicates > 0 and not stats.quarantined
    assert CANARY_SECRET.encode() in bao_logs["raw"].read_bytes()

    records = _consume(kafka_broker.bootstrap, topic, stats.shipped)
    parser = Parser()
    for r in records:
        assert CANARY_SECRET.encode() not in r.value and CANARY_PASSWORD.encode() not in r.value
        assert r.key == parser.parse(r.value).identity.key.encode()
    assert len(records) == stats.shipped
    assert _shipped_keys([r.value for r in records]) == (keys, no_id)  # every request.id
    # One identity, one partition.
    part_of: dict[bytes, set[int]] = {}
    for r in records:
        part_of.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in part_of.values()) and len(part_of) >= 3


# kafka-python drops the socket of a refused connection attempt without closing it; while the
# broker is down that happens on every reconnect. The library's, not ours: ignored here only.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.integration
def test_broker_outage_blocks_the_commit_until_the_broker_is_back(
    bao_logs: dict[str, Path], topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    # kafka-python's connection-error log records hold the exceptions, and through them the
    # sockets, until the end of the session: keep them out of the capture.
    caplog.set_level(logging.CRITICAL, logger="kafka")
    try:
        _outage(bao_logs["hmac"].read_bytes().splitlines(), topic)
    finally:
        gc.collect()  # the leaked sockets sit in reference cycles of the scenario's frames


def _outage(lines: list[bytes], topic: str) -> None:
    broker = KafkaBroker().start()
    kafka = KafkaSettings(broker.bootstrap, reconnect_backoff_max_ms=500, request_timeout_ms=3000)
    producers: list[Any] = []

    def new_producer() -> Any:
        producers.append(_kafka.KafkaProducer(**producer_config(kafka, ProducerSettings(linger_ms=0))))
        return producers[-1]

    try:
        first = ListSource(lines[:4])
        Shipper(first, new_producer(), topic, quarantine=MemoryQuarantine()).run()
        assert first.commits == [3]
        broker.kill()
        second = ListSource(lines[4:])
        waits: list[float] = []
        stop = threading.Event()

        def sleep(seconds: float) -> bool:
            waits.append(seconds)
            return stop.wait(seconds)

        shipper = Shipper(
            second, producers[0], topic, quarantine=MemoryQuarantine(), flush_timeout=1.0,
            backoff=Backoff(0.3, 1.0), sleep=sleep, reconnect=new_producer,
        )  # fmt: skip
        result: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: result.setdefault("stats", shipper.run()))
        worker.start()
        time.sleep(3.0)
        assert second.commits == [] and worker.is_alive()  # retrying, not committing
        assert waits and len(waits) < 10  # backing off, not spinning
        # Same address. Tansu keeps nothing across a restart, so the idempotent producer's
        # state is gone too: the shipper has to replace its producer to get through.
        broker = KafkaBroker(port=broker.port).start()
        worker.join(timeout=45)
        stop.set()
        worker.join(timeout=10)
        assert not worker.is_alive() and "stats" in result
        assert second.commits == [len(lines) - 5]
        assert result["stats"].produce_errors > 0 and result["stats"].shipped == len(lines) - 4
        records = _consume(broker.bootstrap, topic, len(lines) - 4)
        assert {r.value for r in records} >= {v for _, _, v in FakeProducerRun(lines[4:]).acked}
    finally:
        for p in producers:
            p.close(timeout=2)
        broker.stop()


def _offset(checkpoint: Path) -> int | None:
    cp = load_checkpoint(checkpoint)
    return cp.offset if cp is not None else None


def _ship_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaultwatch.cli", "--log-level", "INFO", "ship", *args]


@pytest.mark.integration
def test_cli_killed_with_sigkill_mid_stream_loses_nothing(
    openbao_factory: Any, kafka_broker: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    srv: OpenBaoServer = openbao_factory()
    checkpoint = tmp_path / "ship.ckpt"
    args = _ship_cmd(
        "--file", str(srv.audit_log), "--follow", "--checkpoint", str(checkpoint),
        "--bootstrap", kafka_broker.bootstrap, "--topic", topic,
        "--quarantine", str(tmp_path / "q.jsonl"), "--max-batch", "5", "--stats",
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stop = threading.Event()

    def traffic() -> None:
        client = srv.client()
        i = 0
        while not stop.is_set():
            client.sys.read_health_status(
                method="GET"
            ) if i % 2 else client.sys.list_mounted_secrets_engines()
            i += 1
            time.sleep(0.005)

    gen = threading.Thread(target=traffic)
    gen.start()
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 30
        while not checkpoint.exists() and time.monotonic() < end:
            time.sleep(0.1)
        assert checkpoint.exists(), "the shipper never committed"
        time.sleep(0.5)
        first.kill()  # SIGKILL, mid-stream: traffic is still flowing
        first.wait(timeout=10)
        first_out, _ = first.communicate()
        assert first.returncode == -signal.SIGKILL and first_out == b""
        killed_at = _offset(checkpoint)
        time.sleep(0.5)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    second = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        stop.set()
        gen.join(timeout=10)
        want, _ = _entry_keys(srv.audit_log)
        size = srv.audit_log.stat().st_size
        end = time.monotonic() + 30
        while time.monotonic() < end:
            if checkpoint.exists() and _offset(checkpoint) == size:
                break
            time.sleep(0.2)
        second.send_signal(signal.SIGTERM)  # graceful: finish, flush, commit, exit 0
        out, err = second.communicate(timeout=30)
    finally:
        stop.set()
        if second.poll() is None:
            second.kill()
            second.communicate()
    assert second.returncode == 0, err.decode()[-2000:]
    stats = json.loads(out)
    assert stats["shipped"] > 0 and stats["commits"] > 0 and stats["produce_errors"] == 0
    assert _offset(checkpoint) == size
    assert killed_at is not None and 0 < killed_at < size  # the kill did land mid-stream
    records = _consume(kafka_broker.bootstrap, topic, len(want))
    got, _ = _shipped_keys([r.value for r in records])
    assert got == want  # every entry, across the SIGKILL (some may have been sent twice)
    assert len(want) > 40


@pytest.mark.integration
def test_cli_stdin_with_dlq(bao_logs: dict[str, Path], kafka_broker: KafkaBroker, topic: str) -> None:
    data = bao_logs["hmac"].read_bytes() + b"garbage line\n" + bao_logs["raw"].read_bytes()
    proc = subprocess.run(
        _ship_cmd("--stdin", "--bootstrap", kafka_broker.bootstrap, "--topic", topic, "--dlq", "--stats"),
        input=data,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    stats = json.loads(proc.stdout)
    keys, no_id = _entry_keys(bao_logs["hmac"], bao_logs["raw"])
    assert stats["shipped"] == len(keys) + no_id and stats["duplicates"] > 0
    assert stats["quarantined"] == {"no_json": 1}
    assert CANARY_SECRET.encode() not in proc.stderr
    (dead,) = _consume(kafka_broker.bootstrap, f"{topic}.dlq", 1)
    (opened,) = open_records([dlq_record(dead.value, dead.headers)])  # sealed (issue 18)
    assert opened.line() == b"garbage line" and b"garbage" not in dead.value
    assert dict(dead.headers)["vaultwatch.reason"] == b"no_json"
    records = _consume(kafka_broker.bootstrap, topic, stats["shipped"])
    assert all(CANARY_SECRET.encode() not in r.value for r in records)
    assert _shipped_keys([r.value for r in records]) == (keys, no_id)


def test_cli_help_and_bad_arguments() -> None:
    from vaultwatch.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["ship", "--help"])
    assert ei.value.code == 0
    assert main(["ship", "--stdin", "--follow"]) == 2
    assert main(["ship", "--listen", "http://nowhere", "--bootstrap", "127.0.0.1:1"]) == 2


@pytest.mark.integration
def test_cli_listens_as_a_socket_audit_device(
    openbao_factory: Any, kafka_broker: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        _ship_cmd(
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--spool-dir",
            str(tmp_path / "spool"),
            "--bootstrap",
            kafka_broker.bootstrap,
            "--topic",
            topic,
            "--stats",
        ),  # fmt: skip
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
                time.sleep(0.1)
        file_log = tmp_path / "file.log"
        srv: OpenBaoServer = openbao_factory(
            devices=[
                AuditDevice("socket", "sock", {"address": f"127.0.0.1:{port}", "socket_type": "tcp"}),
                AuditDevice("file", "file", {"file_path": str(file_log)}),
            ]
        )
        _traffic(srv)
        srv.stop()
        keys = {
            (e["request"]["id"], e["type"])
            for e in map(json.loads, file_log.read_bytes().splitlines())
            if e["request"].get("id") and e["request"].get("path") != "sys/audit/test"
        }
        records = _consume(kafka_broker.bootstrap, topic, len(keys))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    got, _ = _shipped_keys([r.value for r in records])
    assert keys <= got and len(keys) > 10
    assert all(CANARY_SECRET.encode() not in r.value for r in records)
    assert json.loads(out)["shipped"] >= len(keys)


def test_stdin_source_cuts_lines_and_flags_too_large_ones() -> None:
    # ship's standard input is ingest's StdinSource, read from a pipe as `... | vaultwatch ship -` does.
    from ingest.sources.stdin import StdinSource

    r, w = os.pipe()
    stream = open(r, "rb", closefd=False)  # closed in the finally block, before the fd
    try:
        os.write(w, b"one\r\n\n" + b"x" * 300 + b"\ntwo\nthr")
        src = StdinSource(stream, max_line_bytes=100)
        it = src.batches(max_records=10, timeout=0.05)
        got = next(it)
        assert [x.data for x in got] == [b"one", b"x" * 100, b"two"]  # a too-large line: its head
        assert [x.position.too_large for x in got] == [0, 300, 0]
        assert next(it) == []  # idle: the caller gets control back
        os.write(w, b"ee\n" + b"y" * 250)
        os.close(w)
        w = -1
        rest = [rec for batch in it for rec in batch]
        assert [x.data for x in rest] == [b"three", b"y" * 100]
        assert [x.position.too_large for x in rest] == [0, 250]
        src.commit(rest[-1])
        assert src.committed == rest[-1].position
        assert rest[-1].position.offset == 5 + 1 + 301 + 4 + 6 + 250
    finally:
        stream.close()
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.integration
def test_records_kafka_refuses_for_size_are_quarantined_not_retried_forever(
    bao_logs: dict[str, Path], kafka_broker: KafkaBroker, topic: str
) -> None:
    lines = bao_logs["hmac"].read_bytes().splitlines()
    parser = Parser()
    sizes = sorted(len(encode_entry(parser.parse(line))) for line in lines)
    limit = sizes[len(sizes) // 2]
    kafka = KafkaSettings(kafka_broker.bootstrap)
    producer = _kafka.KafkaProducer(**producer_config(kafka, ProducerSettings(max_request_size=limit)))
    source = ListSource(lines)
    quarantine = MemoryQuarantine()
    try:
        stats = Shipper(source, producer, topic, quarantine=quarantine, max_batch=10).run()
    finally:
        producer.close()
    refused = stats.quarantined["too_large"]
    assert 0 < refused < len(lines) and stats.shipped + refused == len(lines)
    assert source.commits[-1] == len(lines) - 1 and stats.retries == 0
    for rec in quarantine.records:
        assert len(encode_entry(parser.parse(rec.line()))) > limit - 200  # record overhead
        assert "max_request_size" in rec.detail
