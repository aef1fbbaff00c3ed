"""IngestPipeline and iter_events over logs a real OpenBao server wrote (two devices)."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest import Deduplicator, Parser
from ingest.pipeline import IngestPipeline, IngestStats, iter_events
from ingest.quarantine import FileQuarantine, MemoryQuarantine
from ingest.sources.base import RawRecord
from ingest.sources.file import FileSource
from ingest.sources.stdin import StdinSource
from vaultwatch.demo.servers import AuditDevice, OpenBaoServer

from .test_source_file import drive, file_lines, keys_of


@pytest.fixture(scope="module")
def two_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The same traffic written by two file devices (each entry twice, different HMACs)."""
    work = tmp_path_factory.mktemp("bao-pipeline")
    a, b = work / "a.log", work / "b.log"
    devices = [
        AuditDevice("file", "a", {"file_path": str(a)}),
        AuditDevice("file", "b", {"file_path": str(b)}),
    ]
    with OpenBaoServer(work / "srv", devices=devices) as srv:
        drive(srv, 12)
    yield a, b


def copies_in_b(a: Path, b: Path) -> int:
    """How many of b's entries repeat one of a's (same request id and type). Each device also
    has a set-up entry of its own, and a few start-up entries carry no request id."""
    parse = Parser().parse
    ids_a = {e.dedup_key for e in map(parse, file_lines(a)) if e.request_id}
    return sum(1 for e in map(parse, file_lines(b)) if e.request_id and e.dedup_key in ids_a)


def records(path: Path) -> list[RawRecord]:
    return [r for batch in FileSource(path).batches() for r in batch]


@pytest.mark.integration
def test_copies_from_two_devices_are_dropped_once(two_logs: tuple[Path, Path]) -> None:
    a, b = two_logs
    pipe = IngestPipeline(Parser(), MemoryQuarantine(), Deduplicator())
    ev_a, st_a = pipe.process(records(a))
    ev_b, st_b = pipe.process(records(b))
    n, n_b, dups = len(file_lines(a)), len(file_lines(b)), copies_in_b(a, b)
    assert st_a == IngestStats(lines=n, events=n)
    assert dups >= 24  # 12 requests, a request and a response entry each
    assert st_b == IngestStats(lines=n_b, events=n_b - dups, duplicates=dups)
    assert pipe.stats.lines == n + n_b and pipe.stats.events == len(ev_a) + len(ev_b)
    assert [e.source for e in ev_a[:1]] == [f"file:{a}"]
    assert [(e.request_id or e.time.isoformat(), e.type) for e in ev_a] == keys_of(file_lines(a))


@pytest.mark.integration
def test_bad_lines_are_quarantined_with_source_and_position(
    two_logs: tuple[Path, Path], tmp_path: Path
) -> None:
    a, _ = two_logs
    lines = file_lines(a)
    big = max(lines, key=len)
    small = [ln for ln in lines if len(ln) < len(big)]
    good = [small[0], small[1], small[2], big, small[3]]
    path = tmp_path / "mixed.log"
    path.write_bytes(
        good[0]
        + b"\n"
        + good[1][: len(good[1]) // 2]
        + b"\n"  # a truncated entry
        + b"not json at all\n"
        + good[2]
        + b"\n"
        + good[3]
        + b"\n"  # over the small limit below: cut by the source, flagged
        + good[4]
        + b"\n"
    )
    limit = len(big) - 1
    src = FileSource(path, max_line_bytes=limit)
    q = FileQuarantine(tmp_path / "q" / "quarantine.jsonl", fsync=False)
    try:
        pipe = IngestPipeline(Parser(max_line_bytes=limit), q, Deduplicator())
        events, stats = pipe.process(r for b in src.batches() for r in b)
    finally:
        q.close()
    assert [(e.request_id or e.time.isoformat(), e.type) for e in events] == keys_of(
        [good[0], good[2], good[4]]
    )
    assert stats.quarantined == {"invalid_json": 1, "no_json": 1, "too_large": 1}
    assert stats.lines == 6 == stats.events + stats.quarantined_total + stats.duplicates
    recs = FileQuarantine.read(tmp_path / "q" / "quarantine.jsonl")
    assert [r.reason for r in recs] == ["invalid_json", "no_json", "too_large"]
    assert all(r.source == f"file:{path}" for r in recs)
    ends = [len(good[0]) + len(good[1]) // 2 + 2, len(good[0]) + len(good[1]) // 2 + 18]
    assert [r.position for r in recs[:2]] == [f"{path}@{ends[0]}", f"{path}@{ends[1]}"]
    assert recs[0].line() == good[1][: len(good[1]) // 2]
    assert recs[2].line() == good[3][:limit] and str(len(good[3])) in recs[2].detail
    assert (tmp_path / "q" / "quarantine.jsonl").stat().st_mode & 0o777 == 0o600


@pytest.mark.integration
def test_iter_events_over_paths_gz_and_a_source(two_logs: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = two_logs
    gz = tmp_path / "b.log.gz"
    gz.write_bytes(gzip.compress(b.read_bytes()))
    plain = list(iter_events(a))
    assert len(plain) == len(file_lines(a))
    both = list(iter_events([a, gz]))  # the .gz repeats a: its copies are dropped
    assert len(both) == len(plain) + len(file_lines(b)) - copies_in_b(a, b)
    q = MemoryQuarantine()
    from_stdin = list(iter_events(StdinSource(io.BytesIO(a.read_bytes() + b"garbage\n")), quarantine=q))
    assert [e.request_id for e in from_stdin] == [e.request_id for e in plain]
    assert q.counts == {"no_json": 1}
