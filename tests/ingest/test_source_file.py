"""FileSource against logs a real OpenBao server writes: follow, rotation, checkpoints, .gz, dirs."""

from __future__ import annotations

import gzip
import os
import shutil
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest import Parser
from ingest.sources.base import RawRecord, Source
from ingest.sources.checkpoint import (
    Checkpoint,
    LineSplitter,
    load_checkpoint,
    save_checkpoint,
    too_large_size,
)
from ingest.sources.file import FilePosition, FileSource
from vaultwatch.demo.servers import OpenBaoServer

PARSER = Parser()


# -- helpers shared with the other source tests --------------------------------------------------
def drive(server: OpenBaoServer, n: int, tag: str = "x") -> None:
    """``n`` real requests through hvac (each writes a request and a response entry)."""
    client = server.client()
    try:
        for i in range(n):
            client.secrets.kv.v2.create_or_update_secret(path=f"{tag}/{i}", secret={"n": str(i)})
    finally:
        client.adapter.close()


def keys_of(lines: list[bytes]) -> list[tuple[str, str]]:
    """``(request.id, type)`` of each audit line (a few internal entries at start-up have no
    request id: their time stands in)."""
    out = []
    for line in lines:
        ev = PARSER.parse(line)
        out.append((ev.request_id or ev.time.isoformat(), ev.type))
    return out


def file_lines(*paths: Path) -> list[bytes]:
    out: list[bytes] = []
    for p in paths:
        out += [ln for ln in p.read_bytes().split(b"\n") if ln.strip()]
    return out


def wait_for(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Consumer:
    """Reads a source in a thread, committing after each batch, like the shipper does."""

    def __init__(self, source: Source, *, commit: bool = True) -> None:
        self.source = source
        self.records: list[RawRecord] = []
        self.idle = 0
        self.error: BaseException | None = None
        self._commit = commit
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for batch in self.source.batches(max_records=50, timeout=0.1):
                if not batch:
                    self.idle += 1
                    continue
                self.records.extend(batch)
                if self._commit:
                    self.source.commit(batch[-1])
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def lines(self) -> list[bytes]:
        return [r.data for r in list(self.records)]

    def stop(self) -> None:
        self.source.close()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Callable[..., Consumer]]:
    made: list[Consumer] = []

    def make(path: Path, **kw: Any) -> Consumer:
        kw.setdefault("checkpoint", tmp_path / "cp.json")
        src = FileSource(path, follow=True, poll_interval=0.05, rotate_grace=0.3, **kw)
        c = Consumer(src)
        made.append(c)
        return c

    yield make
    for c in made:
        c.source.close()
        c._thread.join(timeout=10)


# -- follow mode with a real server ---------------------------------------------------------------
@pytest.mark.integration
def test_follow_survives_rename_rotation_and_copytruncate(
    openbao: OpenBaoServer, follower: Callable[..., Consumer], tmp_path: Path
) -> None:
    log = openbao.audit_log
    c = follower(log)
    drive(openbao, 10, "a")
    wait_for(lambda: len(c.records) == len(file_lines(log)), what="first phase")

    # Rotation by rename, the way logrotate does it: mv, more writes land in the moved file,
    # then SIGHUP makes the server reopen file_path (a new file).
    rotated = log.with_name("audit.log.1")
    os.rename(log, rotated)
    drive(openbao, 5, "b")
    openbao.reload()
    wait_for(log.exists, what="server to reopen its audit file")
    drive(openbao, 5, "c")
    wait_for(lambda: len(c.records) == len(file_lines(rotated, log)), what="rotation")
    assert c.source.rotations == 1  # type: ignore[attr-defined]

    # copytruncate: copy, then truncate in place; the server keeps appending to the same inode.
    copy = log.with_name("audit.log.2")
    shutil.copyfile(log, copy)
    with open(log, "r+b") as f:
        f.truncate(0)
    drive(openbao, 5, "d")
    expected = file_lines(rotated, copy, log)
    wait_for(lambda: len(c.records) >= len(expected), what="copytruncate")
    time.sleep(0.3)
    c.stop()
    assert c.source.truncations >= 1  # type: ignore[attr-defined]

    got = keys_of(c.lines())
    assert got == keys_of(expected)
    assert max(Counter(got).values()) == 1  # every entry exactly once
    assert len({rid for rid, _ in got}) >= 25
    # the last commit points at the current file's end
    cp = load_checkpoint(tmp_path / "cp.json")
    assert cp is not None and cp.inode == os.stat(log).st_ino and cp.offset == log.stat().st_size


