"""The shipper: move audit entries from any :class:`~ingest.sources.base.Source` to a Kafka topic.

For each batch the shipper parses every line once, quarantines the ones that do not parse (with
their reason), drops the second copy of an entry two audit devices both wrote, and produces the
*redacted* re-encoding (:func:`~ingest.codec.encode_entry`, never the raw line, which may hold
plaintext secrets) keyed by the identity key, so that one identity's events stay in one partition
and in order. Only once the broker has acknowledged every record of the batch (``acks=all``) and
the quarantine has them too does it commit the source. A ``kill -9`` at any point therefore loses
nothing; the price is that the last batch may be sent twice (at-least-once), which the detector's
deduplication absorbs.

A record Kafka refuses for itself (too large for ``max_request_size`` or the broker's limit) is
quarantined as ``too_large`` rather than retried forever. When the broker is unavailable the
shipper keeps the batch, waits with exponential backoff (never a busy loop), re-sends what
failed and does not commit until it succeeds. A producer can
also end up in a state it never leaves by itself (an idempotent producer whose broker lost its
producer state, say, fails every record at once with a non-retriable error); given a
``reconnect`` factory the shipper then replaces it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from .codec import encode_entry
from .dedup import Deduplicator
from .errors import ParseError, ShipError
from .parse import Parser
from .quarantine import Quarantine
from .sources.base import RawRecord, Source

__all__ = ["Backoff", "Producer", "ShipStats", "Shipper", "ShipInterrupted"]

log = logging.getLogger(__name__)


class Producer(Protocol):
    """The part of ``kafka.KafkaProducer`` the shipper uses. ``send`` returns a future with
    ``is_done``, ``succeeded()`` and ``exception``."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


@runtime_checkable
class _Flushable(Protocol):
    def flush(self) -> None: ...


class ShipInterrupted(ShipError):
    """Asked to stop while a batch could not be delivered; the source was not committed."""


@dataclass
class ShipStats:
    """Counters since start. ``quarantined`` is per reason code."""

    lines: int = 0
    blank: int = 0
    shipped: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    produce_errors: int = 0
    retries: int = 0
    batches: int = 0
    commits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "blank": self.blank,
            "shipped": self.shipped,
            "duplicates": self.duplicates,
            "quarantined": dict(self.quarantined),
            "produce_errors": self.produce_errors,
            "retries": self.retries,
            "batches": self.batches,
            "commits": self.commits,
        }


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt ``n`` waits up to ``initial * factor**n``,
    capped at ``maximum`` seconds, and never less than ``initial / 2``."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        cap = min(self.maximum, self.initial * self.factor**attempt)
        return max(self.initial / 2, rng.uniform(0, cap))


class _NotSent:
    """Stands in for the future of a record the producer refused to queue (``send`` raised): done,
    failed, with that error. The one definition, for the shipper and the Kafka DLQ
    (:class:`ingest.sources.kafka.DeadLetterQueue`)."""

    is_done = True

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc

    def succeeded(self) -> bool:
        return False

    def failed(self) -> bool:
        return True


# Errors about one record itself (too big for the client or the broker, refused as invalid):
# retrying cannot help, so the record is quarantined instead of blocking the stream forever.
_RECORD_ERRORS: Final = frozenset(
    {"MessageSizeTooLargeError", "RecordListTooLargeError", "InvalidRecordError"}
)


def _record_error(exc: BaseException | None) -> bool:
    return type(exc).__name__ in _RECORD_ERRORS


class _Outgoing:
    __slots__ = ("key", "value", "record", "future")

    def __init__(self, key: bytes, value: bytes, record: RawRecord) -> None:
        self.key = key
        self.value = value
        self.record = record
        self.future: Any = None


