"""The event archive, fed with entries a real OpenBao server wrote for real hvac requests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import msgspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from detect.templates import template_path
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer
from vaultwatch.service.archive import SCHEMA, ArchiveError, EventArchive

CANARY = "canary-7f3a9c2e-archive-must-not-keep"
ROOT_TOKEN = "vaultwatch-dev-root"
BASE = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday


@dataclass
class Traffic:
    hmac_events: list[AuditEvent]  # normal file device
    raw_events: list[AuditEvent]  # log_raw=true device: plaintext tokens and data
    raw_log: bytes
    alice: str  # alice's identity key


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """Real entries: admin setup, alice reading app/db, bob denied, a failed login.

    One server per module (the traffic is read-only for the tests), stopped before they run.
    """
    tmp_path = tmp_path_factory.mktemp("bao")
    hmac_log, raw_log = tmp_path / "audit.log", tmp_path / "raw.log"
    devices = [
        AuditDevice("file", "file", {"file_path": str(hmac_log)}),
        AuditDevice("file", "raw", {"file_path": str(raw_log), "log_raw": "true"}),
    ]
    with OpenBaoServer(tmp_path / "server", devices=devices) as srv:
        _generate(srv)
    yield _parse(hmac_log, raw_log)


def _generate(srv: OpenBaoServer) -> None:
    root = srv.client()
    root.sys.enable_auth_method("userpass")
    root.sys.create_or_update_policy("app-reader", 'path "secret/data/app/*" { capabilities = ["read"] }')
    root.write("auth/userpass/users/alice", password="alice-pw-1", policies="app-reader")
    root.write("auth/userpass/users/bob", password="bob-pw-1", policies="default")
    root.secrets.kv.v2.create_or_update_secret("app/db", secret={"password": CANARY})
    alice = srv.client(token="")
    alice.auth.userpass.login("alice", "alice-pw-1")
    for _ in range(3):
        alice.secrets.kv.v2.read_secret_version("app/db", raise_on_deleted_version=False)
    bob = srv.client(token="")
    bob.auth.userpass.login("bob", "bob-pw-1")
    with pytest.raises(hvac.exceptions.Forbidden):
        bob.secrets.kv.v2.read_secret_version("app/db", raise_on_deleted_version=False)
    mallory = srv.client(token="")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        mallory.auth.userpass.login("bob", "wrong-pw")
    for c in (root, alice, bob, mallory):
        c.adapter.close()


def _parse(hmac_log: Path, raw_log: Path) -> Traffic:
    parser = Parser()
    hmac_events = [parser.parse(line) for line in hmac_log.read_bytes().splitlines() if line.strip()]
    raw_bytes = raw_log.read_bytes()
    raw_events = [parser.parse(line) for line in raw_bytes.splitlines() if line.strip()]
    alice_key = next(
        e.identity.key
        for e in hmac_events
        if e.path == "secret/data/app/db" and e.operation == "read" and e.outcome == "ok"
    )
    return Traffic(hmac_events, raw_events, raw_bytes, alice_key)


def spread(events: list[AuditEvent], days: int, step_minutes: int = 97) -> list[AuditEvent]:
    """Copies of the traffic re-timed over ``days`` days, with fresh request ids per copy."""
    out: list[AuditEvent] = []
    minute = 0
    for day in range(days):
        for ev in events:
            t = BASE + timedelta(days=day, minutes=minute % (24 * 60))
            minute += step_minutes
            rid = f"{ev.request_id}-d{day}" if ev.request_id else None
            changes: dict[str, Any] = {"time": t, "ts": t.timestamp()}
            changes["request"] = msgspec.structs.replace(ev.request, id=rid)
            if "request_id" in ev.__struct_fields__:  # a copied field in older event versions
                changes["request_id"] = rid
            out.append(msgspec.structs.replace(ev, **changes))
    return out


def all_rows(root: Path) -> pa.Table:
    return ds.dataset(root, format="parquet", partitioning="hive").to_table()


@pytest.mark.integration
def test_rows_hold_metadata_and_hmacs_only(traffic: Traffic, tmp_path: Path) -> None:
    events = spread(traffic.hmac_events, days=1)
    with EventArchive(tmp_path / "arch", writer_id="w1") as arch:
        arch.extend(events)
        assert arch.pending == len(events)  # nothing written before a flush trigger
    assert arch.pending == 0
    table = all_rows(tmp_path / "arch")
    assert table.num_rows == len(events)
    assert set(SCHEMA.names) <= set(table.column_names)
    assert "date" in table.column_names and "hour" in table.column_names
    df = arch.query(identity=traffic.alice, path_prefix="secret/", operation="read")
    assert len(df) == 6 and set(df["outcome"]) == {"pending", "ok"}
    assert df["time"].is_monotonic_increasing
    assert str(df["time"].dtype) == "datetime64[us, UTC]"
    assert all(a.startswith("hmac-sha256:") for a in df["accessor_hmac"])
    assert all(t.startswith("hmac-sha256:") for t in df["client_token_hmac"])
    assert list(df["policies"].iloc[0]) == ["app-reader", "default"]
    assert set(df["path_template"]) == {template_path("secret/data/app/db")}
    assert len(arch.query(path_template="secret/data/app/db", identity=traffic.alice)) == 6
    # One token's exposure: everything its client-token HMAC touched.
    tok = df["client_token_hmac"].iloc[0]
    by_token = arch.query(client_token_hmac=tok)
    assert set(by_token["identity_key"]) == {traffic.alice} and len(by_token) >= 6
    assert len(arch.query(accessor=df["accessor_hmac"].iloc[0])) == len(by_token)
    denied = arch.query(outcome="denied")
    assert len(denied) == 2 and denied["error"].iloc[0] == "1 error occurred: * permission denied"
    assert len(arch.query(outcome=["denied", "login_failed"])) == 3
    from_loopback = [e for e in events if e.remote_ip == "127.0.0.1"]
    assert len(arch.query(remote_ip="127.0.0.1")) == len(from_loopback) > 20
    assert arch.query(remote_ip="10.9.9.9").empty


@pytest.mark.integration
def test_log_raw_canary_never_reaches_parquet(traffic: Traffic, tmp_path: Path) -> None:
    assert CANARY.encode() in traffic.raw_log  # the device really wrote it in the clear
    assert ROOT_TOKEN.encode() in traffic.raw_log
    root = tmp_path / "arch"
    # Uncompressed, so a byte search over the files is meaningful.
    with EventArchive(root, writer_id="w1", compression="none") as arch:
        arch.extend(spread(traffic.raw_events, days=2))
    files = arch.files()
    assert files
    for f in files:
        blob = f.read_bytes()
        rows = pq.read_table(f).to_pylist()
        assert rows[0]["identity_key"].encode() in blob  # the byte search does find stored strings
        assert CANARY.encode() not in blob, f
        assert ROOT_TOKEN.encode() not in blob, f
        assert b"alice-pw-1" not in blob, f
        assert CANARY not in repr(rows)
    df = arch.query()
    # log_raw wrote tokens and accessors in plaintext: only the parser's pseudonym is stored.
    for column in ("client_token_hmac", "accessor_hmac"):
        stored = df[column].dropna()
        assert len(stored) and all(v.startswith("hmac-sha256:vw:") for v in stored), column
    flagged = df[df["path"] == "secret/data/app/db"]["plaintext_fields"]
    assert any("response.data.data.password" in list(v) for v in flagged)


@pytest.mark.integration
def test_week_query_opens_only_that_weeks_partitions(traffic: Traffic, tmp_path: Path) -> None:
    events = spread(traffic.hmac_events, days=15)
    root = tmp_path / "arch"
    with EventArchive(root, writer_id="w1") as arch:
        arch.extend(events)
    total_parts = len(arch.partitions())
    total_files = len(arch.files())
    start, end = BASE + timedelta(days=7), BASE + timedelta(days=14)
    df = arch.query(identity=traffic.alice, start=start, end=end)
    scan = arch.last_scan
    week_dirs = [h for h in arch.partitions() if start <= h < end]
    assert scan.partitions == len(week_dirs) and scan.files == len(week_dirs)
    assert scan.partitions < total_parts / 2 and scan.files < total_files / 2
    # Same answer as a full scan filtered in pandas.
    full = all_rows(root).to_pandas()
    expect = full[(full.identity_key == traffic.alice) & (full.time >= start) & (full.time < end)]
    assert len(df) == len(expect) > 0
    assert set(df["request_id"]) == set(expect["request_id"])
    # The hive layout prunes for any pyarrow/pandas user too.
    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    day = dataset.get_fragments(filter=ds.field("date") == "2026-03-09")
    assert 0 < len(list(day)) < total_files
    # limit/offset page through time order and stop early.
    first = arch.query(start=start, end=end, limit=5)
    assert arch.last_scan.partitions < len(week_dirs)
    page2 = arch.query(start=start, end=end, limit=5, offset=5)
    both = arch.query(start=start, end=end, limit=10)
    assert list(both["request_id"]) == list(first["request_id"]) + list(page2["request_id"])
    newest = arch.query(start=start, end=end, limit=3, descending=True)
    assert newest["time"].is_monotonic_decreasing and arch.last_scan.partitions == 1


@pytest.mark.integration
def test_row_group_statistics_skip_other_identities(traffic: Traffic, tmp_path: Path) -> None:
    events = spread(traffic.hmac_events, days=1, step_minutes=1)  # all in one hour
    with EventArchive(tmp_path / "arch", writer_id="w1", row_group_size=4) as arch:
        arch.extend(events)
    (f,) = arch.files()
    meta = pq.ParquetFile(f).metadata
    assert meta.num_row_groups > 4
    frag = next(iter(ds.dataset(str(f), format="parquet").get_fragments()))
    kept = frag.split_by_row_group(filter=ds.field("identity_key") == traffic.alice)
    assert 0 < len(kept) < meta.num_row_groups / 2
    prefix = frag.split_by_row_group(filter=(ds.field("path") >= "sys/") & (ds.field("path") < "sys0"))
    assert len(prefix) < meta.num_row_groups


@pytest.mark.integration
def test_events_by_request_ids_and_retention(traffic: Traffic, tmp_path: Path) -> None:
    events = spread(traffic.hmac_events, days=10)
    ticks = iter(range(1000))
    arch = EventArchive(
        tmp_path / "arch", writer_id="w1", retention_days=3, flush_interval=5, clock=lambda: next(ticks)
    )
    for ev in events[:20]:
        arch.append(ev)
    assert arch.files()  # the interval flushed without close()
    arch.extend(events[20:])
    arch.close()
    with pytest.raises(ArchiveError):
        arch.append(events[0])
    ids = [events[0].request_id, events[-1].request_id, "no-such-id"]
    got = arch.events_by_request_ids([i for i in ids if i])
    assert set(got["request_id"]) == {events[0].request_id, events[-1].request_id}
    assert set(got["type"]) == {"request", "response"}
    assert arch.events_by_request_ids([]).empty

    now = BASE + timedelta(days=10)
    removed = arch.prune(now)
    left = arch.partitions()
    assert removed > 0 and left
    assert min(left) >= now - timedelta(days=3, hours=1)
    assert all(p.name >= "date=2026-03-08" for p in (tmp_path / "arch").iterdir())
    assert arch.prune(now) == 0
    assert events[0].request_id not in set(arch.query()["request_id"])


@pytest.mark.integration
def test_two_writers_share_a_root(traffic: Traffic, tmp_path: Path) -> None:
    login = next(e for e in traffic.hmac_events if e.identity.key == "login:userpass:alice")
    t = datetime(2026, 1, 1, 10, 15, tzinfo=UTC)
    ev = msgspec.structs.replace(login, time=t, ts=t.timestamp())
    for w in ("a", "b"):
        with EventArchive(tmp_path, writer_id=w) as arch:
            arch.append(ev)
            arch.append(ev)  # same writer twice: seq keeps the files apart
            arch.flush()
            arch.append(ev)
    names = sorted(p.name for p in arch.files())
    assert len(names) == 4 and sum(n.startswith("part-a-") for n in names) == 2
    (tmp_path / "date=2026-01-01" / "hour=10" / ".part-c-1.parquet.tmp").write_bytes(b"half a file")
    (tmp_path / "notes.txt").write_text("not a partition")
    assert len(arch.query(identity="login:userpass:alice")) == 6
    assert arch.query(identity="login:userpass:alice", end=datetime(2026, 1, 1, 10, tzinfo=UTC)).empty
    empty = EventArchive(tmp_path / "nothing-yet").query(identity="x")
    assert empty.empty and "identity_key" in empty.columns


@pytest.mark.integration
def test_interval_flushes_then_compaction(traffic: Traffic, tmp_path: Path) -> None:
    events = spread(traffic.hmac_events, days=1, step_minutes=3)  # about 2 hours of traffic
    now = [0.0]
    arch = EventArchive(tmp_path / "arch", writer_id="w1", flush_interval=10, clock=lambda: now[0])
    for i, ev in enumerate(events):
        arch.append(ev)
        if i % 5 == 4:
            now[0] += 11  # every fifth event lands after the interval: many small files
    now[0] += 11
    assert arch.tick() and arch.pending == 0
    assert not arch.tick()
    before = arch.query()
    first_hour = min(arch.partitions())
    assert len(list(arch._partition_dir(first_hour).glob("part-*.parquet"))) > 2
    # Only closed hours are merged.
    assert arch.compact(first_hour + timedelta(minutes=59)) == 0
    assert arch.compact(BASE + timedelta(days=1)) == len(arch.partitions())
    assert all(len(list(arch._partition_dir(h).glob("*"))) == 1 for h in arch.partitions())
    after = arch.query()
    assert list(after["request_id"]) == list(before["request_id"]) and len(after) == len(events)
    assert arch.compact(BASE + timedelta(days=1)) == 0
    arch.close()


@pytest.mark.integration
def test_memory_bound_across_many_hours(traffic: Traffic, tmp_path: Path) -> None:
    events = spread(traffic.hmac_events, days=3)
    with EventArchive(tmp_path / "arch", writer_id="w1", max_pending=25) as arch:
        for ev in events:
            arch.append(ev)
            assert arch.pending < 25
    assert len(arch.query()) == len(events)


def test_a_replayed_partition_is_archived_once(traffic: Traffic, tmp_path: Path) -> None:
    """A crash after some flushes: the partition resumes at its checkpoint and rewinds the archive."""
    events = [
        msgspec.structs.replace(
            e, time=BASE + timedelta(minutes=i), ts=(BASE + timedelta(minutes=i)).timestamp()
        )
        for i, e in enumerate(traffic.hmac_events[:40])
    ]
    arch = EventArchive(tmp_path)
    for off, ev in enumerate(events[:25]):
        arch.append(ev, position=("audit.t", 3, off))
        if off == 9:
            arch.flush()  # the checkpoint at offset 10 flushes first
        if off == 17:
            arch.flush()  # an interval flush after the checkpoint
    # The worker dies here; the partition (maybe on another worker) resumes at offset 10.
    other = EventArchive(tmp_path)
    assert other.rewind("audit.t", 3, 10, since=events[9].ts) == 1
    arch.drop_buffered("audit.t", 3)
    assert arch.pending == 0
    for off, ev in enumerate(events[10:], start=10):
        other.append(ev, position=("audit.t", 3, off))
        if off == 30:
            other.rewind("audit.t", 3, 25)  # buffered rows from 25 on are dropped too
            assert other.pending == 15
            for o, e in enumerate(events[25:31], start=25):
                other.append(e, position=("audit.t", 3, o))
    other.close()
    rows = ds.dataset([str(p) for p in other.files()], format="parquet").to_table().to_pylist()
    assert len(rows) == len(events)
    assert sorted(r["ts"] for r in rows) == sorted(e.ts for e in events)
    # Another partition's files are never touched by a rewind.
    arch2 = EventArchive(tmp_path)
    arch2.append(events[0], position=("audit.t", 4, 0))
    arch2.close()
    assert EventArchive(tmp_path).rewind("audit.t", 3, 0) >= 1
    left = ds.dataset([str(p) for p in other.files()], format="parquet").to_table().to_pylist()
    assert len(left) == 1