@pytest.mark.integration
def test_restart_resumes_after_last_commit_even_across_rotation(
    openbao: OpenBaoServer, tmp_path: Path
) -> None:
    log = openbao.audit_log
    cp_path = tmp_path / "cp.json"
    drive(openbao, 10, "a")
    all_before = file_lines(log)

    # First run reads everything but commits only part-way (record 7), then stops.
    first = FileSource(log, follow=True, checkpoint=cp_path, poll_interval=0.05)
    seen: list[RawRecord] = []
    for batch in first.batches(max_records=1000, timeout=0.1):
        seen += batch
        if len(seen) >= len(all_before):
            break
    first.close()
    assert [r.data for r in seen] == all_before
    first.commit(seen[6])

    # While it is down: more writes, then a rotation, then writes to the new file.
    drive(openbao, 3, "b")
    rotated = log.with_name("audit.log.1")
    os.rename(log, rotated)
    openbao.reload()
    wait_for(log.exists, what="new audit file")
    drive(openbao, 3, "c")

    second = FileSource(log, follow=True, checkpoint=cp_path, poll_interval=0.05, rotate_grace=0.1)
    c = Consumer(second)
    expected = file_lines(rotated)[7:] + file_lines(log)
    wait_for(lambda: len(c.records) >= len(expected), what="resume")
    time.sleep(0.3)
    c.stop()
    assert c.lines() == expected  # no loss, no re-read
    # and a third start with nothing new reads nothing
    third = FileSource(log, checkpoint=cp_path)
    assert [r for b in third.batches() for r in b] == []


def test_partial_last_line_is_held_until_completed(
    real_log: Path, follower: Callable[..., Consumer], tmp_path: Path
) -> None:
    real = file_lines(real_log)
    path = tmp_path / "growing.log"
    with open(path, "wb", buffering=0) as w:
        w.write(real[0] + b"\n" + real[1][:40])
        c = follower(path)
        wait_for(lambda: len(c.records) == 1, what="first line")
        time.sleep(0.4)
        assert len(c.records) == 1  # the half line is not emitted
        w.write(real[1][40:] + b"\n")
        wait_for(lambda: len(c.records) == 2, what="completed line")
    c.stop()
    assert c.lines() == real[:2]


def test_waits_for_the_file_and_emits_a_partial_line_when_rotated_away(
    real_log: Path, follower: Callable[..., Consumer], tmp_path: Path
) -> None:
    real = file_lines(real_log)
    path = tmp_path / "later.log"
    c = follower(path)  # the file does not exist yet (the server has not started)
    time.sleep(0.2)
    with open(path, "wb", buffering=0) as w:
        w.write(real[0] + b"\n" + real[1][:40])
    wait_for(lambda: len(c.records) == 1, what="first line")
    os.rename(path, tmp_path / "later.log.1")
    path.write_bytes(real[2] + b"\n")
    wait_for(lambda: len(c.records) == 3, what="rotation")
    c.stop()
    assert c.lines() == [real[0], real[1][:40], real[2]]  # the fragment is handed on, not lost


# -- one-shot: .gz, directories, too-large lines -----------------------------------------------------
@pytest.fixture(scope="module")
def real_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("bao-file")
    with OpenBaoServer(work / "srv") as srv:
        drive(srv, 15)
        time.sleep(0.1)
        path = work / "audit.log"
        shutil.copyfile(srv.audit_log, path)
    yield path


def read_all(src: FileSource) -> list[RawRecord]:
    return [r for batch in src.batches(max_records=7) for r in batch]


