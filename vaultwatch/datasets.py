"""Data loading for reports, analyst notebooks and tests: the archive, the alert store, a demo set.

Everything here returns pandas DataFrames (or plain objects) so notebooks and the report read
the same data the same way:

* :func:`load_events` — archived audit events for a time range (:class:`~vaultwatch.archive.EventArchive`);
* :func:`load_requests` — the same, one row per request (the response entry, which has the outcome);
* :func:`load_alerts`, :func:`load_status_history`, :func:`load_verdicts` — the alert store's tables;
* :func:`generate_demo_data` — a real OpenBao server, simulated weeks of organisation traffic with
  labelled attacks (:mod:`vaultwatch.traffic`), replayed through :class:`detect.engine.Engine` into
  an archive and a SQLite store, plus an analyst's triage of those alerts (see below);
* :func:`load_demo` / :func:`parse_log` / :func:`tune` — the same scenario again, for replaying it
  through the engine with other thresholds.

The demo's triage is simulated, deterministically from ``seed``: alerts that share an event with
an attack are acknowledged and later resolved; most alerts raised on benign traffic only are
marked ``false_positive``; the rest are left open. Status changes are stamped in event time (hours
after the alert), so time-to-acknowledge and time-to-resolve figures have something to measure.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from alerts.store import Store, to_epoch
from detect.alert import Alert
from ingest.event import AuditEvent

from .archive import EventArchive
from .traffic import BENIGN, SETUP, GeneratedLog, Scenario

__all__ = [
    "DemoData",
    "TRIAGE_ACTOR",
    "alert_labels",
    "generate_demo_data",
    "load_alerts",
    "load_demo",
    "load_events",
    "load_requests",
    "load_status_history",
    "load_verdicts",
    "NOTEBOOK_DATA_ENV",
    "notebook_data",
    "one_per_request",
    "open_archive",
    "parse_log",
    "replay_engine",
    "tune",
]

log = logging.getLogger(__name__)

#: The actor name the demo's simulated triage records in the status history.
TRIAGE_ACTOR = "analyst@demo"
_MANIFEST = "demo.json"
_ALERT_COLUMNS = (
    "id",
    "detector",
    "severity",
    "severity_rank",
    "score",
    "identity_key",
    "dedup_key",
    "status",
    "title",
    "first_seen",
    "last_seen",
    "count",
    "created_at",
    "updated_at",
)


def _utc(t: datetime | str | None) -> datetime | None:
    if t is None:
        return None
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)


# -- the archive --------------------------------------------------------------------------------
def load_events(
    archive_path: str | Path,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """Archived audit entries (request and response) with ``start <= time < end``, oldest first.

    ``start``/``end`` are datetimes or ISO 8601 strings (naive means UTC); ``filters`` are passed
    to :meth:`EventArchive.query` (``identity=``, ``path_prefix=``, ``outcome=``...).
    """
    with open_archive(archive_path) as archive:
        return archive.query(start=_utc(start), end=_utc(end), **filters)


def open_archive(archive_path: str | Path) -> EventArchive:
    """The archive at ``archive_path`` for read-only use (e.g. :func:`vaultwatch.exposure.exposure_for_path`).

    Use it as a context manager; nothing is written and retention never prunes through it.
    """
    root = Path(archive_path)
    if not root.is_dir():
        raise FileNotFoundError(f"no event archive at {root}")
    return EventArchive(root, retention_days=3650)


def one_per_request(df: pd.DataFrame) -> pd.DataFrame:
    """One row per request: its response entry (which carries the outcome), else the request entry."""
    if df.empty:
        return df.reset_index(drop=True)
    resp = df["type"].astype(str).str.endswith("response")
    ordered = pd.concat([df[resp], df[~resp]])
    with_id = ordered[ordered["request_id"].notna()].drop_duplicates("request_id")
    out = pd.concat([with_id, ordered[ordered["request_id"].isna()]])
    return out.sort_values(["time", "request_id"], kind="stable").reset_index(drop=True)


def load_requests(
    archive_path: str | Path,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """:func:`load_events` reduced to one row per request (see :func:`one_per_request`)."""
    return one_per_request(load_events(archive_path, start, end, **filters))


# -- the alert store ----------------------------------------------------------------------------
def _read_sql(store_url: str, query: Any) -> pd.DataFrame:
    import sqlalchemy as sa

    from alerts.errors import StoreError

    if store_url.startswith("sqlite:///") and not store_url.endswith(":memory:"):
        # Reading must not leave an empty database file behind a typo.
        db = Path(store_url.removeprefix("sqlite:///"))
        if not db.is_file():
            raise StoreError(f"no alert store at {db}")
    try:
        with Store(store_url) as store, store.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    except sa.exc.SQLAlchemyError as exc:
        # The driver's message names the problem (missing table...), never the URL's password.
        reason = str(getattr(exc, "orig", None) or type(exc).__name__).splitlines()[0]
        raise StoreError(f"cannot read the alert store: {reason}") from exc


def load_alerts(store_url: str) -> pd.DataFrame:
    """Every stored alert: one row each, times as UTC timestamps, plus ``alert`` (the full JSON dict).

    Columns: id, detector, severity, severity_rank, score, identity_key, dedup_key, status, title,
    first_seen, last_seen, count, created_at, updated_at, alert.
    """
    import sqlalchemy as sa

    from alerts import schema as t

    cols = [t.alerts.c[c] for c in _ALERT_COLUMNS] + [t.alerts.c.alert_json]
    df = _read_sql(store_url, sa.select(*cols).order_by(t.alerts.c.first_seen, t.alerts.c.id))
    for c in ("first_seen", "last_seen", "created_at", "updated_at"):
        df[c] = pd.to_datetime(df[c], unit="s", utc=True)
    df["alert"] = [json.loads(s) for s in df.pop("alert_json")]
    return df


def load_status_history(store_url: str) -> pd.DataFrame:
    """Every status change: alert_id, from_status, to_status, actor, comment, at (UTC), oldest first."""
    import sqlalchemy as sa

    from alerts import schema as t

    h = t.status_history
    df = _read_sql(store_url, sa.select(h).order_by(h.c.at, h.c.id))
    df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
    return df


def load_verdicts(store_url: str) -> pd.DataFrame:
    """Every analyst verdict: alert_id, verdict, actor, comment, at (UTC), oldest first."""
    import sqlalchemy as sa

    from alerts import schema as t

    v = t.verdicts
    df = _read_sql(store_url, sa.select(v).order_by(v.c.at, v.c.id))
    df["at"] = pd.to_datetime(df["at"], unit="s", utc=True)
    return df


# -- the demo data set --------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoData:
    """Where :func:`generate_demo_data` put things, and the simulated period it covers."""

    workdir: Path
    audit_log: Path
    archive: Path
    store_url: str
    start: datetime
    end: datetime
    days: int
    warmup_days: int
    events: int
    alerts: int
    #: Secret values the attacks wrote (for leak tests); kept in memory only, never on disk.
    canaries: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (without the canaries)."""
        d = asdict(self)
        d.pop("canaries")
        for k in ("workdir", "audit_log", "archive"):
            d[k] = str(d[k])
        d["start"] = self.start.isoformat()
        d["end"] = self.end.isoformat()
        return d


