"""Quarantine: where lines that do not parse go, with their reason. Nothing is dropped silently.

A quarantined line is kept whole (base64, so any bytes survive) because it may be the only copy of
an audit entry. It may also hold a plaintext secret, which is why it goes to a file created with
mode 0600 (or a Kafka DLQ topic with the same access as the audit topic), never to a log line.
"""

from __future__ import annotations

import base64
import os
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import msgspec

from .errors import ParseError

__all__ = ["Quarantine", "FileQuarantine", "MemoryQuarantine", "QuarantineRecord"]


class QuarantineRecord(msgspec.Struct, frozen=True):
    """One quarantined line: where it came from, why it was refused, and its bytes."""

    quarantined_at: str
    source: str
    position: str
    reason: str
    detail: str
    size: int
    line_b64: str

    def line(self) -> bytes:
        return base64.b64decode(self.line_b64)


class Quarantine(Protocol):
    """Somewhere to put a refused line. ``counts`` says how many per reason."""

    counts: Counter[str]

    def put(self, line: bytes, error: ParseError, *, source: str, position: str) -> None: ...

    def close(self) -> None: ...


def _record(line: bytes, error: ParseError, source: str, position: str) -> QuarantineRecord:
    return QuarantineRecord(
        quarantined_at=datetime.now(UTC).isoformat(),
        source=source,
        position=position,
        reason=error.reason,
        detail=error.detail,
        size=len(line),
        line_b64=base64.b64encode(line).decode("ascii"),
    )


class MemoryQuarantine:
    """Keeps records in memory (for tests and one-shot commands that report them)."""

    def __init__(self) -> None:
        self.records: list[QuarantineRecord] = []
        self.counts: Counter[str] = Counter()

    def put(self, line: bytes, error: ParseError, *, source: str, position: str) -> None:
        self.records.append(_record(line, error, source, position))
        self.counts[error.reason] += 1

    def close(self) -> None:
        pass


class FileQuarantine:
    """Appends one JSON record per refused line to a file created with mode 0600, fsynced."""

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._f = os.fdopen(fd, "ab")
        self._fsync = fsync
        self._lock = threading.Lock()
        self._enc = msgspec.json.Encoder()
        self.counts: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"FileQuarantine({str(self.path)!r})"

    def put(self, line: bytes, error: ParseError, *, source: str, position: str) -> None:
        data = self._enc.encode(_record(line, error, source, position)) + b"\n"
        with self._lock:
            self._f.write(data)
            self._f.flush()
            if self._fsync:
                os.fsync(self._f.fileno())
            self.counts[error.reason] += 1

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()

    @staticmethod
    def read(path: str | Path) -> list[QuarantineRecord]:
        dec = msgspec.json.Decoder(QuarantineRecord)
        with open(path, "rb") as f:
            return [dec.decode(line) for line in f if line.strip()]
