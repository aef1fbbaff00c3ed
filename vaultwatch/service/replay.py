"""The one replay loop: recorded audit events, in event-time order, through a detection engine.

:func:`run_engine` is the loop that ``vaultwatch replay``, the demo's dataset generation and the
scenario suite all call, so the three cannot drift apart. Its semantics are the production
replay's: events repeated by a second audit device are dropped (:class:`ingest.dedup.Deduplicator`),
each remaining event goes through ``engine.process``, and once the events end the engine is
flushed :data:`FINAL_FLUSH` seconds past the last one, so the final hour's window closes and the
last model batch is scored. The flush goes no further: a replay knows nothing of the time after its
last event, so a deadline (a rotation, say) that would only pass in that unseen time is not
reported. There is no flush between events: the engine advances its own clock from the events it
sees. Each alert is kept once, in its final state.

:func:`read_events` merges recorded files (plain or gzip) into one event-time-ordered stream,
:func:`replay` runs it through :func:`run_engine`, and :func:`deliver` stores a replay's alerts
and sends them through the configured routes and channels. ``replay --jobs N``
(:mod:`vaultwatch.service.shard`) runs this same loop in each of its processes, its engine being
one shard's stage 1.
"""

from __future__ import annotations

import gc
import gzip
import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final, Protocol, cast

import msgspec

from alerts.route import Router, RouterConfig
from detect.alert import Alert
from detect.engine import Engine
from ingest.dedup import Deduplicator
from ingest.errors import ParseError
from ingest.event import AuditEvent
from ingest.parse import Parser
from ingest.quarantine import MemoryQuarantine, Quarantine

from ..errors import ConfigError
from ..settings import load_settings
from .cross import Pipeline
from .wiring import build_delivery, open_store

__all__ = [
    "FINAL_FLUSH",
    "EngineLike",
    "EngineRun",
    "ReplayResult",
    "deliver",
    "read_events",
    "replay",
    "run_engine",
]

#: How far past the last event the engine is flushed when the events end: one hour, enough to close
#: the last hour's window, not so far that deadlines of time the log never saw fall due.
FINAL_FLUSH: Final = 3600.0
_REORDER: Final = 4096
_BLOCK: Final = 1 << 20  # read files in 1 MiB blocks
_AFTER_SECONDS: Final = (b".", b"Z")
_TIME_HEAD: Final = b'{"time":"'


class EngineLike(Protocol):
    """What the loop needs of an engine (:class:`detect.engine.Engine` is one)."""

    def process(self, event: AuditEvent) -> list[Alert]: ...

    def flush(self, now: float) -> list[Alert]: ...


