"""Fixtures for the API tests: a store seeded from a real OpenBao run, keys, users and the app.

``seed`` (once per session) starts a real OpenBao dev server, drives the demo organisation's
traffic and attacks through hvac, stops it and runs the detection engine over the audit log it
wrote: its alerts, events (in a real Parquet archive) and engine snapshot feed every API test.
"""

from __future__ import annotations

import json
import secrets
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

with warnings.catch_warnings():
    # starlette's TestClient warns at import when httpx (not httpx2) is installed.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from alerts.store import Store
from detect.alert import Alert
from vaultwatch.api import AuthConfig, create_app
from vaultwatch.api.auth import generate_pem, hash_api_key, hash_password
from vaultwatch.settings import ArchiveConfig, Settings, StoreConfig

__all__ = ["ROLES", "AppFactory", "Creds", "Seed", "TestClient", "key_headers", "seed_store"]

ROLES = ("viewer", "analyst", "admin")


@dataclass
class Seed:
    alerts: list[Alert]
    events: int
    archive_root: Path
    snapshot: bytes
    root_token: str


@dataclass
class Creds:
    """Secrets of the test deployment, all random (they double as canaries)."""

    dir: Path
    key_file: Path
    keys_file: Path
    users_file: Path
    api_keys: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)

    def auth_config(self, **kw: Any) -> AuthConfig:
        base: dict[str, Any] = {
            "jwt_key_file": self.key_file,
            "api_keys_file": self.keys_file,
            "users_file": self.users_file,
            "cookie_secure": False,
            "rate_burst": 10_000,
            "rate_per_second": 10_000.0,
            "login_burst": 1000,
            "login_rate_per_second": 1000.0,
            "auth_failure_burst": 1000,
            "auth_failure_per_second": 1000.0,
        }
        base.update(kw)
        return AuthConfig(**base)

    def canaries(self) -> list[str]:
        pem = self.key_file.read_text()
        body = "".join(pem.splitlines()[1:-1])
        return [*(k.partition(".")[2] for k in self.api_keys.values()), *self.passwords.values(), body[10:40]]


class _Checkpoint(msgspec.Struct):
    offset: int
    hour: int | None
    engine: bytes


@pytest.fixture(scope="session")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    import hvac.exceptions

    from detect.engine import Engine
    from ingest.dedup import Deduplicator
    from ingest.errors import ParseError
    from ingest.parse import Parser
    from vaultwatch.cli.demo import drive_traffic, setup_org
    from vaultwatch.demo.servers import OpenBaoServer
    from vaultwatch.service.archive import EventArchive

    work = tmp_path_factory.mktemp("api-seed")
    for attempt in range(3):
        srv = OpenBaoServer(work / f"bao{attempt}").start()
        try:
            org = setup_org(srv.client())
            drive_traffic(srv, org, 6)
            break
        except hvac.exceptions.InvalidRequest as exc:
            # A fresh KV v2 mount answers "upgrading" for a moment; start over on a new server.
            if "Upgrading" not in str(exc) or attempt == 2:
                raise
        finally:
            srv.stop()
        srv.cleanup()
    root_token = str(getattr(srv, "root_token", "") or "")
    engine, parser, dedup = Engine(), Parser(), Deduplicator()
    latest: dict[str, Alert] = {}
    archive = EventArchive(work / "archive", retention_days=3650)
    count, last = 0, 0.0
    with open(srv.audit_log, "rb") as fh:
        for line in fh:
            try:
                ev = parser.parse(line)
            except ParseError:
                continue
            if dedup.is_duplicate(ev):
                continue
            count += 1
            last = max(last, ev.ts)
            archive.append(ev)
            for alert in engine.process(ev):
                latest[alert.id] = alert
    for alert in engine.flush(last):
        latest[alert.id] = alert
    archive.close()
    yield Seed(
        alerts=sorted(latest.values(), key=lambda a: a.id),
        events=count,
        archive_root=work / "archive",
        snapshot=engine.snapshot(),
        root_token=root_token,
    )
    srv.cleanup()


@pytest.fixture(scope="session")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Creds:
    d = tmp_path_factory.mktemp("api-secrets")
    c = Creds(dir=d, key_file=d / "jwt.pem", keys_file=d / "api_keys.json", users_file=d / "users.toml")
    c.key_file.write_bytes(generate_pem("ed25519"))
    entries = []
    users = []
    for role in ROLES:
        c.api_keys[role] = f"{role}-key.{secrets.token_urlsafe(24)}"
        entries.append({"id": f"{role}-key", "hash": hash_api_key(c.api_keys[role]), "role": role})
        c.passwords[role] = secrets.token_urlsafe(18)
        users.append(
            f'[[users]]\nname = "{role}-user"\npassword_hash = "{hash_password(c.passwords[role])}"\n'
            f'role = "{role}"\n'
        )
    c.keys_file.write_text(json.dumps({"keys": entries}))
    c.users_file.write_text("\n".join(users))
    return c


def seed_store(store: Store, seed: Seed) -> None:
    """The seed's alerts and engine checkpoint, as a worker would have written them."""
    store.migrate()
    with store.transaction() as tx:
        tx.add_alerts(seed.alerts)
        tx.save_checkpoint(
            "engine/vaultwatch/vault-audit/0",
            msgspec.msgpack.encode(_Checkpoint(len(seed.alerts), None, seed.snapshot)),
        )


AppFactory = Callable[..., Any]


def _empty(store: Store) -> None:
    """Start a shared (PostgreSQL) database from no rows, so tests do not see each other's."""
    import sqlalchemy as sa

    from alerts import schema
    from vaultwatch.api import audit

    store.migrate()
    names = set(sa.inspect(store.engine).get_table_names())
    with store.engine.begin() as conn:
        for meta in (audit.metadata, schema.metadata):
            for table in reversed(meta.sorted_tables):
                if table.name in names:
                    conn.execute(table.delete())


@pytest.fixture
def make_app(tmp_path: Path, seed: Seed, creds: Creds) -> Iterator[AppFactory]:
    """``make_app(url=None, **auth_overrides) -> (app, store)``; stores are closed afterwards."""
    from vaultwatch.service.archive import EventArchive

    stores: list[Store] = []

    def make(url: str | None = None, *, seeded: bool = True, **auth: Any) -> tuple[Any, Store]:
        store = Store(url or f"sqlite:///{tmp_path}/alerts-{len(stores)}.db")
        stores.append(store)
        if url is not None:
            _empty(store)
        if seeded:
            seed_store(store, seed)
        else:
            store.migrate()
        archive = EventArchive(seed.archive_root, retention_days=3650)
        settings = Settings(
            store=StoreConfig(url="sqlite:///unused.db"), archive=ArchiveConfig(enabled=False)
        )
        app = create_app(settings, auth=creds.auth_config(**auth), store=store, archive=archive)
        return app, store

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def client(make_app: AppFactory) -> Iterator[TestClient]:
    app, _ = make_app()
    with TestClient(app) as c:
        yield c


def key_headers(creds: Creds, role: str) -> dict[str, str]:
    return {"X-API-Key": creds.api_keys[role]}
