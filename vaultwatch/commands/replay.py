"""``vaultwatch replay``: run the detection engine over recorded audit logs, offline.

Files (plain or gzip) are read in event-time order across files (a k-way merge with a small
reorder buffer per file, since concurrent requests are written slightly out of order), copies
written by two audit devices are dropped, and the engine learns as it goes, exactly as it would
live. Every alert is written as one ``vaultwatch.alert/v1`` JSON line in its final state. The run
is deterministic: the same input and seed give the same alerts, ids included.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import heapq
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, cast

import msgspec

from detect.alert import Alert
from detect.engine import Engine
from ingest.dedup import Deduplicator
from ingest.errors import ParseError
from ingest.event import AuditEvent
from ingest.parse import Parser
from ingest.quarantine import FileQuarantine, MemoryQuarantine, Quarantine

HELP = "process recorded audit logs in event-time order and write every alert as JSON lines"
DESCRIPTION = """\
Replay recorded Vault/OpenBao audit logs (plain or .gz) through the detection engine, in event-time
order across all files, learning as it goes. Each alert is written once, in its final state, as
one vaultwatch.alert/v1 JSON object per line. Lines that do not parse are counted and quarantined.

examples:
  vaultwatch replay audit.log.2.gz audit.log.1.gz audit.log --alerts-out alerts.jsonl
  vaultwatch replay audit.log --alerts-out alerts.jsonl --quarantine bad-lines.jsonl --seed 7
  vaultwatch replay audit.log --alerts-out alerts.jsonl --deliver vaultwatch.toml
"""

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run", "replay", "ReplayResult", "read_events"]

log = logging.getLogger(__name__)
_REORDER = 4096
_PROGRESS_BYTES = 8 * 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="audit log files (plain or .gz)")
    p.add_argument("--alerts-out", required=True, metavar="PATH", help="write alerts here (JSON lines)")
    p.add_argument("--quarantine", metavar="PATH", help="write unparseable lines to PATH (JSON lines, 0600)")
    p.add_argument("--config", metavar="JSON", help="detection settings as a JSON file (see detect.config)")
    p.add_argument("--seed", type=int, default=0, help="model seed (default 0)")
    p.add_argument("--prefix", help="the audit device's `prefix` option, if one is set")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.add_argument(
        "--deliver",
        metavar="TOML",
        help="also store the alerts and send them through the [routes] and [channels] of this vaultwatch "
        "configuration (retries follow its schedule while the command runs)",
    )


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


def _file_events(
    index: int,
    path: Path,
    parser: Parser,
    quarantine: Quarantine,
    failures: Counter[str],
    counter: list[int],
    progress: Callable[[int], None] | None,
) -> Iterator[tuple[float, int, int, AuditEvent]]:
    """Events of one file in time order: concurrent requests are written slightly out of order,
    so events are sorted in chunks with a holdback of ``_REORDER`` (Timsort is linear on nearly
    sorted input, cheaper than a heap operation per line)."""
    buf: list[tuple[float, int, int, AuditEvent]] = []
    source = str(path)
    raw = open(path, "rb")  # noqa: SIM115 - closed below
    try:
        f: IO[bytes] = (
            cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if raw.read(2) == b"\x1f\x8b" else raw
        )
        raw.seek(0)
        parse = parser.parse
        last_pos = 0
        n = 0
        for n, line in enumerate(f, 1):
            try:
                ev = parse(line)
            except ParseError as exc:
                if not line.strip():
                    continue  # blank lines are not entries
                failures[exc.reason] += 1
                quarantine.put(line, exc, source=source, position=str(n))
                continue
            buf.append((ev.ts, index, n, ev))
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
    """Events of all ``files`` merged in event-time order (ties: file order, then line order)."""
    p = parser or Parser()
    q = quarantine if quarantine is not None else MemoryQuarantine()
    fails = failures if failures is not None else Counter()
    cnt = counter if counter is not None else [0]
    streams = [_file_events(i, path, p, q, fails, cnt, progress) for i, path in enumerate(files)]
    merged = streams[0] if len(streams) == 1 else heapq.merge(*streams)
    for item in merged:
        yield item[3]


def replay(
    files: list[Path],
    *,
    engine: Engine | None = None,
    quarantine: Quarantine | None = None,
    parser: Parser | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Replay ``files`` through ``engine`` (a fresh default one if None); alerts in final state."""
    eng = engine or Engine()
    # Baselines are many small long-lived containers; at the default gen-0 threshold (700) the
    # cyclic collector rescans them constantly and replay runs about three times slower.
    saved = gc.get_threshold()
    gc.set_threshold(max(saved[0], 50_000), max(saved[1], 20), max(saved[2], 100))
    try:
        return _replay(files, eng, quarantine, parser, progress)
    finally:
        gc.set_threshold(*saved)


