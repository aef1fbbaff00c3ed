"""The API over a store seeded from a real OpenBao run: alerts, triage, silences, identities, events."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.dataset as ds
import pytest
import sqlalchemy as sa

from vaultwatch.api.audit import api_audit

from .conftest import AppFactory, Creds, Seed, TestClient, key_headers

pytestmark = pytest.mark.integration


def _alerts(c: TestClient, creds: Creds, **params: Any) -> dict[str, Any]:
    r = c.get("/api/v1/alerts", params=params, headers=key_headers(creds, "viewer"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_list_filters_sorting_pages_and_counts(client: TestClient, creds: Creds, seed: Seed) -> None:
    everything = _alerts(client, creds, limit=200)
    assert everything["total"] == len(seed.alerts) > 5
    assert everything["counts"]["open"] == len(seed.alerts)
    assert {a["id"] for a in everything["items"]} == {a.id for a in seed.alerts}
    assert all(a["schema"] == "vaultwatch.alert/v1" for a in everything["items"])

    # Cursor pagination visits every alert exactly once, in order.
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 4, "sort": "score", "order": "desc"}
        if cursor:
            params["cursor"] = cursor
        page = _alerts(client, creds, **params)
        assert page["total"] == len(seed.alerts)
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(seed.alerts) == len({a["id"] for a in seen})
    scores = [a["score"] for a in seen]
    assert scores == sorted(scores, reverse=True)

    detector = seed.alerts[0].detector
    by_detector = _alerts(client, creds, detector=detector)
    assert by_detector["total"] == sum(a.detector == detector for a in seed.alerts)
    assert all(a["detector"] == detector for a in by_detector["items"])
    high = _alerts(client, creds, min_severity="high")
    assert high["total"] == sum(a.severity in ("high", "critical") for a in seed.alerts)
    who = seed.alerts[0].identity.key
    assert _alerts(client, creds, identity=who)["total"] == sum(a.identity.key == who for a in seed.alerts)
    assert _alerts(client, creds, q="zz-no-such-text-zz")["total"] == 0
    assert _alerts(client, creds, since="2999-01-01T00:00:00Z")["total"] == 0

    bad = client.get("/api/v1/alerts", params={"cursor": "garbage!"}, headers=key_headers(creds, "viewer"))
    assert bad.status_code == 400
    too_big = client.get("/api/v1/alerts", params={"limit": 5000}, headers=key_headers(creds, "viewer"))
    assert too_big.status_code == 422


def test_detail_has_timeline_and_raw_entries_without_token_hmacs(
    client: TestClient, creds: Creds, seed: Seed
) -> None:
    alert = max(seed.alerts, key=lambda a: len(a.event_ids))
    r = client.get(f"/api/v1/alerts/{alert.id}", headers=key_headers(creds, "viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alert"]["id"] == alert.id
    assert body["events_available"] is True
    got = {e["request_id"] for e in body["events"]}
    assert got and got <= set(alert.event_ids)
    assert all(e["identity_key"] for e in body["events"])
    # Token and accessor HMACs are stripped from the raw entries.
    assert not {"accessor_hmac", "client_token_hmac", "policies"} & set(body["events"][0])
    assert client.get("/api/v1/alerts/va_nope", headers=key_headers(creds, "viewer")).status_code == 404


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """None for a fresh SQLite file, or the PostgreSQL test schema."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


