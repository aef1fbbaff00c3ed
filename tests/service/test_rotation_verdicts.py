"""Analysts' verdicts reach the KV-metadata rotation scan, and survive a restart of the service.

The scan runs as the worker's periodic task (:func:`vaultwatch.service.wiring.periodic_tasks`)
with its own engine, which the worker's verdict flow does not feed; these tests mark its
``rotation-overdue`` alert a false positive through the store, as the API does, and check the
scan stops raising it (and, for comparison, that without a verdict it keeps it open).
The KV v2 metadata comes from a stand-in for the Vault client: the scan under test is vaultwatch's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from alerts.store import Store
from vaultwatch.service.wiring import ROTATION_CHECKPOINT, periodic_tasks
from vaultwatch.service.worker import Worker, WorkerConfig
from vaultwatch.settings import DetectSettings, Settings

DAY = 86400.0
CREATED = 1_780_000_000.0  # when the secret's current version was written
POLICY = """
[[rotation]]
name = "signing-keys"
paths = ["kv/app/signing*"]
every = "1d"
"""


class _KV:
    """KV v2 metadata of one secret, ``kv/app/signing-key``, version 1 written at ``CREATED``."""

    def list_secrets(self, path: str, mount_point: str) -> dict[str, Any]:
        assert (mount_point, path) == ("kv", "app/")
        return {"data": {"keys": ["signing-key"]}}

    def read_secret_metadata(self, path: str, mount_point: str) -> dict[str, Any]:
        assert (mount_point, path) == ("kv", "app/signing-key")
        created = datetime.fromtimestamp(CREATED, UTC).isoformat().replace("+00:00", "Z")
        return {"data": {"current_version": 1, "versions": {"1": {"created_time": created}}}}


class _Vault:
    def __init__(self) -> None:
        self.hvac = SimpleNamespace(secrets=SimpleNamespace(kv=SimpleNamespace(v2=_KV())))

    def call(self, fn: Any, **kwargs: Any) -> Any:
        return fn(**kwargs)


def _worker(tmp_path: Path, store: Store, now: list[float]) -> Worker:
    (tmp_path / "policy.toml").write_text(POLICY)
    settings = Settings(detect=DetectSettings(policy_file=tmp_path / "policy.toml"))
    worker = Worker(WorkerConfig(), source_factory=lambda **k: None, store=store, clock=lambda: now[0])
    worker.tasks = periodic_tasks(settings, worker, vault=_Vault())
    assert [t.name for t in worker.tasks] == ["rotation-metadata"]
    return worker


def _rotation_alerts(store: Store) -> list[Any]:
    return [a for a in store.list_alerts().items if a.detector == "rotation-overdue"]


def _restart_and_scan(tmp_path: Path, store: Store, now: list[float]) -> None:
    # A new worker (the service restarted) scans once, then again at its next interval.
    worker = _worker(tmp_path, store, now)
    worker.process_batch([])
    now[0] += 601
    worker.process_batch([])
    assert worker.tasks[0].runs == 2 and worker.tasks[0].failures == 0


def test_a_false_positive_verdict_suppresses_the_rotation_alert(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'vw.db'}")
    store.migrate()
    now = [CREATED + 2 * DAY]
    _worker(tmp_path, store, now).process_batch([])
    (alert,) = _rotation_alerts(store)
    assert alert.paths == ("kv/app/signing-key",) and alert.count == 1
    assert store.load_checkpoint(ROTATION_CHECKPOINT) is not None
    # The analyst marks it a false positive (the API records the status and the verdict).
    store.transition(alert.id, "false_positive", "ana", "rotated by a job outside Vault's view")
    store.record_verdict(alert.id, "false_positive", "ana", "rotated by a job outside Vault's view")
    now[0] += 60
    _restart_and_scan(tmp_path, store, now)
    (after,) = _rotation_alerts(store)
    assert after.id == alert.id and after.count == 1 and after.status == "false_positive"
    store.close()


def test_without_a_verdict_the_restarted_scan_keeps_raising_it(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'vw.db'}")
    store.migrate()
    now = [CREATED + 2 * DAY]
    _worker(tmp_path, store, now).process_batch([])
    (alert,) = _rotation_alerts(store)
    now[0] += 60
    _restart_and_scan(tmp_path, store, now)
    (after,) = _rotation_alerts(store)
    assert after.id == alert.id and after.count > alert.count
    store.close()
