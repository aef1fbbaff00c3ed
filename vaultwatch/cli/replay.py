"""``vaultwatch replay``: run the detection engine over recorded audit logs, offline.

Files (plain or gzip) are read in event-time order across files (a k-way merge with a small
reorder buffer per file, since concurrent requests are written slightly out of order), copies
written by two audit devices are dropped, and the engine learns as it goes, exactly as it would
live. Every alert is written as one ``vaultwatch.alert/v1`` JSON line in its final state. The run
is deterministic: the same input and seed give the same alerts, ids included. The loop itself is
:mod:`vaultwatch.service.replay`; this module is its command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from detect.alert import Alert
from detect.drift import DriftReport, DriftWatch, merge_reports
from detect.policy import PolicyError
from detect.rules import default_rules
from ingest.event import AuditEvent
from ingest.parse import Parser
from ingest.quarantine import FileQuarantine, MemoryQuarantine, Quarantine

from ..service.archive import EventArchive
from ..service.atomic import atomic_writer, leftover
from ..service.cross import Pipeline
from ..service.replay import deliver, replay
from ..settings import load_policy
from .access_model import print_drift

HELP = "process recorded audit logs in event-time order and write every alert as JSON lines"
DESCRIPTION = """\
Replay recorded Vault/OpenBao audit logs (plain or .gz) through the detection engine, in event-time
order across all files, learning as it goes. Each alert is written once, in its final state, as
one vaultwatch.alert/v1 JSON object per line. Lines that do not parse are counted and quarantined.

examples:
  vaultwatch replay audit.log.2.gz audit.log.1.gz audit.log --alerts-out alerts.jsonl
  vaultwatch replay audit.log --alerts-out alerts.jsonl --quarantine bad-lines.jsonl --seed 7
  vaultwatch replay audit.log --alerts-out alerts.jsonl --deliver vaultwatch.toml
  vaultwatch replay audit.log --alerts-out alerts.jsonl --archive var/archive --store sqlite:///var/vw.db

