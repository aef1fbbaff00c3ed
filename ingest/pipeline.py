"""Raw records in, typed events out: parse, quarantine what does not parse, drop duplicates.

:class:`IngestPipeline` is pure apart from the quarantine it is handed: it never drops a line
silently. A record a source flagged as too large (see
:func:`~ingest.sources.checkpoint.too_large_size`) is quarantined with reason ``too_large``
without being parsed; every other failure is quarantined with the parser's reason code. Copies of
an entry written by two audit devices (same ``request.id`` and ``type``) are dropped by the
:class:`~ingest.dedup.Deduplicator`.

:func:`iter_events` is the one-shot convenience for ``inspect``, ``replay`` and notebooks::

    for event in iter_events(["audit.log", "audit.log.1.gz"]):
        ...
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .dedup import Deduplicator
from .errors import ParseError
from .event import AuditEvent
from .parse import Parser
from .quarantine import MemoryQuarantine, Quarantine
from .sources.base import RawRecord, Source
from .sources.checkpoint import too_large_size
from .sources.file import FileSource

__all__ = ["IngestPipeline", "IngestStats", "iter_events"]

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    """Counters: lines seen, events produced, duplicates dropped, lines quarantined by reason."""

    lines: int = 0
    events: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)

    def add(self, other: IngestStats) -> None:
        """Add ``other``'s counts to these."""
        self.lines += other.lines
        self.events += other.events
        self.duplicates += other.duplicates
        self.quarantined.update(other.quarantined)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


class IngestPipeline:
    """Parse raw records into :class:`~ingest.event.AuditEvent` objects.

    ``dedup`` None disables duplicate dropping. :attr:`stats` holds the running totals.
    """

    def __init__(self, parser: Parser, quarantine: Quarantine, dedup: Deduplicator | None = None) -> None:
        self.parser = parser
        self.quarantine = quarantine
        self.dedup = dedup
        self.stats = IngestStats()

    def process(self, records: Iterable[RawRecord]) -> tuple[list[AuditEvent], IngestStats]:
        """Parse ``records``; return the new events (in order) and this call's counts."""
        events: list[AuditEvent] = []
        stats = IngestStats()
        parse = self.parser.parse
        dedup = self.dedup
        for rec in records:
            stats.lines += 1
            size = too_large_size(rec)
            try:
                if size:
                    raise ParseError("too_large", f"{size} bytes > limit {self.parser.max_line_bytes}")
                event = parse(rec.data, source=rec.source)
                if dedup is not None and dedup.is_duplicate(event):
                    stats.duplicates += 1
                    continue
            except ParseError as exc:
                self._refuse(rec, exc, stats)
                continue
            except Exception as exc:  # a bug on one record: quarantined and counted, never fatal
                log.error("record at %s: unexpected %s (quarantined)", rec.position, type(exc).__name__)
                self._refuse(rec, ParseError("internal", f"unexpected {type(exc).__name__}"), stats)
                continue
            events.append(event)
        stats.events = len(events)
        self.stats.add(stats)
        return events, stats

    def _refuse(self, rec: RawRecord, exc: ParseError, stats: IngestStats) -> None:
        self.quarantine.put(rec.data, exc, source=rec.source, position=str(rec.position))
        stats.quarantined[exc.reason] += 1


def iter_events(
    paths_or_source: str | Path | Sequence[str | Path] | Source,
    *,
    parser: Parser | None = None,
    quarantine: Quarantine | None = None,
    dedup: Deduplicator | None = None,
    batch_size: int = 1000,
) -> Iterator[AuditEvent]:
    """Every event in files (plain, ``.gz`` or directories, read one-shot, in the order given)
    or in a finite ``Source``. Refused lines go to ``quarantine`` (default: a
    :class:`~ingest.quarantine.MemoryQuarantine`); duplicates are dropped with a fresh
    :class:`~ingest.dedup.Deduplicator` unless one is passed."""
    pipeline = IngestPipeline(
        parser or Parser(),
        quarantine if quarantine is not None else MemoryQuarantine(),
        dedup if dedup is not None else Deduplicator(),
    )
    sources: list[Source]
    if isinstance(paths_or_source, str | Path):
        sources = [FileSource(paths_or_source)]
    elif isinstance(paths_or_source, Source):
        sources = [paths_or_source]
    else:
        sources = [FileSource(p) for p in paths_or_source]
    for source in sources:
        try:
            for batch in source.batches(max_records=batch_size):
                events, _ = pipeline.process(batch)
                yield from events
        finally:
            source.close()
