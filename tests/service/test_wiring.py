"""The service's periodic tasks: the KV-metadata rotation scan through a real OpenBao server, with
the last write taken from the event archive, stored through the worker's normal write path."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from alerts.store import Store
from ingest import Deduplicator, Parser
from vaultwatch.service.archive import EventArchive
from vaultwatch.service.metrics import Metrics
from vaultwatch.service.wiring import periodic_tasks, vault_client
from vaultwatch.service.worker import PeriodicTask, Worker, WorkerConfig
from vaultwatch.settings import load_settings

pytestmark = pytest.mark.integration


def test_rotation_scan_task_stores_alerts_naming_metadata_and_stream(openbao: Any, tmp_path: Path) -> None:
    root = openbao.client()
    root.sys.enable_secrets_engine("kv", path="logos", options={"version": "2"})
    root.secrets.kv.v2.create_or_update_secret(
        path="pxl-core/runtime/jwt-key", secret={"k": "1"}, mount_point="logos"
    )
    archive = EventArchive(tmp_path / "archive")
    parser, dedup = Parser(), Deduplicator()
    for line in openbao.audit_log.read_bytes().splitlines():
        ev = parser.parse(line)
        if not dedup.is_duplicate(ev):
            archive.append(ev)
    archive.flush()
    cfg = tmp_path / "vw.toml"
    (tmp_path / "tok").write_text(openbao.root_token)
    cfg.write_text(f"""
[store]
url = "sqlite:///{tmp_path / "vw.db"}"
[archive]
path = "{tmp_path / "archive"}"
[vault]
addr = "{openbao.addr}"
[vault.auth]
method = "token_file"
token_file = "{tmp_path / "tok"}"
""")
    settings = load_settings(cfg)
    store = Store(settings.store.url)
    store.migrate()
    later = time.time() + 2 * 86400
    worker = Worker(
        WorkerConfig(), source_factory=lambda **k: None, store=store, archive=archive, clock=lambda: later
    )
    metrics = Metrics()
    vault = vault_client(settings)
    try:
        worker.tasks = periodic_tasks(settings, worker, metrics=metrics, vault=vault)
        assert [t.name for t in worker.tasks] == ["archive-retention", "rotation-metadata"]
        worker.process_batch([])
        rot = [a for a in store.list_alerts().items if a.detector == "rotation-overdue"]
        assert len(rot) == 1 and rot[0].paths == ("logos/pxl-core/runtime/jwt-key",)
        reasons = {r.feature: r for r in rot[0].explanation}
        assert reasons["metadata age"].observed.startswith("2d")
        assert reasons["last write in the audit stream"].observed != "none seen"
        assert b'vaultwatch_secret_age_seconds{path="logos/pxl-core/runtime/jwt-key"' in metrics.render()
        # Not again on the next batch: tasks run at their interval, alerts once per deadline.
        worker.process_batch([])
        assert all(t.runs == 1 for t in worker.tasks)
    finally:
        vault.close()
        archive.close()
        store.close()


def test_a_failing_task_never_stops_the_worker(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'w.db'}")
    store.migrate()
    now = [1000.0]

    def boom(_: float) -> None:
        raise RuntimeError("task failure")

    worker = Worker(
        WorkerConfig(),
        source_factory=lambda **k: None,
        store=store,
        clock=lambda: now[0],
        tasks=[PeriodicTask("boom", 60.0, boom)],
    )
    worker.process_batch([])
    now[0] += 61
    worker.process_batch([])
    assert worker.tasks[0].failures == 2
    store.close()


def test_scheduled_daily_report_is_rendered_once(openbao: Any, tmp_path: Path) -> None:
    import msgspec

    from vaultwatch.cli.demo import drive_traffic, setup_org

    drive_traffic(openbao, setup_org(openbao.client()), 3)
    now = time.time()
    yesterday = (now // 86400 - 1) * 86400 + 10 * 3600  # 10:00 UTC yesterday
    archive = EventArchive(tmp_path / "var" / "archive")
    parser, dedup = Parser(), Deduplicator()
    events = [
        e
        for e in (parser.parse(line) for line in openbao.audit_log.read_bytes().splitlines())
        if not dedup.is_duplicate(e)
    ]
    shift = yesterday - events[0].ts
    from datetime import UTC, datetime

    for ev in events:
        ts = ev.ts + shift
        archive.append(msgspec.structs.replace(ev, ts=ts, time=datetime.fromtimestamp(ts, UTC)))
    archive.flush()
    cfg = tmp_path / "vw.toml"
    cfg.write_text(f"""
[store]
url = "sqlite:///{tmp_path / "var" / "vw.db"}"
[archive]
path = "{tmp_path / "var" / "archive"}"
[reports]
periods = ["daily"]
""")
    settings = load_settings(cfg)
    store = Store(settings.store.url)
    store.migrate()
    worker = Worker(
        WorkerConfig(), source_factory=lambda **k: None, store=store, archive=archive, clock=lambda: now
    )
    try:
        (task,) = [t for t in periodic_tasks(settings, worker) if t.name == "report-daily"]
        task.fn(now)
        day = datetime.fromtimestamp(yesterday, UTC).date().isoformat()
        folder = tmp_path / "var" / "reports" / f"daily-{day}"
        assert {p.name for p in folder.iterdir()} >= {"report.html", "report.pdf", "report.json"}
        data = json.loads((folder / "report.json").read_text())
        assert 0 < data["summary"]["events"] <= len(events)  # the day's events, from the archive
        stamp = (folder / "report.json").stat().st_mtime_ns
        task.fn(now + 60)  # already there: not rendered again
        assert (folder / "report.json").stat().st_mtime_ns == stamp
    finally:
        archive.close()
        store.close()