With --archive and --store the replay leaves what `vaultwatch run` would have: the events in a
Parquet event archive, the alerts and the learned baselines in an alert store. `vaultwatch report`,
`vaultwatch exposure` and `vaultwatch serve` then work on them offline (see the summary's hints).
"""

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

log = logging.getLogger(__name__)
_PROGRESS_BYTES = 8 * 1024 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="audit log files (plain or .gz)")
    p.add_argument("--alerts-out", required=True, metavar="PATH", help="write alerts here (JSON lines)")
    p.add_argument("--quarantine", metavar="PATH", help="write unparseable lines to PATH (JSON lines, 0600)")
    p.add_argument(
        "--quarantine-key-file",
        metavar="PATH",
        help="the key encrypting the quarantine (default: $VAULTWATCH_QUARANTINE_KEY_FILE, "
        "else ~/.config/vaultwatch/quarantine.key, created on first use)",
    )
    p.add_argument("--config", metavar="JSON", help="detection settings as a JSON file (see detect.config)")
    p.add_argument("--seed", type=int, default=0, help="model seed (default 0)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="processes: identities are sharded across N, the cross-identity stage runs once "
        "(default 1; the same alert ids, the behavioural core's peer priors aside)",
    )
    p.add_argument(
        "--policy",
        metavar="TOML",
        help="access model and rotation schedule (default: the packaged one; "
        "`vaultwatch access-model suggest` writes a starting file)",
    )
    p.add_argument("--prefix", help="the audit device's `prefix` option, if one is set")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.add_argument(
        "--archive",
        metavar="DIR",
        help="also write every event to this Parquet event archive (for report, exposure and serve)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="also store the alerts and the learned baselines in this alert store "
        "(e.g. sqlite:///var/vaultwatch.db; for report and serve)",
    )
    p.add_argument(
        "--deliver",
        metavar="TOML",
        help="also store the alerts and send them through the [routes] and [channels] of this vaultwatch "
        "configuration (retries follow its schedule while the command runs)",
    )


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
        drift = DriftWatch(load_policy(args.policy))
        full = {**(config or {}), "policy": drift.policy}

        def detectors() -> list[Any]:
            # Called once per stage (detect.partition.split): fresh rules each time; the one drift
            # watch is identity-scoped, so it lands in stage 1 only.
            return [*default_rules(full), drift]

        archive = _open_archive(args.archive) if args.archive else None
        engine = _Archiving(full, seed=args.seed, detectors=detectors, archive=archive)
    except PolicyError as exc:
        print(f"vaultwatch replay: bad --policy: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except (OSError, ValueError) as exc:
        print(f"vaultwatch replay: bad --config: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    quarantine: Quarantine = (
        FileQuarantine(args.quarantine, key_file=args.quarantine_key_file)
        if args.quarantine
        else MemoryQuarantine()
    )
    parser = Parser(prefix=args.prefix)
    total = sum(f.stat().st_size for f in files)
    show = not args.no_progress and total >= _PROGRESS_BYTES and sys.stderr.isatty()
    if args.jobs < 1:
        print("vaultwatch replay: --jobs must be at least 1", file=sys.stderr)  # noqa: T201
        return 2
    report = None
    snapshots: list[bytes] | None = None
    try:
        if args.jobs > 1:
            result, report, snapshots, span = _run_jobs(args, files, full, detectors, quarantine)
            engine.span = span
        elif show:
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
        if archive is not None:
            archive.close()
    out = Path(args.alerts_out)
    interrupted = leftover(out)
    if interrupted is not None:
        print(  # noqa: T201
            f"vaultwatch replay: the last run writing {out} was interrupted ({interrupted} was left "
            f"behind); {out} is written again now",
            file=sys.stderr,
        )
    enc = msgspec.json.Encoder()
    # Whole or absent: written to <out>.partial and renamed, never a file that looks complete.
    with atomic_writer(out) as f:
        for a in result.alerts:
            f.write(enc.encode(a.to_dict()) + b"\n")
    summary = result.summary()
    if report is None:
        report = drift.report()
    summary["access_model_drift"] = report.to_dict()
    for line in report.lines():
        log.warning("%s", line)
    if interrupted is not None:
        summary["previous_run_interrupted"] = True
    if args.store:
        try:
            _store(args.store, result.alerts, snapshots if snapshots is not None else [engine.snapshot()])
        except Exception as exc:  # noqa: BLE001 - a bad URL or an unwritable store, in one line
            print(f"vaultwatch replay: --store {args.store}: {type(exc).__name__}: {exc}", file=sys.stderr)  # noqa: T201
            return 1
    if args.archive or args.store:
        summary["next"] = _next_steps(args.archive, args.store, engine)
    if args.deliver:
        try:
            summary["delivery"] = deliver(result.alerts, args.deliver)
        except Exception as exc:  # noqa: BLE001 - configuration or store problems, in one line
            print(f"vaultwatch replay: delivery failed: {type(exc).__name__}: {exc}", file=sys.stderr)  # noqa: T201
            if "no [routes]" in str(exc):
                hint = "hint: to keep the alerts without sending them, use --store URL instead of --deliver"
                print(hint, file=sys.stderr)  # noqa: T201
            return 1
    if args.json:
        print(json.dumps(summary, indent=2))  # noqa: T201
    else:
        _print_summary(summary, out)
    return 0


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
    for line in s.get("next", []):
        t.add_row("next", line)
    if "delivery" in s:
        t.add_row("deliveries", ", ".join(f"{k} {v}" for k, v in s["delivery"].items()) or "none")
    t.add_row("seconds", str(s["seconds"]))
    console.print(t)
    print_drift(console, s.get("access_model_drift"))


# -- --archive and --store ------------------------------------------------------------------------
#: The checkpoint group under which a replay's engine is stored (the API reads every ``engine/``
#: checkpoint; ``vaultwatch run``'s own keys use its consumer group, so they never collide).
REPLAY_GROUP = "replay"


class _Archiving(Pipeline):
    """Both detection stages (:class:`~vaultwatch.service.cross.Pipeline`, what ``vaultwatch run``
    runs), writing each event to an event archive as well when there is one (after
    de-duplication, in event-time order: exactly the events ``vaultwatch run`` archives)."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        *,
        seed: int,
        detectors: Callable[[], list[Any]],
        archive: EventArchive | None,
    ) -> None:
        super().__init__(config, seed=seed, make=detectors)
        self.archive = archive
        self.span: tuple[float, float] | None = None  # first and last event time

    def process(self, event: AuditEvent) -> list[Alert]:
        if self.archive is not None:
            self.archive.append(event)
        self.span = (self.span[0] if self.span else event.ts, event.ts)
        return super().process(event)