def parse_log(path: str | Path) -> list[AuditEvent]:
    """Parse an audit log file (one JSON entry a line); bad lines are skipped and counted in the log."""
    from ingest.errors import ParseError
    from ingest.parse import Parser

    parser = Parser()
    events: list[AuditEvent] = []
    bad = 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                events.append(parser.parse(line))
            except ParseError:
                bad += 1
    if bad:
        log.warning("%s: %d lines could not be parsed", path, bad)
    return events


def replay_engine(
    events: Sequence[AuditEvent], config: dict[str, Any] | None = None, *, seed: int = 0
) -> list[Alert]:
    """Replay ``events`` through a fresh :class:`detect.engine.Engine`, flushing every event-time hour.

    Returns each alert once, in its final state, ordered by first_seen.
    """
    from detect.engine import Engine

    engine = Engine(config, seed=seed)
    latest: dict[str, Alert] = {}
    hour = 3600.0
    next_flush: float | None = None
    last = 0.0
    for ev in events:
        if next_flush is None:
            next_flush = (ev.ts // hour + 1) * hour
        while ev.ts >= next_flush:
            for a in engine.flush(next_flush):
                latest[a.id] = a
            next_flush += hour
        for a in engine.process(ev):
            latest[a.id] = a
        last = ev.ts
    for a in engine.flush(last + 2 * 86400):
        latest[a.id] = a
    return sorted(latest.values(), key=lambda a: (a.first_seen, a.id))


def alert_labels(alerts: Iterable[Alert], labels: dict[str, str]) -> dict[str, str]:
    """Alert id -> the attack kind it shares an event with, or ``benign`` (``setup`` if only setup)."""
    out: dict[str, str] = {}
    for a in alerts:
        kinds = {labels.get(rid, BENIGN) for rid in a.event_ids}
        attacks = sorted(kinds - {BENIGN, SETUP})
        out[a.id] = attacks[0] if attacks else (SETUP if kinds == {SETUP} else BENIGN)
    return out


def _triage(store: Store, alerts: Sequence[Alert], labels: dict[str, str], seed: int) -> None:
    """The simulated analyst (see the module docstring); stamps are event time."""
    rng = random.Random(seed)
    for a in alerts:
        first = to_epoch(a.first_seen)
        label = labels[a.id]
        roll = rng.random()
        if label not in (BENIGN, SETUP):
            if roll < 0.85:
                ack = first + rng.uniform(0.1, 6.0) * 3600
                store.transition(a.id, "acknowledged", TRIAGE_ACTOR, "investigating", now=ack)
                if roll < 0.7:
                    done = ack + rng.uniform(1.0, 48.0) * 3600
                    store.transition(a.id, "resolved", TRIAGE_ACTOR, "contained", now=done)
                    store.record_verdict(a.id, "true_positive", TRIAGE_ACTOR, now=done)
        elif roll < 0.75:
            seen = first + rng.uniform(0.5, 24.0) * 3600
            store.transition(a.id, "false_positive", TRIAGE_ACTOR, "expected activity", now=seen)
            store.record_verdict(a.id, "false_positive", TRIAGE_ACTOR, now=seen)


def generate_demo_data(
    workdir: str | Path,
    *,
    days: int = 14,
    warmup_days: int = 7,
    seed: int = 7,
    attack_spacing: float = 0.35,
    config: dict[str, Any] | None = None,
) -> DemoData:
    """Generate a demo data set in ``workdir`` from a real OpenBao server; return where it is.

    Starts an OpenBao dev server (``workdir/bao``), drives ``days`` simulated days of the
    organisation's traffic with every attack kind after ``warmup_days`` (packed by
    ``attack_spacing``, see :meth:`Traffic.plan_attacks`), stops the server, and writes:
    ``audit.log`` (the server's own log on the simulated clock), ``archive/`` (the event
    archive), ``vaultwatch.db`` (the alert store with the engine's alerts and a simulated
    triage), ``labels.json`` (ground truth) and ``demo.json`` (this summary).
    """
    from .traffic import Traffic, traffic_server

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    audit = work / "audit.log"
    server, url = traffic_server(work / "bao")
    with server as srv, Traffic(url, srv.root_token, srv.audit_log, seed=seed) as traffic:
        traffic.setup()
        traffic.plan_benign(days)
        traffic.plan_attacks(warmup_days, spacing=attack_spacing)
        traffic.run()
        generated = traffic.rewrite(audit)
    events = parse_log(audit)
    arch_dir = work / "archive"
    if arch_dir.exists():
        import shutil

        shutil.rmtree(arch_dir)
    with EventArchive(arch_dir, retention_days=3650, writer_id="demo") as archive:
        archive.extend(events)
    alerts = replay_engine(events, config, seed=seed)
    labels = alert_labels(alerts, generated.labels)
    db = work / "vaultwatch.db"
    db.unlink(missing_ok=True)
    store_url = f"sqlite:///{db}"
    with Store(store_url) as store:
        store.migrate()
        for a in alerts:
            store.add_alerts([a], now=to_epoch(a.first_seen))
        _triage(store, alerts, labels, seed)
    _write_labels(work / "labels.json", generated, labels)
    start = generated.start
    data = DemoData(
        workdir=work,
        audit_log=audit,
        archive=arch_dir,
        store_url=store_url,
        start=start,
        end=datetime.fromtimestamp(start.timestamp() + days * 86400, UTC),
        days=days,
        warmup_days=warmup_days,
        events=len(events),
        alerts=len(alerts),
        canaries=tuple(generated.canaries),
    )
    (work / _MANIFEST).write_text(json.dumps(data.to_dict(), indent=2))
    log.info("demo data: %d events, %d alerts in %s", len(events), len(alerts), work)
    return data


def _write_labels(path: Path, generated: GeneratedLog, alert_kinds: dict[str, str]) -> None:
    doc = {
        "labels": generated.labels,
        "entry_labels": generated.entry_labels,
        "scenarios": {k: asdict(s) for k, s in generated.scenarios.items()},
        "canaries_count": len(generated.canaries),
        "requests": generated.requests,
        "entries": generated.entries,
        "start": generated.start.isoformat(),
        "days": generated.days,
        "warmup_days": generated.warmup_days,
        "alert_labels": alert_kinds,
    }
    path.write_text(json.dumps(doc))


def load_demo(workdir: str | Path) -> tuple[DemoData, GeneratedLog]:
    """Read back what :func:`generate_demo_data` wrote: the summary and the ground truth.

    The returned :class:`GeneratedLog` has no canary values (they are not kept on disk).
    """
    work = Path(workdir)
    try:
        meta = json.loads((work / _MANIFEST).read_text())
        doc = json.loads((work / "labels.json").read_text())
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no demo data in {work}: run generate_demo_data first") from exc
    data = DemoData(
        workdir=Path(meta["workdir"]),
        audit_log=Path(meta["audit_log"]),
        archive=Path(meta["archive"]),
        store_url=meta["store_url"],
        start=datetime.fromisoformat(meta["start"]),
        end=datetime.fromisoformat(meta["end"]),
        days=meta["days"],
        warmup_days=meta["warmup_days"],
        events=meta["events"],
        alerts=meta["alerts"],
    )
    scenarios = {
        k: Scenario(
            s["kind"],
            s["title"],
            s["actor"],
            s["start_ts"],
            s["single_event"],
            s["trigger"],
            tuple(s["request_ids"]),
        )
        for k, s in doc["scenarios"].items()
    }
    generated = GeneratedLog(
        path=data.audit_log,
        labels=doc["labels"],
        scenarios=scenarios,
        canaries=(),
        requests=doc["requests"],
        entries=doc["entries"],
        start=datetime.fromisoformat(doc["start"]),
        days=doc["days"],
        warmup_days=doc["warmup_days"],
        entry_labels=doc["entry_labels"],
    )
    return data, generated


#: Environment variable naming the notebooks' data directory (see :func:`notebook_data`).
NOTEBOOK_DATA_ENV = "VAULTWATCH_NOTEBOOK_DATA"


def notebook_data(env: dict[str, str] | None = None) -> DemoData:
    """The analyst notebooks' data set: ``$VAULTWATCH_NOTEBOOK_DATA`` (default ``var/notebook-data``).

    If the directory holds no demo data yet, it is generated there first with
    :func:`generate_demo_data` (a real OpenBao server; about half a minute).
    """
    import os

    where = Path((os.environ if env is None else env).get(NOTEBOOK_DATA_ENV) or "var/notebook-data")
    if not (where / _MANIFEST).is_file():
        log.info("no demo data in %s: generating it", where)
        return generate_demo_data(where)
    return load_demo(where)[0]


def tune(
    events: Sequence[AuditEvent],
    generated: GeneratedLog,
    configs: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
) -> pd.DataFrame:
    """Replay the scenario once per named engine configuration and score each run.

    Returns one row per configuration: name, recall (share of attack kinds caught by a medium+
    alert), caught, scenarios, alerts, false_alerts (medium+ alerts on benign events only),
    false_per_10k (per 10k benign audit entries) and missed (comma-separated kinds).
    """
    from detect.engine import Engine

    from .scenarios import replay

    benign = sum(label == BENIGN for label in generated.entry_labels)
    rows: list[dict[str, Any]] = []
    for name, cfg in configs.items():
        engine = Engine(cfg, seed=seed)
        ev, _ = replay(events, generated, benign, engine.process, engine.flush, name=name)
        rows.append(
            {
                "name": name,
                "recall": ev.recall,
                "caught": sum(o.caught for o in ev.outcomes.values()),
                "scenarios": len(ev.outcomes),
                "alerts": ev.alerts,
                "false_alerts": ev.false_alerts,
                "false_per_10k": ev.false_per_10k,
                "missed": ", ".join(ev.missed),
            }
        )
    return pd.DataFrame(rows)
