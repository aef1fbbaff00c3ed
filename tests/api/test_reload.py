"""API keys are hot-reloaded on atomic replacement with no failed request, over real HTTP."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from vaultwatch.api.auth import hash_api_key
from vaultwatch.service.ops import BackgroundServer

from .conftest import AppFactory

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _write_atomically(path: Path, entries: list[dict[str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    tmp.write_text(json.dumps({"keys": entries}))
    os.replace(tmp, path)


def test_api_key_file_replaced_50_times_under_load(make_app: AppFactory, tmp_path: Path) -> None:
    stable = f"svc.{secrets.token_urlsafe(24)}"
    keys_file = tmp_path / "api_keys.json"
    base = [{"id": "svc", "hash": hash_api_key(stable), "role": "viewer"}]
    _write_atomically(keys_file, base)
    app, _ = make_app(seeded=False, api_keys_file=keys_file)
    server = BackgroundServer(app, "127.0.0.1", _free_port()).start()
    url = f"http://127.0.0.1:{server.port}"
    stop = threading.Event()
    results = {"ok": 0, "failed": 0}
    failures: list[str] = []

    def hammer() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": stable}, timeout=10) as client:
            while not stop.is_set():
                try:
                    r = client.get("/api/v1/auth/me")
                except httpx.HTTPError as exc:
                    results["failed"] += 1
                    failures.append(type(exc).__name__)
                    continue
                if r.status_code == 200:
                    results["ok"] += 1
                else:
                    results["failed"] += 1
                    failures.append(str(r.status_code))

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    previous: str | None = None
    try:
        with httpx.Client(base_url=url, timeout=10) as probe:
            for i in range(50):
                rotating = f"rot{i}.{secrets.token_urlsafe(16)}"
                _write_atomically(
                    keys_file, [*base, {"id": f"rot{i}", "hash": hash_api_key(rotating), "role": "admin"}]
                )
                # The new key works at once and the one it replaced does not.
                assert probe.get("/api/v1/keys", headers={"X-API-Key": rotating}).status_code == 200
                if previous is not None:
                    assert probe.get("/api/v1/auth/me", headers={"X-API-Key": previous}).status_code == 401
                previous = rotating
                # Let the hammer land several requests on this version before the next swap.
                mark = results["ok"] + results["failed"]
                deadline = time.monotonic() + 5
                while results["ok"] + results["failed"] < mark + 5 and time.monotonic() < deadline:
                    time.sleep(0.002)
    finally:
        stop.set()
        thread.join(timeout=10)
        server.stop()
    log.info(
        "%d requests during 50 replacements, %d failed", results["ok"] + results["failed"], results["failed"]
    )
    assert results["failed"] == 0, failures[:10]
    assert results["ok"] >= 250
    assert app.state.ctx.authn.api_keys.reloads >= 51