#: Each ``--jobs`` child's archive (one writer per process), opened on its first event.
_CHILD_ARCHIVE: dict[int, EventArchive] = {}


def _run_jobs(
    args: argparse.Namespace,
    files: list[Path],
    config: dict[str, Any],
    detectors: Callable[[], list[Any]],
    quarantine: Quarantine,
) -> tuple[Any, DriftReport, list[bytes] | None, tuple[float, float] | None]:
    """``--jobs N``: :func:`vaultwatch.service.shard.replay_jobs`, with the drift watches' reports
    merged and, with ``--archive``, each child archiving its own shard's events."""
    from ..service.shard import replay_jobs

    def on_event(shard: int) -> Callable[[AuditEvent], None] | None:
        if not args.archive:
            return None
        arch = _CHILD_ARCHIVE[shard] = _open_archive(args.archive)
        return arch.append

    def on_engine(engine: Any, shard: int) -> dict[str, Any]:
        arch = _CHILD_ARCHIVE.pop(shard, None)
        if arch is not None:
            arch.close()
        watches = [d for d in engine.detectors if isinstance(d, DriftWatch)]
        return {"drift": watches[0].report() if watches else None}

    result, shards = replay_jobs(
        files,
        args.jobs,
        config=config,
        make=detectors,
        seed=args.seed,
        prefix=args.prefix,
        quarantine=quarantine,
        on_engine=on_engine,
        on_event=on_event,
        keep_snapshots=bool(args.store),
    )
    reports = [r.extra["drift"] for r in shards if r.extra.get("drift") is not None]
    busy = next((d.busy_events for d in detectors() if isinstance(d, DriftWatch)), 1000)
    snapshots = [r.extra["snapshot"] for r in shards] if args.store else None
    first, last = shards[0].first_ts, shards[0].last_ts
    span = (first, last) if first is not None and last is not None else None
    return result, merge_reports(reports, busy_events=busy), snapshots, span


def _open_archive(path: str) -> EventArchive:
    # A replay archives old logs on purpose: retention must not prune them on the way in.
    return EventArchive(Path(path), retention_days=3650)


def _store(url: str, alerts: list[Alert], snapshots: list[bytes]) -> None:
    """Alerts in their final state, and the engines (one per ``--jobs`` shard) as checkpoints the
    API reads baselines from."""
    from alerts.store import Store

    from ..service.worker import _Checkpoint, checkpoint_key

    with Store(url) as store:
        store.migrate()
        with store.transaction() as tx:
            tx.add_alerts(alerts)
            for shard, snap in enumerate(snapshots):
                blob = msgspec.msgpack.encode(_Checkpoint(offset=0, hour=None, engine=snap))
                tx.save_checkpoint(checkpoint_key(REPLAY_GROUP, "files", shard), blob)


def _next_steps(archive: str | None, store: str | None, engine: Pipeline) -> list[str]:
    """The commands that use what this replay wrote."""
    span = getattr(engine, "span", None)
    when = (
        f"--from {_day(span[0])} --to {_day(span[1] + 86400.0)}"
        if span
        else "--from YYYY-MM-DD --to YYYY-MM-DD"
    )
    out: list[str] = []
    if archive:
        out.append(
            f"vaultwatch report {when} --archive {archive} " + (f"--store {store}" if store else "--no-store")
        )
        out.append(f"vaultwatch exposure --archive {archive} --path PATH")
    if store:
        env = f"VAULTWATCH_STORE__URL={store}"
        if archive:
            env += f" VAULTWATCH_ARCHIVE__ENABLED=true VAULTWATCH_ARCHIVE__PATH={archive}"
        out.append(f"{env} vaultwatch serve")
    return out


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")
