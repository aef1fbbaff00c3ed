"""The one seam every source implements: iterate batches of raw records, then commit them.

A source never parses: it hands raw bytes (one audit line or Kafka record each) with an opaque,
ordered ``position`` to its caller, who parses, forwards, and only then calls :meth:`Source.commit`
with the last record it has fully handled. That order is what makes "no loss, no re-read" hold
across a crash: a restart resumes from the last committed position.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = ["RawRecord", "Source"]


class RawRecord(NamedTuple):
    """One raw entry. ``position`` is source-specific and opaque to callers (e.g. a file's
    ``(inode, end_offset)`` or a Kafka ``(topic, partition, offset)``); ``key`` is the Kafka key
    when there is one."""

    data: bytes
    position: Any
    source: str
    key: bytes | None = None


@runtime_checkable
class Source(Protocol):
    """A stream of raw audit entries with durable commits."""

    name: str

    def batches(self, max_records: int = 1000, timeout: float = 1.0) -> Iterator[list[RawRecord]]:
        """Yield batches of at most ``max_records``. In follow mode an idle period yields ``[]``
        after ``timeout`` seconds so the caller can do housekeeping; a finite source ends."""
        ...

    def commit(self, record: RawRecord) -> None:
        """Durably record that everything up to and including ``record`` has been handled."""
        ...

    def close(self) -> None: ...