def test_triage_actions_are_recorded_and_audited(
    make_app: AppFactory, creds: Creds, seed: Seed, store_url: str | None
) -> None:
    app, store = make_app(store_url)
    a, b, c = (x.id for x in seed.alerts[:3])
    h = key_headers(creds, "analyst")
    with TestClient(app) as cl:
        r = cl.post(f"/api/v1/alerts/{a}/ack", json={"comment": "looking"}, headers=h)
        assert r.status_code == 200 and r.json()["status"] == "acknowledged"
        r = cl.post(f"/api/v1/alerts/{a}/false-positive", json={"comment": "deploy"}, headers=h)
        assert r.status_code == 200 and r.json()["status"] == "false_positive"
        # A closed alert cannot be acknowledged: 409 and nothing changes.
        assert cl.post(f"/api/v1/alerts/{a}/ack", json={}, headers=h).status_code == 409
        r = cl.post(f"/api/v1/alerts/{b}/assign", json={"assignee": "carol"}, headers=h)
        assert r.status_code == 200 and r.json()["assignee"] == "carol"
        r = cl.post(f"/api/v1/alerts/{b}/verdict", json={"verdict": "true_positive"}, headers=h)
        assert r.status_code == 200
        # Bulk actions need an explicit confirmation.
        assert (
            cl.post("/api/v1/alerts/bulk", json={"ids": [b, c], "action": "resolve"}, headers=h).status_code
            == 422
        )
        r = cl.post(
            "/api/v1/alerts/bulk", json={"ids": [b, c], "action": "resolve", "confirm": False}, headers=h
        )
        assert r.status_code == 422
        r = cl.post(
            "/api/v1/alerts/bulk",
            json={"ids": [b, c, "va_missing"], "action": "resolve", "confirm": True},
            headers=h,
        )
        assert r.status_code == 200
        assert r.json() == {"changed": [b, c], "failed": {"va_missing": "not found"}}
        detail = cl.get(f"/api/v1/alerts/{a}", headers=h).json()
    assert [s["to_status"] for s in detail["timeline"]] == ["open", "acknowledged", "false_positive"]
    assert [v["verdict"] for v in detail["verdicts"]] == ["false_positive"]
    assert {v.verdict for v in store.verdicts_since(0)} == {"false_positive", "true_positive"}
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(api_audit).order_by(api_audit.c.id)).all()
    actions = [(r.actor, r.action, r.outcome) for r in rows]
    assert ("key:analyst-key", "alert.ack", "ok") in actions
    assert ("key:analyst-key", "alert.ack", "InvalidTransition") in actions
    assert ("key:analyst-key", "alert.bulk.resolve", "partial") in actions
    bulk = next(r for r in rows if r.action == "alert.bulk.resolve")
    assert json.loads(bulk.detail)["ids"] == [b, c, "va_missing"]


def test_silences_create_list_expire(make_app: AppFactory, creds: Creds, store_url: str | None) -> None:
    with TestClient(make_app(store_url)[0]) as client:
        _silences(client, creds)


def _silences(client: TestClient, creds: Creds) -> None:
    h = key_headers(creds, "analyst")
    body = {"matchers": [{"name": "detector", "value": "root-token-use"}], "ends_at": "2999-01-01T00:00:00Z"}
    r = client.post("/api/v1/silences", json={**body, "comment": "maintenance"}, headers=h)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["created_by"] == "key:analyst-key" and r.json()["active"] is True
    listed = client.get(
        "/api/v1/silences", params={"active": True}, headers=key_headers(creds, "viewer")
    ).json()
    assert [s["id"] for s in listed] == [sid]
    r = client.post(f"/api/v1/silences/{sid}/expire", headers=h)
    assert r.status_code == 200 and r.json()["expired"] is True
    assert client.get("/api/v1/silences", params={"active": True}, headers=h).json() == []
    # A matcher that matches everything is refused with a clear message.
    everything = {
        "matchers": [{"name": "detector", "op": "=~", "value": ".*"}],
        "ends_at": "2999-01-01T00:00:00Z",
    }
    r = client.post("/api/v1/silences", json=everything, headers=h)
    assert r.status_code == 422 and "empty label" in r.json()["detail"]
    assert client.post("/api/v1/silences/nope/expire", headers=h).status_code == 404


