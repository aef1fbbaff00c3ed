"""SocketSource as a real OpenBao server's ``socket`` audit device (TCP and unix)."""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.sources.base import RawRecord
from ingest.sources.checkpoint import too_large_size
from ingest.sources.socket import SocketPosition, SocketSource
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer

from .test_source_file import drive, file_lines, keys_of, wait_for


def collect(
    src: SocketSource, want: int, timeout: float = 20.0, commit: bool = True, max_records: int = 100
) -> list[RawRecord]:
    """Read until ``want`` records arrived (committing each batch)."""
    out: list[RawRecord] = []
    deadline = time.monotonic() + timeout
    for batch in src.batches(max_records=max_records, timeout=0.1):
        out += batch
        if batch and commit:
            src.commit(batch[-1])
        if len(out) >= want or time.monotonic() > deadline:
            break
    return out


def devices(address: str, socket_type: str, work: Path) -> list[AuditDevice]:
    return [
        AuditDevice("socket", "sock", {"address": address, "socket_type": socket_type}),
        AuditDevice("file", "file", {"file_path": str(work / "audit.log")}),
    ]


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[SocketSource]:
    src = SocketSource("127.0.0.1:0", spool_dir=tmp_path / "spool")
    src.start()
    yield src
    src.close()


def id_keys(lines: list[bytes]) -> list[tuple[str, str]]:
    """``(request.id, type)`` of the entries that have a request id, in order. Left out: a few
    internal start-up entries without one, and the ``sys/audit/test`` entry OpenBao writes to
    each device (with a different id per device) when it is set up."""
    return [
        k
        for line, k in zip(lines, keys_of(lines), strict=True)
        if b'"request":{"id":' in line and b'"path":"sys/audit/test"' not in line
    ]


def socket_keys(records: list[RawRecord]) -> list[tuple[str, str]]:
    return id_keys([r.data for r in records])


def collect_keys(
    src: SocketSource, expected: list[tuple[str, str]], timeout: float = 20.0
) -> list[RawRecord]:
    """Read (committing) until every expected key arrived."""
    out: list[RawRecord] = []
    want = set(expected)
    deadline = time.monotonic() + timeout
    for batch in src.batches(max_records=100, timeout=0.1):
        out += batch
        if batch:
            src.commit(batch[-1])
            want -= set(socket_keys(batch))
        if not want or time.monotonic() > deadline:
            break
    return out