def _replay(
    files: list[Path],
    eng: Engine,
    quarantine: Quarantine | None,
    parser: Parser | None,
    progress: Callable[[int], None] | None,
) -> ReplayResult:
    dedup = Deduplicator()
    failures: Counter[str] = Counter()
    counter = [0]
    alerts: dict[str, Alert] = {}
    result = ReplayResult()
    started = time.perf_counter()
    last_ts: float | None = None
    process = eng.process
    for ev in read_events(
        files, parser=parser, quarantine=quarantine, failures=failures, counter=counter, progress=progress
    ):
        if dedup.is_duplicate(ev):
            continue
        result.events += 1
        last_ts = ev.ts
        for a in process(ev):
            alerts[a.id] = a
    if last_ts is not None:
        # A day past the last event: every window closes and the last model batch is scored.
        for a in eng.flush(last_ts + 86400.0):
            alerts[a.id] = a
    result.lines = counter[0]
    result.duplicates = dedup.duplicates
    result.parse_failures = dict(failures)
    result.identities = len(eng.identities())
    result.alerts = list(alerts.values())
    result.seconds = time.perf_counter() - started
    return result


def _load_config(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict):
        raise ValueError("--config must hold a JSON object")
    return data


def run(args: argparse.Namespace) -> int:
    """Entry point of ``vaultwatch replay``."""
    files = [Path(f) for f in args.files]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"vaultwatch replay: no such file: {', '.join(missing)}", file=sys.stderr)  # noqa: T201
        return 2
    try:
        config = _load_config(args.config)
        engine = Engine(config, seed=args.seed)
    except (OSError, ValueError) as exc:
        print(f"vaultwatch replay: bad --config: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    quarantine: Quarantine = FileQuarantine(args.quarantine) if args.quarantine else MemoryQuarantine()
    parser = Parser(prefix=args.prefix)
    total = sum(f.stat().st_size for f in files)
    show = not args.no_progress and total >= _PROGRESS_BYTES and sys.stderr.isatty()
    try:
        if show:
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                transient=True,
            ) as bar:
                task = bar.add_task("replaying", total=total)
                result = replay(
                    files,
                    engine=engine,
                    quarantine=quarantine,
                    parser=parser,
                    progress=lambda n: bar.advance(task, n),
                )
        else:
            result = replay(files, engine=engine, quarantine=quarantine, parser=parser)
    finally:
        quarantine.close()
    out = Path(args.alerts_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    enc = msgspec.json.Encoder()
    with open(out, "wb") as f:
        for a in result.alerts:
            f.write(enc.encode(a.to_dict()) + b"\n")
    summary = result.summary()
    if args.deliver:
        try:
            summary["delivery"] = deliver(result.alerts, args.deliver)
        except Exception as exc:  # noqa: BLE001 - configuration or store problems, in one line
            print(f"vaultwatch replay: delivery failed: {type(exc).__name__}: {exc}", file=sys.stderr)  # noqa: T201
            return 1
    if args.json:
        print(json.dumps(summary, indent=2))  # noqa: T201
    else:
        _print_summary(summary, out)
    return 0


def deliver(alerts: list[Alert], config: str, *, settle: float = 30.0) -> dict[str, int]:
    """Store ``alerts`` and deliver them through the configuration's routes and channels.

    Groups are flushed at once (a replay has no reason to wait ``group_wait``); deliveries that
    must be retried are retried while the schedule allows within ``settle`` seconds, and what is
    still pending stays in the store's outbox for ``vaultwatch run`` to finish.
    """
    import time

    from alerts.route import Router, RouterConfig

    from ..service import build_delivery, open_store
    from ..settings import load_settings

    settings = load_settings(config)
    if not settings.routes or not settings.channels:
        raise ValueError(f"{config} has no [routes] or no [channels] to deliver to")
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


def _print_summary(s: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="vaultwatch replay", show_header=False)
    t.add_row("lines", str(s["lines"]))
    t.add_row("events", str(s["events"]))
    t.add_row("duplicates dropped", str(s["duplicates"]))
    t.add_row("identities", str(s["identities"]))
    fails = s["parse_failures"]
    t.add_row("parse failures", ", ".join(f"{k}: {v}" for k, v in fails.items()) if fails else "0")
    t.add_row("alerts", f"{s['alerts']} -> {out}")
    for k, v in s["alerts_by_severity"].items():
        t.add_row(f"  severity {k}", str(v))
    for k, v in s["alerts_by_detector"].items():
        t.add_row(f"  {k}", str(v))
    if "delivery" in s:
        t.add_row("deliveries", ", ".join(f"{k} {v}" for k, v in s["delivery"].items()) or "none")
    t.add_row("seconds", str(s["seconds"]))
    console.print(t)
