"""Refused API keys and JWTs are limited per source address, as logins are (issue 18).

Before: 200 wrong keys from one address all got 401, never 429. Now, past
``auth_failure_burst`` refused credentials, the address gets 429 for any credential until its
bucket refills; other addresses and anonymous requests are not affected; ``/metrics`` shows the
limit and the counts.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from alerts.store import Store
from vaultwatch.api import create_app
from vaultwatch.settings import ArchiveConfig, Settings, StoreConfig

from .conftest import Creds, TestClient, key_headers


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app_and_clock(tmp_path: Path, creds: Creds) -> Iterator[tuple[FastAPI, Clock]]:
    store = Store(f"sqlite:///{tmp_path}/alerts.db")
    store.migrate()
    clock = Clock()
    settings = Settings(store=StoreConfig(url="sqlite:///unused.db"), archive=ArchiveConfig(enabled=False))
    # The shared auth_config lifts the per-principal and login limits for the other tests; the
    # limit on refused credentials keeps its default here.
    auth = creds.auth_config(auth_failure_burst=20, auth_failure_per_second=0.2)
    yield create_app(settings, auth=auth, store=store, clock=clock), clock
    store.close()


def test_200_wrong_api_keys_from_one_address_get_429(
    app_and_clock: tuple[FastAPI, Clock], creds: Creds
) -> None:
    app, _ = app_and_clock
    with TestClient(app, client=("203.0.113.7", 40000)) as client:
        statuses = Counter(
            client.get(
                "/api/v1/alerts", headers={"X-API-Key": f"viewer-key.{secrets.token_urlsafe(24)}"}
            ).status_code
            for _ in range(200)
        )
        assert statuses[401] == 20
        assert statuses[429] == 180
        # The address is blocked for every credential, the right one included (a guess that
        # happens to be right is not even checked), and told when to come back.
        r = client.get("/api/v1/alerts", headers=key_headers(creds, "viewer"))
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        # Anonymous requests are not credentials: the health endpoints still answer.
        assert client.get("/healthz").status_code == 200
    with TestClient(app, client=("198.51.100.9", 40000)) as other:
        assert other.get("/api/v1/alerts", headers=key_headers(creds, "viewer")).status_code == 200


def test_wrong_jwts_are_limited_and_the_bucket_refills(
    app_and_clock: tuple[FastAPI, Clock], creds: Creds
) -> None:
    app, clock = app_and_clock
    with TestClient(app, client=("203.0.113.8", 40000)) as client:
        bad = {"Authorization": "Bearer " + "e30." * 2 + secrets.token_urlsafe(32)}
        statuses = [client.get("/api/v1/alerts", headers=bad).status_code for _ in range(30)]
        assert statuses[:20] == [401] * 20
        assert set(statuses[20:]) == {429}
        clock.now += 10.0  # two tokens back at 0.2/s
        assert client.get("/api/v1/alerts", headers=key_headers(creds, "viewer")).status_code == 200
        assert [client.get("/api/v1/alerts", headers=bad).status_code for _ in range(3)] == [401, 401, 429]


def test_the_limit_and_the_counts_are_in_metrics(app_and_clock: tuple[FastAPI, Clock]) -> None:
    app, _ = app_and_clock
    with TestClient(app, client=("203.0.113.9", 40000)) as client:
        for _ in range(25):
            client.get("/api/v1/alerts", headers={"X-API-Key": "nobody.nothing"})
        text = client.get("/metrics").text
    assert 'vaultwatch_api_auth_failure_limit{setting="burst"} 20.0' in text
    assert 'vaultwatch_api_auth_failure_limit{setting="per_second"} 0.2' in text
    assert 'vaultwatch_api_auth_failures_total{reason="invalid"} 20.0' in text
    assert 'vaultwatch_api_auth_failures_total{reason="failure_limited"} 5.0' in text