def test_identities_from_engine_checkpoints(client: TestClient, creds: Creds, seed: Seed) -> None:
    h = key_headers(creds, "viewer")
    r = client.get("/api/v1/identities", params={"sort": "events"}, headers=h)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert r.json()["total"] >= 3
    assert [i["events"] for i in items] == sorted((i["events"] for i in items), reverse=True)
    key = items[0]["key"]
    d = client.get(f"/api/v1/identities/{key}", headers=h)
    assert d.status_code == 200, d.text
    summary = d.json()["summary"]
    assert summary["events"] == items[0]["events"]
    assert len(summary["hour_of_week"]) == 168
    for part in ("top_templates", "mounts", "addresses", "rate_per_active_hour"):
        assert part in summary
    assert d.json()["alerts"] == [a for a in d.json()["alerts"] if a["identity"]["key"] == key]
    assert client.get("/api/v1/identities/nobody:here", headers=h).status_code == 404


def test_event_search_and_range_cap(client: TestClient, creds: Creds, seed: Seed) -> None:
    h = key_headers(creds, "viewer")
    params = {"since": "2000-01-01T00:00:00Z", "until": "2000-01-02T00:00:00Z"}
    assert client.get("/api/v1/events", params=params, headers=h).json()["items"] == []
    wide = {"since": "2000-01-01T00:00:00Z", "until": "2001-01-01T00:00:00Z"}
    r = client.get("/api/v1/events", params=wide, headers=h)
    assert r.status_code == 400 and "time range" in r.json()["detail"]
    # The seed's events are from the last minutes (real clock), so the default 24 h finds them.
    r = client.get("/api/v1/events", params={"path_prefix": "logos/", "limit": 5}, headers=h)
    assert r.status_code == 200, r.text
    page = r.json()
    assert len(page["items"]) == 5 and page["next_offset"] == 5
    assert all(e["path"].startswith("logos/") for e in page["items"])
    times = [e["time"] for e in page["items"]]
    assert times == sorted(times, reverse=True)
    rid = page["items"][0]["request_id"]
    one = client.get("/api/v1/events", params={"request_id": rid}, headers=h).json()["items"]
    assert {e["request_id"] for e in one} == {rid}
    assert "client_token_hmac" not in r.text


