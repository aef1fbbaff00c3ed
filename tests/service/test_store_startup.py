"""A worker started while PostgreSQL is still coming up waits for it instead of exiting."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import closing, suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from alerts.errors import MigrationError, StoreError
from vaultwatch.service.wiring import open_store, retry_store
from vaultwatch.settings import Settings, load_settings


class _LateProxy:
    """A TCP port that refuses connections until :meth:`open`, then forwards them to ``target``
    (a database server that is still starting, then is up)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with closing(socket.socket()) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._srv: socket.socket | None = None

    def open(self) -> None:
        srv = socket.create_server(("127.0.0.1", self.port))
        self._srv = srv
        threading.Thread(target=self._accept, args=(srv,), daemon=True).start()

    def _accept(self, srv: socket.socket) -> None:
        while True:
            try:
                client, _ = srv.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        if self._srv is not None:
            self._srv.close()


@pytest.fixture
def late(pg_fresh_url: str) -> Iterator[tuple[_LateProxy, str]]:
    parts = urlsplit(pg_fresh_url)
    proxy = _LateProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
    yield proxy, urlunsplit(parts._replace(netloc=netloc))
    proxy.close()


def _settings(url: str) -> Settings:
    return load_settings(None, env={"VAULTWATCH_STORE__URL": url})


def test_a_store_that_comes_up_late_is_waited_for(late: tuple[_LateProxy, str]) -> None:
    proxy, url = late
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            proxy.open()  # PostgreSQL has finished its recovery

    store = open_store(_settings(url), wait=60.0, sleep=sleep)
    try:
        assert slept == [0.5, 1.0, 2.0]
        with store.transaction(read_only=True) as tx:
            assert tx.load_checkpoint("none") is None
        assert store.dialect == "postgresql"
    finally:
        store.close()


def test_a_store_that_never_comes_up_fails_naming_it(late: tuple[_LateProxy, str]) -> None:
    _, url = late
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    with pytest.raises(MigrationError, match="migration failed"):
        open_store(_settings(url), wait=10.0, clock=lambda: now[0], sleep=sleep)
    assert slept and sum(slept) <= 10.0


def test_a_sqlite_error_is_not_retried() -> None:
    slept: list[float] = []
    bad = "sqlite:////proc/no-such-dir/vw.db"
    with pytest.raises(MigrationError):
        open_store(_settings(bad), sleep=slept.append)
    assert slept == []


def test_a_start_up_step_after_the_schema_waits_for_the_store_too(
    late: tuple[_LateProxy, str], pg_fresh_url: str
) -> None:
    """A soak restarted a worker while PostgreSQL recovered from a crash: its schema migration
    got through, the next step (reading the group's layout) was refused, and the worker exited
    ("cannot start"). Every start-up step that reads the store waits as the migration does."""
    from alerts.store import Store

    up = Store(pg_fresh_url)
    up.migrate()
    up.close()
    proxy, url = late
    store = Store(url)  # the schema is there; the server refuses connections for a while
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            proxy.open()

    def read() -> bytes | None:
        with store.transaction(read_only=True) as tx:
            return tx.load_checkpoint("layout/g")

    try:
        assert retry_store(store, read, "reading the layout", sleep=sleep) is None
        assert slept == [0.5, 1.0]
    finally:
        store.close()


def test_a_store_error_that_is_not_a_refused_connection_is_raised_at_once(tmp_path: Any) -> None:
    from alerts.store import Store

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    slept: list[float] = []

    def fail() -> None:
        raise StoreError("database error (OperationalError): no such table")

    try:
        with pytest.raises(StoreError):
            retry_store(store, fail, "reading", sleep=slept.append)
        assert slept == []
    finally:
        store.close()