@pytest.mark.integration
def test_tcp_socket_device_delivers_every_entry(
    listener: SocketSource, openbao_factory: object, tmp_path: Path
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    srv: OpenBaoServer = openbao_factory(devices=devices(listener.address, "tcp", work))  # type: ignore[operator]
    drive(srv, 15)
    expected = id_keys(file_lines(work / "audit.log"))
    got = collect_keys(listener, expected)
    srv.stop()  # the server first: it must never find its audit device gone
    keys = socket_keys(got)
    assert Counter(keys) == Counter(expected)
    assert len(expected) >= 30
    stats = listener.stats()
    assert stats.received == len(got) and stats.spilled == 0 and stats.queue_depth == 0
    assert all(isinstance(r.position, SocketPosition) for r in got)


@pytest.mark.integration
def test_unix_socket_device(openbao_factory: object, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    path = str(tmp_path / "vw.sock")
    with SocketSource(path, socket_type="unix", spool_dir=tmp_path / "spool") as src:
        srv: OpenBaoServer = openbao_factory(devices=devices(path, "unix", work))  # type: ignore[operator]
        drive(srv, 5)
        expected = id_keys(file_lines(work / "audit.log"))
        got = collect_keys(src, expected)
        srv.stop()
        assert Counter(socket_keys(got)) == Counter(expected)
        assert (Path(path).stat().st_mode & 0o777) == 0o600
    assert not Path(path).exists()  # cleaned up at close


@pytest.mark.integration
def test_slow_consumer_spills_to_disk_without_stalling_the_server(
    openbao_factory: object, tmp_path: Path
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    spool = tmp_path / "spool"
    src = SocketSource("127.0.0.1:0", spool_dir=spool, queue_size=8, fsync_interval=0.05).start()
    try:
        srv: OpenBaoServer = openbao_factory(devices=devices(src.address, "tcp", work))  # type: ignore[operator]
        # Nothing consumes while the server works: it must not be slowed down.
        t0 = time.monotonic()
        drive(srv, 40)
        elapsed = time.monotonic() - t0
        expected = id_keys(file_lines(work / "audit.log"))
        wait_for(lambda: src.stats().received >= len(expected), what="listener to read everything")
        time.sleep(0.2)
        stats = src.stats()
        assert stats.queue_depth == 8
        assert stats.spilled == stats.received - 8 and stats.spool_pending_bytes > 0
        assert elapsed < 20, elapsed

        # Drain part of it, commit, and stop: the spool keeps what was not committed.
        part = collect(src, 30, max_records=10)
        assert len(part) == 30
        srv.stop()
    finally:
        src.close()

    # A restart hands out the rest, in order, and nothing twice.
    with SocketSource("127.0.0.1:0", spool_dir=spool) as again:
        rest = collect(again, 10_000, timeout=1.0)
        assert again.stats().spool_pending_bytes == 0
        assert len(rest) > 30
    keys = socket_keys(part + rest)
    assert keys == expected  # same order as the file device, no loss, no duplicate
    # Everything committed: the spool is emptied and a third start gets nothing.
    with SocketSource("127.0.0.1:0", spool_dir=spool) as third:
        assert collect(third, 1, timeout=0.3) == []
    assert (spool / "spool.bin").stat().st_size == 0


@pytest.mark.integration
def test_unconsumed_and_uncommitted_lines_survive_a_restart(openbao: OpenBaoServer, tmp_path: Path) -> None:
    drive(openbao, 10)
    lines = file_lines(openbao.audit_log)
    spool = tmp_path / "spool"
    # 1. Lines arrive, nothing consumes; at close the 5 in memory join the spilled ones on disk.
    with SocketSource("127.0.0.1:0", spool_dir=spool, queue_size=5) as src:
        host, port = src.address.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as c:
            c.sendall(b"\n".join(lines) + b"\n")
        wait_for(lambda: src.stats().received == len(lines), what="all lines")
        assert src.stats().spilled == len(lines) - 5
    # 2. A restart hands them all out in order; only the first 10 get committed.
    with SocketSource("127.0.0.1:0", spool_dir=spool, queue_size=5) as src:
        got = collect(src, len(lines), commit=False)
        assert [r.data for r in got] == lines
        src.commit(got[9])
    # 3. The next start resumes right after the commit.
    with SocketSource("127.0.0.1:0", spool_dir=spool, queue_size=5) as src:
        rest = collect(src, len(lines), timeout=0.5)
    assert [r.data for r in rest] == lines[10:]


def test_too_large_line_over_socket_is_cut_and_flagged(tmp_path: Path) -> None:
    with SocketSource("127.0.0.1:0", spool_dir=tmp_path / "s", max_line_bytes=1024, queue_size=1) as src:
        host, port = src.address.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as c:
            c.sendall(b"{" + b"a" * 300_000 + b"}\n{}\n{" + b"b" * 5000)  # ends mid-line
        got = collect(src, 3, timeout=5.0)
    assert [too_large_size(r) for r in got] == [300_002, 0, 5001]
    assert got[0].data == b"{" + b"a" * 1023 and got[1].data == b"{}"


def test_address_in_use_is_a_clear_error(listener: SocketSource, tmp_path: Path) -> None:
    from ingest.errors import SourceError

    with pytest.raises(SourceError, match="cannot listen"):
        SocketSource(listener.address, spool_dir=tmp_path / "other").start()