@dataclass
class EngineRun:
    """What :func:`run_engine` saw: alerts by id in their final state (in the order first raised)."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    events: int = 0
    duplicates: int = 0
    last_ts: float | None = None


def run_engine(
    events: Iterable[AuditEvent],
    engine: EngineLike,
    *,
    on_event: Callable[[AuditEvent, list[Alert]], None] | None = None,
    on_flush: Callable[[float, list[Alert]], None] | None = None,
    on_duplicate: Callable[[AuditEvent], None] | None = None,
) -> EngineRun:
    """Feed ``events`` (in event-time order) to ``engine``; flush it once, past the last event.

    ``on_event(event, alerts)`` is called after each event the engine processed, with the alerts
    that event raised or updated; ``on_flush(now, alerts)`` after the final flush. Duplicates
    are skipped before the engine or ``on_event`` sees them; the engine's detectors that have a
    ``witness(event)`` method are handed each skipped copy (a second audit device's entry), and
    so is ``on_duplicate`` (``replay --jobs``, whose witnesses run in another process).
    """
    dedup = Deduplicator()
    run = EngineRun()
    alerts = run.alerts
    process = engine.process
    # Detectors that judge the audit streams themselves (detect.completeness) must see every
    # copy, the dropped ones included: they take those through ``witness``.
    witnesses = [w for d in getattr(engine, "detectors", ()) if (w := getattr(d, "witness", None))]
    for ev in events:
        if dedup.is_duplicate(ev):
            for witness in witnesses:
                witness(ev)
            if on_duplicate is not None:
                on_duplicate(ev)
            continue
        run.events += 1
        run.last_ts = ev.ts
        out = process(ev)
        for a in out:
            alerts[a.id] = a
        if on_event is not None:
            on_event(ev, out)
    if run.last_ts is not None:
        end = run.last_ts + FINAL_FLUSH
        out = engine.flush(end)
        for a in out:
            alerts[a.id] = a
        if on_flush is not None:
            on_flush(end, out)
    run.duplicates = dedup.duplicates
    return run


class ReplayResult(msgspec.Struct, kw_only=True):
    """What a replay saw and raised."""

    lines: int = 0
    events: int = 0
    duplicates: int = 0
    parse_failures: dict[str, int] = msgspec.field(default_factory=dict)
    identities: int = 0
    alerts: list[Alert] = msgspec.field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        by_det = Counter(a.detector for a in self.alerts)
        by_sev = Counter(a.severity for a in self.alerts)
        return {
            "lines": self.lines,
            "events": self.events,
            "duplicates": self.duplicates,
            "identities": self.identities,
            "parse_failures": dict(sorted(self.parse_failures.items())),
            "alerts": len(self.alerts),
            "alerts_by_detector": dict(sorted(by_det.items())),
            "alerts_by_severity": dict(sorted(by_sev.items())),
            "seconds": round(self.seconds, 3),
        }


def _line_key(line: bytes) -> bytes | None:
    """The entry time of a raw audit line as a sort key, read from its text, or None.

    Vault and OpenBao write ``time`` first, so it is found without decoding the line. A UTC time
    as they write it (``2026-08-02T15:00:00.123Z``, any number of fraction digits) is its own key
    without the ``Z``: such texts sort as their instants do (a shorter fraction is a prefix of a
    longer one). Any other time (an offset, no zone) is converted to that form. No ``{"time":"``
    at the object's start, or a time ``fromisoformat`` refuses: None. Only the order of lines
    depends on it: every line is still parsed in full afterwards.
    """
    start = 0 if line[:1] == b"{" else line.find(b"{")
    if start < 0 or not line.startswith(_TIME_HEAD, start):
        return None
    begin = start + len(_TIME_HEAD)
    end = line.find(b'"', begin, begin + 64)
    if end < 0:
        return None
    text = line[begin:end]
    if text[-1:] == b"Z" and text[10:11] == b"T" and text[19:20] in _AFTER_SECONDS:
        return text[:-1]
    try:
        t = datetime.fromisoformat(text.decode("ascii"))
        if t.tzinfo is not None:
            t = t.astimezone(UTC).replace(tzinfo=None)
        return t.isoformat(timespec="microseconds").encode()
    except (ValueError, UnicodeDecodeError, OverflowError):
        return None


def _file_lines(
    index: int,
    path: Path,
    counter: list[int],
    progress: Callable[[int], None] | None,
) -> Iterator[tuple[bytes, int, int, bytes]]:
    """``(time key, index, line number, line)`` of one file in time order, before parsing.

    Concurrent requests are written slightly out of order, so lines are sorted in chunks with a
    holdback of ``_REORDER`` lines (Timsort is linear on nearly sorted input). The buffer holds
    raw lines, not parsed events: bytes are one allocation each and invisible to the cyclic
    garbage collector, and each event is parsed just before the engine takes it, while its
    objects are still in cache. A line whose time cannot be read from its text (a parse failure
    to be, most often) keeps the time of the line before it, so it stays in place.
    """
    buf: list[tuple[bytes, int, int, bytes]] = []
    append = buf.append
    line_key = _line_key
    raw = open(path, "rb", buffering=_BLOCK)  # noqa: SIM115 - closed below
    f: IO[bytes] = raw
    try:
        if raw.read(2) == b"\x1f\x8b":
            f = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
        raw.seek(0)
        last_pos = 0
        key = b""
        n = 0
        for n, line in enumerate(f, 1):
            k = line_key(line)
            if k is not None:
                key = k
            append((key, index, n, line))
            if len(buf) >= 2 * _REORDER:
                buf.sort()
                yield from buf[:_REORDER]
                del buf[:_REORDER]
                if progress is not None:
                    pos = raw.tell()
                    progress(pos - last_pos)
                    last_pos = pos
        counter[0] += n
        buf.sort()
        yield from buf
        if progress is not None:
            progress(raw.tell() - last_pos)
    finally:
        if f is not raw:
            f.close()
        raw.close()


def read_events(
    files: list[Path],
    *,
    parser: Parser | None = None,
    quarantine: Quarantine | None = None,
    failures: Counter[str] | None = None,
    counter: list[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[AuditEvent]:
    """Events of all ``files`` merged in event-time order (ties: file order, then line order).

    Lines are ordered on the time written at their start (:func:`_line_key`), merged across
    files, and only then parsed, one at a time. A line that does not parse is counted in
    ``failures`` and put in ``quarantine`` (blank lines are skipped).
    """
    p = parser or Parser()
    q = quarantine if quarantine is not None else MemoryQuarantine()
    fails = failures if failures is not None else Counter()
    cnt = counter if counter is not None else [0]
    sources = [str(path) for path in files]
    streams = [_file_lines(i, path, cnt, progress) for i, path in enumerate(files)]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams)
    parse = p.parse
    for _, index, n, line in merged:
        source = sources[index]
        try:
            ev = parse(line, source=source)
        except ParseError as exc:
            if not line.strip():
                continue  # blank lines are not entries
            fails[exc.reason] += 1
            q.put(line, exc, source=source, position=str(n))
            continue
        yield ev


def replay(
    files: list[Path],
    *,
    engine: Engine | Pipeline | None = None,
    quarantine: Quarantine | None = None,
    parser: Parser | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replay ``files`` through ``engine`` (a fresh default one if None); alerts in final state."""
    eng = engine or Engine()
    failures: Counter[str] = Counter()
    counter = [0]
    started = time.perf_counter()
    # Baselines are many small long-lived containers; at the default gen-0 threshold (700) the
    # cyclic collector rescans them constantly and replay runs about three times slower.
    saved = gc.get_threshold()
    gc.set_threshold(max(saved[0], 50_000), max(saved[1], 20), max(saved[2], 100))
    try:
        events = read_events(
            files, parser=parser, quarantine=quarantine, failures=failures, counter=counter, progress=progress
        )
        run = run_engine(events, eng)
    finally:
        gc.set_threshold(*saved)
    return ReplayResult(
        lines=counter[0],
        events=run.events,
        duplicates=run.duplicates,
        parse_failures=dict(failures),
        identities=len(eng.identities()),
        alerts=list(run.alerts.values()),
        seconds=time.perf_counter() - started,
    )


def deliver(alerts: list[Alert], config: str, *, settle: float = 30.0) -> dict[str, int]:
    """Store ``alerts`` and deliver them through the configuration's routes and channels.

    Groups are flushed at once (a replay has no reason to wait ``group_wait``); deliveries that
    must be retried are retried while the schedule allows within ``settle`` seconds, and what is
    still pending stays in the store's outbox for ``vaultwatch run`` to finish.

    A configuration without ``[routes]`` or without ``[channels]`` receivers raises
    :class:`~vaultwatch.errors.ConfigError` saying what to add, before anything is stored: with
    no routes ``vaultwatch run`` notifies nobody either, and a replay sends alerts where ``run``
    would, never by a rule of its own.
    """
    settings = load_settings(config)
    problems = _delivery_problems(settings.routes, settings.channels)
    if problems:
        raise ConfigError(problems, config)
    store = open_store(settings)
    try:
        with store.transaction() as tx:
            tx.add_alerts(alerts)
        router = Router(RouterConfig.from_dict(settings.routes), store)
        now = time.time()
        # As if the alerts had arrived a day ago: every group_wait has passed, one notification
        # per group goes out now.
        router.ingest(alerts, now - 86400.0)
        router.tick(now)
        worker = build_delivery(settings, store)
        counts: dict[str, int] = {}
        if worker is None:
            return counts
        deadline = time.monotonic() + settle
        while True:
            for k, v in worker.drain().items():
                counts[k] = counts.get(k, 0) + v
            with store.transaction(read_only=True) as tx:
                pending = tx.depth()
            if not pending or time.monotonic() >= deadline:
                counts["pending"] = pending
                return counts
            time.sleep(0.5)
    finally:
        store.close()


def _delivery_problems(routes: dict[str, Any], channels: dict[str, Any]) -> list[tuple[str, str]]:
    """What a configuration lacks for ``--deliver``, each problem with the fix (no value quoted)."""
    problems: list[tuple[str, str]] = []
    if not channels.get("receivers"):
        problems.append(
            (
                "channels",
                "no [[channels.receivers]] to send to: add one with a name and a channel "
                "([[channels.receivers.webhook]], .slack, .pagerduty, .teams, .email or .syslog), "
                "as in examples/vaultwatch.toml",
            )
        )
    if not routes:
        problems.append(
            (
                "routes",
                "no [routes] table, so no alert goes anywhere (`vaultwatch run` sends none either): "
                "add [[routes.receivers]] with the name of a [[channels.receivers]] entry and its "
                'channels (integrations = [{ channel = "webhook" }]), and [routes.route] with '
                "receiver = that name, as in examples/vaultwatch.toml",
            )
        )
    return problems