class Shipper:
    """Ships ``source`` to ``topic`` through ``producer``; see the module docstring.

    ``quarantine`` receives lines that do not parse (a :class:`~ingest.quarantine.FileQuarantine`
    or a :class:`~ingest.sources.kafka.DeadLetterQueue`; if it has a ``flush()`` it is flushed
    before each commit). ``sleep`` waits between retries and returns True when asked to stop
    (defaults to the stop event's ``wait``); tests inject it.
    """

    def __init__(
        self,
        source: Source,
        producer: Producer,
        topic: str,
        *,
        quarantine: Quarantine,
        parser: Parser | None = None,
        dedup: Deduplicator | None = None,
        max_batch: int = 1000,
        poll_timeout: float = 1.0,
        flush_timeout: float = 30.0,
        backoff: Backoff | None = None,
        sleep: Callable[[float], bool] | None = None,
        seed: int | None = None,
        stats_interval: float = 60.0,
        reconnect: Callable[[], Producer] | None = None,
    ) -> None:
        if max_batch <= 0:
            raise ValueError("max_batch must be positive")
        self.source = source
        self.producer = producer
        self.topic = topic
        self.quarantine = quarantine
        self.parser = parser or Parser()
        self.dedup = dedup or Deduplicator()
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.flush_timeout = flush_timeout
        self.backoff = backoff or Backoff()
        self.stats = ShipStats()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._rng = random.Random(seed)
        self._stats_interval = stats_interval
        self._last_stats = time.monotonic()
        self._reconnect = reconnect
        self._broken = False
        self._refusal: Exception | None = None

    def __repr__(self) -> str:
        return f"Shipper(source={self.source.name!r}, topic={self.topic!r})"

    def stop(self) -> None:
        """Finish the current batch (deliver, commit), then return from :meth:`run`.
        Safe to call from a signal handler or another thread."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, max_batches: int | None = None) -> ShipStats:
        """Ship until the source ends, :meth:`stop` is called, or ``max_batches`` batches.

        Raises :class:`ShipInterrupted` when stopped while a batch could not be delivered (the
        source is then left uncommitted, so those entries are read again on restart).
        """
        done = 0
        batches = self.source.batches(max_records=self.max_batch, timeout=self.poll_timeout)
        try:
            for batch in batches:
                if batch:
                    self.ship(batch)
                    done += 1
                self._maybe_log_stats()
                if self._stop.is_set() or (max_batches is not None and done >= max_batches):
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        log.info("shipper stopped: %s", self.stats.as_dict())
        return self.stats

    def ship(self, batch: list[RawRecord]) -> None:
        """Parse, quarantine, deduplicate, produce and, once all is acknowledged, commit."""
        if not batch:
            return
        stats = self.stats
        out: list[_Outgoing] = []
        refused: list[tuple[RawRecord, ParseError]] = []
        parse = self.parser.parse
        seen = self.dedup.seen
        send = self._send
        self._refusal = None
        if self._broken:
            self._replace_producer()
        for rec in batch:
            stats.lines += 1
            cut = int(getattr(rec.position, "too_large", 0) or 0)
            if cut:
                # Sources cut a line over their size limit and mark its full size on the
                # position; ``data`` is only its head, so it is quarantined, never parsed.
                refused.append((rec, ParseError("too_large", f"{cut}-byte line over the source's limit")))
                continue
            if not rec.data.strip():
                stats.blank += 1
                continue
            try:
                event = parse(rec.data, source=rec.source)
                if seen(event.dedup_key):
                    stats.duplicates += 1
                    continue
                item = _Outgoing(event.identity.key.encode("utf-8"), encode_entry(event), rec)
            except ParseError as exc:
                refused.append((rec, exc))
                continue
            except Exception as exc:  # a bug on one record: quarantined and counted, never fatal
                log.error("record at %s: unexpected %s (quarantined)", rec.position, type(exc).__name__)
                refused.append((rec, ParseError("internal", f"unexpected {type(exc).__name__}")))
                continue
            # Sent right away: the producer's I/O thread ships early records of the batch
            # while later ones are still being parsed.
            send(item)
            out.append(item)
        for rec, error in refused:
            self._quarantine(rec, error)
        rejected = self._deliver(out)
        self._flush_quarantine()
        stats.shipped += len(out) - rejected
        stats.batches += 1
        self.source.commit(batch[-1])
        stats.commits += 1

    # -- delivery -------------------------------------------------------------------------------
    def _send(self, item: _Outgoing) -> None:
        if self._refusal is not None:
            # send() blocks up to max_block_ms before refusing (no metadata for the topic, say):
            # once it refused, the rest of this attempt is refused at once, not one by one.
            item.future = _NotSent(self._refusal)
            return
        try:
            item.future = self.producer.send(self.topic, value=item.value, key=item.key)
        except Exception as exc:  # noqa: BLE001 - any refusal to queue is retried below
            if not _record_error(exc):
                self._refusal = exc
            item.future = _NotSent(exc)

    def _deliver(self, out: list[_Outgoing]) -> int:
        """Wait for every acknowledgement of ``out`` (already sent), re-sending failures after
        a backoff. Returns how many records Kafka refused for good (they are quarantined)."""
        attempt = 0
        rejected = 0
        waiting = out
        while True:
            try:
                self.producer.flush(timeout=self.flush_timeout)
            except Exception as exc:  # noqa: BLE001 - a flush timeout: records still in flight
                log.warning("Kafka has not acknowledged within %.0fs: %s", self.flush_timeout, exc)
            waiting = [i for i in waiting if not i.future.succeeded()]
            for item in [i for i in waiting if i.future.is_done and _record_error(i.future.exception)]:
                why = item.future.exception
                self._quarantine(item.record, ParseError("too_large", f"refused by Kafka: {why}"))
                waiting.remove(item)
                rejected += 1
            if not waiting:
                if attempt:
                    log.warning("Kafka delivery recovered after %d retries", attempt)
                return rejected
            failed = [i for i in waiting if i.future.is_done]
            self.stats.produce_errors += len(failed)
            if failed:
                first = failed[0].future.exception
                log.warning(
                    "%d of %d record(s) not acknowledged by Kafka (%s: %s); retrying, not committing",
                    len(failed),
                    len(out),
                    type(first).__name__,
                    first,
                )
                if any(not getattr(i.future.exception, "retriable", True) for i in failed):
                    self._broken = True
            if self._stop.is_set() or self._sleep(self.backoff.delay(attempt, self._rng)):
                raise ShipInterrupted(
                    f"stopped with {len(waiting)} record(s) unacknowledged; source not committed"
                )
            attempt += 1
            self.stats.retries += 1
            if self._broken and self._replace_producer():
                # The old producer's in-flight records died with it: send all of them again.
                failed = waiting
            self._refusal = None
            for item in failed:
                self._send(item)

    def _replace_producer(self) -> bool:
        """Swap a producer stuck in a failed state for a new one; False if that is not possible."""
        if self._reconnect is None:
            return False
        log.warning("the Kafka producer failed with a non-retriable error; replacing it")
        old = self.producer
        try:
            self.producer = self._reconnect()
        except Exception as exc:  # noqa: BLE001 - the broker may still be down: retried later
            log.warning("cannot create a new Kafka producer yet: %s", exc)
            return False
        self._broken = False
        close = getattr(old, "close", None)
        if close is not None:
            try:
                close(timeout=0)
            except Exception as exc:  # noqa: BLE001 - it was broken already
                log.debug("closing the failed producer: %s", exc)
        return True

    def _quarantine(self, rec: RawRecord, exc: ParseError) -> None:
        attempt = 0
        while True:
            try:
                self.quarantine.put(rec.data, exc, source=rec.source, position=str(rec.position))
                break
            except ShipError as err:
                self._retry_or_raise(attempt, "queue a refused line", err)
                attempt += 1
        self.stats.quarantined[exc.reason] += 1

    def _flush_quarantine(self) -> None:
        if not isinstance(self.quarantine, _Flushable):
            return
        attempt = 0
        while True:
            try:
                self.quarantine.flush()
                return
            except ShipError as err:
                self._retry_or_raise(attempt, "flush the quarantine", err)
                attempt += 1

    def _retry_or_raise(self, attempt: int, what: str, err: Exception) -> None:
        self.stats.produce_errors += 1
        log.warning("could not %s: %s; retrying, not committing", what, err)
        if self._stop.is_set() or self._sleep(self.backoff.delay(attempt, self._rng)):
            raise ShipInterrupted(f"stopped before the quarantine accepted a line: {err}") from err
        self.stats.retries += 1

    def _maybe_log_stats(self) -> None:
        now = time.monotonic()
        if now - self._last_stats >= self._stats_interval:
            self._last_stats = now
            log.info("shipper: %s", self.stats.as_dict())
