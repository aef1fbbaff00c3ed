"""StdinSource: real audit lines through a pipe, a subprocess's standard input, and a BytesIO."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ingest.sources.base import RawRecord
from ingest.sources.checkpoint import too_large_size
from ingest.sources.stdin import StdinSource, StreamPosition

from .test_source_file import file_lines, keys_of, real_log

__all__ = ["real_log"]  # the module-scoped fixture: a log written by a real OpenBao server

ROOT = Path(__file__).resolve().parents[2]


def test_pipe_with_pauses_yields_idle_batches_then_ends(real_log: Path) -> None:
    data = real_log.read_bytes()
    lines = file_lines(real_log)
    r, w = os.pipe()

    def writer() -> None:
        with os.fdopen(w, "wb", buffering=0) as out:
            mid = len(data) // 2 + 7  # cut inside a line
            out.write(data[:mid])
            time.sleep(0.35)
            out.write(data[mid:])

    t = threading.Thread(target=writer)
    t.start()
    got: list[RawRecord] = []
    idle = 0
    with os.fdopen(r, "rb") as stream:
        src = StdinSource(stream)
        for batch in src.batches(max_records=4, timeout=0.1):
            assert len(batch) <= 4
            if not batch:
                idle += 1
            got += batch
            if batch:
                src.commit(batch[-1])
    t.join()
    assert [rec.data for rec in got] == lines
    assert idle >= 1  # the pause was reported, not blocked on
    assert src.committed == StreamPosition(len(lines), len(data))
    assert str(got[0].position) == "line 1"


def test_reads_a_subprocess_standard_input(real_log: Path) -> None:
    code = (
        "import sys\n"
        "from ingest.sources.stdin import StdinSource\n"
        "n = sum(len(b) for b in StdinSource().batches())\n"
        "print(n)\n"
    )
    with open(real_log, "rb") as f:
        out = subprocess.run(
            [sys.executable, "-c", code], stdin=f, capture_output=True, check=True, cwd=ROOT, timeout=60
        )
    assert int(out.stdout) == len(file_lines(real_log))


def test_stream_without_fileno_and_too_large_lines(real_log: Path) -> None:
    by_size = sorted(file_lines(real_log), key=len)
    small, big, small2 = by_size[0], by_size[-1], by_size[1]
    assert len(big) > len(small2)
    stream = io.BytesIO(small + b"\n" + big + b"\n" + small2)  # no final newline
    got = [r for b in StdinSource(stream, max_line_bytes=len(big) - 1).batches() for r in b]
    assert len(got) == 3
    assert [too_large_size(r) for r in got] == [0, len(big), 0]
    assert got[1].data == big[: len(big) - 1]
    assert keys_of([got[0].data, got[2].data]) == keys_of([small, small2])


def test_commit_refuses_a_foreign_record() -> None:
    from ingest.errors import SourceError

    src = StdinSource(io.BytesIO(b""))
    assert list(src.batches()) == []
    with pytest.raises(SourceError):
        src.commit(RawRecord(b"x", 1, "other"))
