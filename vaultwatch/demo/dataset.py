"""The demo data set: a real OpenBao server, simulated weeks of organisation traffic, an archive and a store.

* :func:`generate_demo_data` — a real OpenBao server, simulated weeks of organisation traffic with
  labelled attacks (:mod:`vaultwatch.demo.traffic`), replayed through :class:`detect.engine.Engine` into
  an archive and a SQLite store, plus an analyst's triage of those alerts (see below);
* :func:`load_demo` / :func:`tune` — the same scenario again, for replaying it through the engine
  with other thresholds (the audit log is read with :func:`vaultwatch.report.loaders.parse_log`);
* :func:`notebook_data` — the analyst notebooks' data set, generated on first use.

The demo's triage is simulated, deterministically from ``seed``: alerts that share an event with
an attack are acknowledged and later resolved; most alerts raised on benign traffic only are
marked ``false_positive``; the rest are left open. Status changes are stamped in event time (hours
after the alert), so time-to-acknowledge and time-to-resolve figures have something to measure.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from alerts.store import Store, to_epoch
from detect.alert import Alert
from detect.engine import Engine
from ingest.event import AuditEvent

from ..report.loaders import parse_log
from ..service.archive import EventArchive
from ..service.replay import run_engine
from .scenarios import replay
from .traffic import BENIGN, SETUP, GeneratedLog, Scenario, Traffic, traffic_server

__all__ = [
    "DemoData",
    "TRIAGE_ACTOR",
    "alert_labels",
    "generate_demo_data",
    "load_demo",
    "NOTEBOOK_DATA_ENV",
    "notebook_data",
    "replay_engine",
    "tune",
]

log = logging.getLogger(__name__)

#: The actor name the demo's simulated triage records in the status history.
TRIAGE_ACTOR = "analyst@demo"
_MANIFEST = "demo.json"


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


def replay_engine(
    events: Sequence[AuditEvent], config: dict[str, Any] | None = None, *, seed: int = 0
) -> list[Alert]:
    """Replay ``events`` through a fresh :class:`detect.engine.Engine` with the one replay loop.

    :func:`vaultwatch.service.replay.run_engine` gives the production replay's flush semantics.
    Returns each alert once, in its final state, ordered by first_seen.
    """
    run = run_engine(events, Engine(config, seed=seed))
    return sorted(run.alerts.values(), key=lambda a: (a.first_seen, a.id))


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