def _every_event(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        r = client.get("/api/v1/events", params={**params, "limit": 500, "offset": offset}, headers=headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        offset = r.json()["next_offset"]
    return items


def test_event_search_by_approle_role(client: TestClient, creds: Creds, seed: Seed) -> None:
    """The seed's AppRole clients (role pxl-core-runtime) share the display name approle with any
    other AppRole client: role_name is what finds their entries."""
    h = key_headers(creds, "viewer")
    role = "pxl-core-runtime"
    # What the archive's files hold, read without the API or the archive's query.
    rows = (
        ds.dataset(seed.archive_root, format="parquet", partitioning="hive")
        .to_table(columns=["request_id", "type", "role_name"])
        .to_pylist()
    )
    want = {(r["request_id"], r["type"]) for r in rows if r["role_name"] == role}
    assert want and len(want) < len(rows)
    items = _every_event(client, h, role_name=role)
    assert {(e["request_id"], e["type"]) for e in items} == want and len(items) == len(want)
    assert {e["role_name"] for e in items} == {role}
    assert {e["display_name"] for e in items} == {"approle"}
    assert any(e["path"].startswith("logos/data/pxl-core/runtime/") for e in items)
    # With other filters; every response names the role (null for other identities).
    r = client.get(
        "/api/v1/events",
        params={"role_name": role, "path_prefix": "logos/data/pxl-core/runtime/db", "limit": 5},
        headers=h,
    )
    assert r.status_code == 200, r.text
    page = r.json()["items"]
    assert len(page) == 5 and all(e["role_name"] == role and e["path"].endswith("/db") for e in page)
    everyone = _every_event(client, h)
    assert len(everyone) == len(rows) and {e["role_name"] for e in everyone} == {role, None}
    assert client.get("/api/v1/events", params={"role_name": "approle"}, headers=h).json()["items"] == []
    r = client.get("/api/v1/events", params={"role_name": "r" * 257}, headers=h)
    assert r.status_code == 422


def test_stream_sends_changed_alerts(client: TestClient, creds: Creds, seed: Seed) -> None:
    h = key_headers(creds, "viewer")
    r = client.get("/api/v1/stream", params={"since": "2000-01-01T00:00:00Z", "max_seconds": 0.3}, headers=h)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [b for b in r.text.split("\n\n") if b.startswith("event: alert")]
    assert len(events) == len(seed.alerts)
    first = events[0].splitlines()
    assert first[1].startswith("id: ")
    assert json.loads(first[2].removeprefix("data: "))["schema"] == "vaultwatch.alert/v1"
    # Resuming from the last id sends nothing already seen.
    last_id = events[-1].splitlines()[1].removeprefix("id: ")
    again = client.get("/api/v1/stream", params={"max_seconds": 0.2}, headers={**h, "Last-Event-ID": last_id})
    assert "event: alert" not in again.text
    aid = seed.alerts[0].id
    client.post(f"/api/v1/alerts/{aid}/ack", json={}, headers=key_headers(creds, "analyst"))
    changed = client.get(
        "/api/v1/stream", params={"max_seconds": 0.2}, headers={**h, "Last-Event-ID": last_id}
    )
    blocks = [b for b in changed.text.split("\n\n") if b.startswith("event: alert")]
    assert len(blocks) == 1 and f'"id":"{aid}"' in blocks[0] and '"status":"acknowledged"' in blocks[0]


def test_public_surface() -> None:
    import vaultwatch.api as api

    assert sorted(api.__all__) == ["API_PREFIX", "AuthConfig", "Authenticator", "Principal", "create_app"]
    for name in api.__all__:
        assert getattr(api, name) is not None


def test_health_ready_metrics_need_no_credentials(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    client.get("/api/v1/alerts", headers={"X-API-Key": "nope.nope"})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'vaultwatch_api_requests_total{method="GET",status="401"} 1.0' in metrics.text
    assert 'vaultwatch_api_auth_failures_total{reason="invalid"} 1.0' in metrics.text
    assert client.get("/openapi.json").json()["info"]["title"] == "vaultwatch"


def test_admin_views(client: TestClient, creds: Creds) -> None:
    h = key_headers(creds, "admin")
    keys = client.get("/api/v1/keys", headers=h)
    assert keys.status_code == 200
    assert {k["id"] for k in keys.json()} == {"viewer-key", "analyst-key", "admin-key"}
    assert "sha256" not in keys.text
    status = client.get("/api/v1/admin/status", headers=h).json()
    assert status["api_keys"] == 3 and len(status["jwt_kids"]) == 1
    client.post("/api/v1/auth/token", headers=h)
    trail = client.get("/api/v1/audit", headers=h).json()
    assert trail[0]["action"] == "token.issue" and trail[0]["actor"] == "key:admin-key"


def test_postgresql_store(make_app: AppFactory, creds: Creds, seed: Seed, pg_url: str) -> None:
    app, store = make_app(pg_url)
    aid = seed.alerts[0].id
    with TestClient(app) as c:
        page = c.get("/api/v1/alerts", params={"limit": 3}, headers=key_headers(creds, "viewer")).json()
        assert page["total"] == len(seed.alerts) and len(page["items"]) == 3
        nxt = c.get(
            "/api/v1/alerts",
            params={"limit": 3, "cursor": page["next_cursor"]},
            headers=key_headers(creds, "viewer"),
        )
        assert not {a["id"] for a in nxt.json()["items"]} & {a["id"] for a in page["items"]}
        r = c.post(
            f"/api/v1/alerts/{aid}/resolve", json={"comment": "done"}, headers=key_headers(creds, "analyst")
        )
        assert r.status_code == 200 and r.json()["status"] == "resolved"
        assert c.get("/api/v1/identities", headers=key_headers(creds, "viewer")).json()["total"] >= 3
        assert (
            c.get("/api/v1/audit", headers=key_headers(creds, "admin")).json()[0]["action"] == "alert.resolve"
        )
        assert c.get("/readyz").status_code == 200
