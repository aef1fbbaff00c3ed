"""Fixtures for the web UI: data from a real OpenBao run, the app, and a live server on loopback.

``ui_seed`` (once per session) starts a real OpenBao dev server, sets up the demo org and drives
its traffic and attacks, then runs the detection engine over the audit log the server wrote:
the alerts, the archived events and the engine's baselines are what the pages show.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from alerts.store import Store
from detect.alert import Alert
from detect.engine import Engine
from ingest.dedup import Deduplicator
from ingest.errors import ParseError
from ingest.event import AuditEvent
from ingest.parse import Parser
from vaultwatch.demo.servers import OpenBaoServer
from vaultwatch.service.archive import EventArchive
from vaultwatch.service.worker import checkpoint_key

PASSWORDS = {"ana": "ana-ui-test-pw-1", "vic": "vic-ui-test-pw-1", "adm": "adm-ui-test-pw-1"}
ROLES = {"ana": "analyst", "vic": "viewer", "adm": "admin"}


@dataclass
class Seed:
    """What one real OpenBao run produced, after detection."""

    audit_log: Path
    events: list[AuditEvent]
    alerts: list[Alert]
    engine: Engine
    archive_root: Path


def _detect(audit_log: Path) -> tuple[list[AuditEvent], list[Alert], Engine]:
    engine = Engine()
    parser, dedup = Parser(), Deduplicator()
    events: list[AuditEvent] = []
    latest: dict[str, Alert] = {}
    with open(audit_log, "rb") as f:
        for line in f:
            try:
                ev = parser.parse(line)
            except ParseError:
                continue
            if dedup.is_duplicate(ev):
                continue
            events.append(ev)
            for alert in engine.process(ev):
                latest[alert.id] = alert
    for alert in engine.flush(max(e.ts for e in events)):
        latest[alert.id] = alert
    return events, sorted(latest.values(), key=lambda a: a.first_seen), engine


@pytest.fixture(scope="session")
def ui_seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    from vaultwatch.cli.demo import drive_traffic, setup_org

    root = tmp_path_factory.mktemp("ui-seed")
    srv = OpenBaoServer(root / "openbao").start()
    try:
        org = setup_org(srv.client())
        drive_traffic(srv, org, rounds=6)
    finally:
        srv.stop()
    audit_log = Path(srv.audit_log)
    try:
        events, alerts, engine = _detect(audit_log)
    finally:
        srv.cleanup()
    assert alerts, "the demo traffic's attacks raised no alert"
    archive_root = root / "archive"
    with EventArchive(archive_root, writer_id="uitest") as archive:
        archive.extend(events)
    return Seed(audit_log=audit_log, events=events, alerts=alerts, engine=engine, archive_root=archive_root)


@pytest.fixture(scope="session")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vaultwatch.api.auth import hash_password

    path = tmp_path_factory.mktemp("ui-users") / "users.toml"
    lines = []
    for name, pw in PASSWORDS.items():
        lines += [
            "[[users]]",
            f'name = "{name}"',
            f'password_hash = "{hash_password(pw)}"',
            f'role = "{ROLES[name]}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def store(tmp_path: Path, ui_seed: Seed) -> Iterator[Store]:
    st = Store(f"sqlite:///{tmp_path / 'alerts.db'}")
    st.migrate()
    st.add_alerts(ui_seed.alerts)
    # The baselines reach the UI the way the streaming workers leave them: an engine checkpoint.
    blob = msgspec.msgpack.encode(
        {"offset": len(ui_seed.events), "hour": None, "engine": ui_seed.engine.snapshot()}
    )
    st.save_checkpoint(checkpoint_key("vaultwatch", "vault-audit", 0), blob)
    yield st
    st.close()


@pytest.fixture
def archive(ui_seed: Seed) -> EventArchive:
    return EventArchive(ui_seed.archive_root, writer_id="uireader")


@pytest.fixture
def make_app(users_file: Path, store: Store, archive: EventArchive) -> Callable[..., Any]:
    from vaultwatch.api.app import create_app
    from vaultwatch.api.auth import AuthConfig
    from vaultwatch.settings import Settings

    def make(**auth_overrides: Any) -> Any:
        overrides: dict[str, Any] = {"users_file": users_file, "cookie_secure": False, "login_burst": 50}
        overrides.update(auth_overrides)
        app = create_app(Settings(), auth=AuthConfig(**overrides), store=store, archive=archive)
        return app

    return make


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 from a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", ws="none", lifespan="on", timeout_graceful_shutdown=2, access_log=False
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()


@pytest.fixture
def live_server(make_app: Callable[..., Any]) -> Iterator[LiveServer]:
    srv = LiveServer(make_app()).start()
    yield srv
    srv.stop()
