"""Read audit lines from a binary stream, by default standard input (``... | vaultwatch ship -``).

A pipe cannot be rewound, so :meth:`StdinSource.commit` only remembers the position in memory
(:attr:`StdinSource.committed`); durability is the upstream producer's job. When the stream has a
file descriptor, reads wait with ``select`` so an idle pipe still yields ``[]`` every ``timeout``
seconds; a stream without one (``io.BytesIO``) is read with plain blocking reads. The source ends
at end of stream; a last line without a newline is emitted then.
"""

from __future__ import annotations

import io
import os
import select
import sys
import threading
from collections.abc import Iterator
from typing import BinaryIO, Final, NamedTuple

from ..errors import SourceError
from ..parse import DEFAULT_MAX_LINE_BYTES
from .base import RawRecord
from .checkpoint import LineSplitter

__all__ = ["StdinSource", "StreamPosition"]

_CHUNK: Final = 256 * 1024


class StreamPosition(NamedTuple):
    """``line`` counts records from 1; ``offset`` is the stream offset just after the record."""

    line: int
    offset: int
    too_large: int = 0

    def __str__(self) -> str:
        return f"line {self.line}"


class StdinSource:
    """A :class:`~ingest.sources.base.Source` over a binary stream."""

    def __init__(
        self,
        stream: BinaryIO | None = None,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        name: str = "stdin",
    ) -> None:
        self.stream: BinaryIO = stream if stream is not None else sys.stdin.buffer
        self.name = name
        self.max_line_bytes = max_line_bytes
        self.committed: StreamPosition | None = None
        self._closed = threading.Event()
        self._count = 0
        try:
            self._fd: int | None = self.stream.fileno()
        except (OSError, AttributeError, io.UnsupportedOperation):
            self._fd = None

    def __repr__(self) -> str:
        return f"StdinSource(name={self.name!r})"

    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Iterator[list[RawRecord]]:
        """Yield records as they arrive; ``[]`` after ``timeout`` idle seconds; end at EOF."""
        splitter = LineSplitter(self.max_line_bytes)
        pending: list[RawRecord] = []
        while not self._closed.is_set():
            chunk = self._read(timeout)
            if chunk is None:
                yield []
                continue
            if chunk:
                lines = splitter.feed(chunk)
            else:
                last = splitter.flush()
                lines = [last] if last is not None else []
            for line in lines:
                self._count += 1
                pos = StreamPosition(self._count, line.end, line.too_large)
                pending.append(RawRecord(line.data, pos, self.name))
            for i in range(0, len(pending), max_records):
                yield pending[i : i + max_records]
            pending = []
            if not chunk:
                return

    def _read(self, timeout: float) -> bytes | None:
        """One chunk; b"" at end of stream; None when nothing arrived within ``timeout``."""
        read1 = getattr(self.stream, "read1", None)
        try:
            if self._fd is not None:
                ready, _, _ = select.select([self._fd], [], [], timeout)
                if not ready:
                    return None
                if read1 is None:
                    return os.read(self._fd, _CHUNK)
            # read1 returns what is buffered, or does at most one raw read: it never waits for
            # more once something arrived, and (chunk > buffer) leaves the buffer empty, so the
            # next select sees the truth.
            data: bytes = read1(_CHUNK) if read1 is not None else self.stream.read(_CHUNK)
            return data
        except OSError as exc:
            raise SourceError(f"{self.name}: read failed: {exc.strerror}") from exc

    def commit(self, record: RawRecord) -> None:
        """Remember ``record``'s position (in memory: a stream cannot be replayed)."""
        if not isinstance(record.position, StreamPosition):
            raise SourceError(f"{self.name}: cannot commit a record from another source")
        self.committed = record.position

    def close(self) -> None:
        """Stop at the next read; the stream itself belongs to the caller and stays open."""
        self._closed.set()
