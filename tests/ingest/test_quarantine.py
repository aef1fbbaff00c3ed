"""The file quarantine: sealed at rest (no canary on disk), idempotent across kills, admin API."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ingest import ParseError
from ingest.quarantine import (
    FileQuarantine,
    QuarantineError,
    QuarantineRecord,
    discard,
    generate_key_file,
    list_records,
    requeue,
    show_record,
)

CANARY = b"canary-quarantine-5e91c0d7"


def _lines(n: int) -> list[bytes]:
    return [b'{"time":"x","request":{"data":{"password":"%s-%d"}}' % (CANARY, i) for i in range(n)]


def _no_canary(data: bytes) -> None:
    assert CANARY not in data
    # Nor any base64 rendering of it, at any of the three alignments.
    for shift in range(3):
        enc = base64.b64encode(b"x" * shift + CANARY)[4:-4]
        assert enc not in data


def _put_all(q: FileQuarantine, lines: list[bytes], source: str = "file:a.log") -> None:
    for i, line in enumerate(lines):
        q.put(line, ParseError("wrong_type", "bad time"), source=source, position=f"a.log@{i * 100}")


def test_records_are_sealed_on_disk_and_read_back(tmp_path: Path, quarantine_key_file: Path) -> None:
    path = tmp_path / "q" / "quarantine.jsonl"
    q = FileQuarantine(path, fsync=False)
    lines = _lines(3)
    _put_all(q, lines)
    q.close()
    assert quarantine_key_file.exists() and quarantine_key_file.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_mode & 0o777 == 0o600
    raw = path.read_bytes()
    _no_canary(raw)
    assert b"bad time" not in raw  # the detail is sealed too
    stored = [json.loads(x) for x in raw.splitlines()]
    assert [s["reason"] for s in stored] == ["wrong_type"] * 3 and all("line_b64" not in s for s in stored)
    recs = FileQuarantine.read(path)
    assert [r.line() for r in recs] == lines and recs[0].detail == "bad time"
    assert [r.position for r in recs] == ["a.log@0", "a.log@100", "a.log@200"]


def test_wrong_key_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    q = FileQuarantine(path, fsync=False)
    _put_all(q, _lines(1))
    q.close()
    other = generate_key_file(tmp_path / "other.key")
    with pytest.raises(QuarantineError, match="wrong quarantine key"):
        FileQuarantine.read(path, key_file=other)
    with pytest.raises(QuarantineError, match="cannot read"):
        FileQuarantine.read(path, key_file=tmp_path / "missing.key")
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(QuarantineError, match="Fernet"):
        FileQuarantine.read(path, key_file=tmp_path / "bad.key")
    with pytest.raises(QuarantineError, match="exists"):
        generate_key_file(other)


def test_a_killed_run_rerun_adds_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    lines = _lines(10)
    first = FileQuarantine(path, fsync=False)
    _put_all(first, lines[:6])
    first.close()
    # Killed in the middle of writing the 7th record: a torn last line.
    whole = path.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    path.write_bytes(whole + last[: len(last) // 2])
    second = FileQuarantine(path, fsync=False)
    assert len(second) == 6
    _put_all(second, lines)  # the rerun sees every bad line again
    second.close()
    assert sum(second.counts.values()) == 10 and second.duplicates == 6
    recs = FileQuarantine.read(path)
    assert len(recs) == 10 == len(second) == len(list_records(path))
    assert [r.line() for r in recs] == lines
    assert all(line.endswith(b"}") for line in path.read_bytes().splitlines())
    # The same bytes at another position are another bad line, not a duplicate.
    third = FileQuarantine(path, fsync=False)
    third.put(lines[0], ParseError("no_json"), source="file:a.log", position="a.log@99999")
    third.close()
    assert len(FileQuarantine.read(path)) == 11


def test_legacy_clear_records_are_sealed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    legacy = QuarantineRecord(
        quarantined_at="2026-01-01T00:00:00+00:00",
        source="stdin",
        position="3",
        reason="no_json",
        detail="",
        size=len(_lines(1)[0]),
        line_b64=base64.b64encode(_lines(1)[0]).decode(),
    )
    path.write_text(json.dumps({f: getattr(legacy, f) for f in legacy.__struct_fields__ if f != "id"}) + "\n")
    with pytest.raises(QuarantineError, match="unencrypted"):
        list_records(path)
    q = FileQuarantine(path, fsync=False)
    q.put(_lines(1)[0], ParseError("no_json"), source="stdin", position="3")  # the same record
    q.close()
    _no_canary(path.read_bytes())
    (rec,) = FileQuarantine.read(path)
    assert rec.line() == _lines(1)[0] and rec.source == "stdin"


def test_admin_list_show_requeue_discard(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    q = FileQuarantine(path, fsync=False)
    lines = _lines(4)
    _put_all(q, lines)
    q.close()
    listed = list_records(path)
    assert [r.position for r in listed] == [f"a.log@{i * 100}" for i in range(4)]
    assert all(not hasattr(r, "line_b64") for r in listed)
    shown = show_record(path, listed[2].id[:12])
    assert shown.line() == lines[2] and shown.id == listed[2].id
    with pytest.raises(QuarantineError, match="no record"):
        show_record(path, "ffffffffffffffffffff")
    assert [r.line() for r in requeue(path)] == lines
    assert [r.line() for r in requeue(path, [listed[1].id])] == [lines[1]]
    assert discard(path, [listed[0].id, listed[3].id]) == 2
    assert [r.line() for r in requeue(path)] == lines[1:3]
    assert path.stat().st_mode & 0o777 == 0o600
    _no_canary(path.read_bytes())