def test_gzip_and_directory_in_name_order(real_log: Path, tmp_path: Path) -> None:
    lines = file_lines(real_log)
    half = len(lines) // 2
    d = tmp_path / "logs"
    d.mkdir()
    with gzip.open(d / "audit-1.log.gz", "wb") as g:
        g.write(b"\n".join(lines[:half]) + b"\n")
    (d / "audit-2.log").write_bytes(b"\n".join(lines[half:]))  # no final newline: still read
    (d / ".hidden").write_bytes(b"ignored\n")

    got = read_all(FileSource(d))
    assert [r.data for r in got] == lines
    assert got[half - 1].position.path.endswith(".gz")

    # A commit inside the .gz resumes there (offsets count decompressed bytes).
    cp = tmp_path / "cp.json"
    src = FileSource(d, checkpoint=cp)
    src.commit(got[3])
    assert [r.data for r in read_all(FileSource(d, checkpoint=cp))] == lines[4:]
    src.commit(got[-1])
    assert read_all(FileSource(d, checkpoint=cp)) == []

    # A single .gz file.
    gz = tmp_path / "one.log.gz"
    gz.write_bytes(gzip.compress(real_log.read_bytes()))
    assert [r.data for r in read_all(FileSource(gz))] == lines


def test_five_megabyte_line_is_flagged_without_loading_it(real_log: Path, tmp_path: Path) -> None:
    lines = file_lines(real_log)
    path = tmp_path / "big.log"
    shutil.copyfile(real_log, path)
    big = 5 * 1024 * 1024
    with open(path, "ab") as f:
        f.write(b'{"time":"2026-01-01T00:00:00Z","type":"request","pad":"')
        chunk = b"A" * (1024 * 1024)
        for _ in range(5):
            f.write(chunk)
        f.write(b'"}\n')
        f.write(lines[0] + b"\n")
    del chunk

    tracemalloc.start()
    try:
        got = read_all(FileSource(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak  # the 5 MB line was never held whole
    flagged = [r for r in got if too_large_size(r)]
    assert len(flagged) == 1
    rec = flagged[0]
    assert too_large_size(rec) > big
    assert len(rec.data) <= 64 * 1024 and rec.data.startswith(b'{"time"')
    # position advanced past it: the next line is the real one, and offsets are exact
    assert [r.data for r in got if not too_large_size(r)] == lines + [lines[0]]
    assert got[-1].position.offset == path.stat().st_size


def test_checkpoint_is_atomic_and_recognises_a_rewritten_file(real_log: Path, tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    shutil.copyfile(real_log, path)
    lines = file_lines(path)
    cp = tmp_path / "state" / "cp.json"
    src = FileSource(path, checkpoint=cp)
    recs = read_all(src)
    src.commit(recs[4])
    assert not [p for p in cp.parent.iterdir() if p.name != "cp.json"]  # no temp file left behind
    stored = load_checkpoint(cp)
    assert isinstance(recs[4].position, FilePosition)
    assert stored == Checkpoint(
        str(path),
        path.stat().st_ino,
        recs[4].position.offset,
        recs[4].position.fingerprint,
        path.stat().st_dev,
    )
    # Same inode, different first line (rewritten in place): start from 0, not mid-file.
    with open(path, "r+b") as f:
        f.write(b"X")
    assert len(read_all(FileSource(path, checkpoint=cp))) == len(lines)
    # A corrupt checkpoint is a clear error.
    cp.write_bytes(b"{not json")
    with pytest.raises(Exception, match="corrupt"):
        read_all(FileSource(path, checkpoint=cp))
    save_checkpoint(cp, Checkpoint(str(path), 1, 10))
    assert load_checkpoint(cp) == Checkpoint(str(path), 1, 10)


def test_line_splitter_bounds_and_offsets() -> None:
    s = LineSplitter(max_line_bytes=10, head_bytes=4)
    out = []
    for piece in (b"abc\r\n\n", b"0123456789", b"0123", b"\nok", b"\n"):
        out += s.feed(piece)
    assert [(ln.data, ln.end, ln.too_large) for ln in out] == [
        (b"abc", 5, 0),
        (b"0123", 21, 14),
        (b"ok", 24, 0),
    ]
    assert s.pending == 0 and s.flush() is None


def test_follow_rejects_directories_and_gzip(tmp_path: Path) -> None:
    from ingest.errors import SourceError

    with pytest.raises(SourceError):
        FileSource(tmp_path, follow=True)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(b""))
    with pytest.raises(SourceError):
        FileSource(gz, follow=True)
