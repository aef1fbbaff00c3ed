"""Exposure, audit review reports and entity names in the API, over real OpenBao data.

The path exposure and the reports read the session seed's archive (a real OpenBao run); the
token exposure and the entity names use a fresh OpenBao server, a token and a userpass user whose
real requests are archived, and the server's own ``sys/audit-hash``.
"""

from __future__ import annotations

import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from alerts.store import Store
from vaultwatch.api import create_app
from vaultwatch.api.audit import api_audit
from vaultwatch.api.routes.reports import PERIOD_ID
from vaultwatch.report import Period, ReportResult, generate_report, period_for
from vaultwatch.settings import ArchiveConfig, Settings, StoreConfig

from .conftest import AppFactory, Creds, Seed, TestClient, key_headers

pytestmark = pytest.mark.integration


# -- path exposure ------------------------------------------------------------------------------


def test_path_exposure_names_the_readers_of_runtime_secrets(
    client: TestClient, creds: Creds, seed: Seed
) -> None:
    h = key_headers(creds, "viewer")
    r = client.get("/api/v1/exposure", params={"path": "logos/pxl-core/runtime"}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "path" and body["target"] == "logos/pxl-core/runtime"
    assert body["events"] > 0 and body["identities"] and body["secrets"]
    assert all(s["path"].startswith("logos/data/pxl-core/runtime/") for s in body["secrets"])
    assert any(a.startswith("rotate logos/data/pxl-core/runtime/") for a in body["actions"])
    # A window after everything happened holds nothing.
    later = client.get(
        "/api/v1/exposure",
        params={"path": "logos/pxl-core/runtime", "since": "2999-01-01T00:00:00Z"},
        headers=h,
    )
    assert later.status_code == 200 and later.json()["events"] == 0
    rotated = client.get(
        "/api/v1/exposure",
        params={"path": "logos/pxl-core/runtime", "since_last_rotation": "true"},
        headers=h,
    ).json()
    assert rotated["events"] <= body["events"]
    assert client.get("/api/v1/exposure", params={"path": "logos/pxl-core/runtime"}).status_code == 401
    assert client.get("/api/v1/exposure", headers=h).status_code == 422
    backwards = {"path": "logos", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    assert client.get("/api/v1/exposure", params=backwards, headers=h).status_code == 422


def test_identity_exposure_is_the_offboarding_rotation_list(
    client: TestClient, creds: Creds, seed: Seed
) -> None:
    h = key_headers(creds, "viewer")
    readers = client.get("/api/v1/exposure", params={"path": "logos/pxl-core/runtime"}, headers=h).json()
    reader = next(i for i in readers["identities"] if i["reads"])
    r = client.get("/api/v1/exposure/identity", params={"identity": reader["identity"]}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "identity" and body["target"] == reader["identity"]
    assert body["secrets"] and all(a.startswith(("rotate ", "disable ")) for a in body["actions"])
    assert client.get("/api/v1/exposure/identity", params={"identity": reader["identity"]}).status_code == 401
    assert client.get("/api/v1/exposure/identity", headers=h).status_code == 422


def test_token_exposure_without_vault_client_is_503_and_role_checked(
    client: TestClient, creds: Creds
) -> None:
    canary = "s." + secrets.token_urlsafe(24)
    url = "/api/v1/exposure/token"
    assert client.post(url, json={"token": canary}).status_code == 401
    viewer = client.post(url, json={"token": canary}, headers=key_headers(creds, "viewer"))
    assert viewer.status_code == 403
    r = client.post(url, json={"token": canary}, headers=key_headers(creds, "analyst"))
    assert r.status_code == 503 and "Vault" in r.json()["detail"]
    bad = client.post(url, json={"token": canary, "extra": 1}, headers=key_headers(creds, "analyst"))
    assert bad.status_code == 422
    empty = client.post(url, json={}, headers=key_headers(creds, "analyst"))
    assert empty.status_code == 422
    for resp in (viewer, r, bad, empty):
        assert canary not in resp.text


# -- token exposure and entity names against a real OpenBao server ------------------------------


def _retry(fn: Any) -> Any:
    import hvac.exceptions

    for _ in range(50):
        try:
            return fn()
        except hvac.exceptions.InvalidRequest as exc:
            # A fresh KV v2 mount answers "upgrading" for a moment.
            if "Upgrading" not in str(exc):
                raise
            time.sleep(0.1)
    return fn()


def _archive_log(audit_log: Path, root: Path) -> tuple[Any, bytes]:
    """The audit log parsed into a real archive and a detection engine snapshot."""
    from detect.engine import Engine
    from ingest.dedup import Deduplicator
    from ingest.errors import ParseError
    from ingest.parse import Parser
    from vaultwatch.service.archive import EventArchive

    engine, parser, dedup = Engine(), Parser(), Deduplicator()
    with (
        EventArchive(root, retention_days=3650, writer_id="exposure") as archive,
        open(audit_log, "rb") as fh,
    ):
        for line in fh:
            try:
                ev = parser.parse(line)
            except ParseError:
                continue
            if not dedup.is_duplicate(ev):
                archive.append(ev)
                engine.process(ev)
    return EventArchive(root, retention_days=3650, writer_id="reader"), engine.snapshot()


def test_token_exposure_and_entity_names_against_openbao(
    openbao: Any, tmp_path: Path, creds: Creds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    root = openbao.client()
    clients = [root]
    try:
        root.sys.create_or_update_policy("app-reader", 'path "secret/data/app/*" { capabilities = ["read"] }')
        _retry(
            lambda: root.secrets.kv.v2.create_or_update_secret(
                path="app/db", secret={"password": secrets.token_hex(8)}, mount_point="secret"
            )
        )
        leaked = root.auth.token.create(policies=["app-reader"], ttl="1h")["auth"]["client_token"]
        unused = root.auth.token.create(policies=["app-reader"], ttl="1h")["auth"]["client_token"]
        thief = openbao.client(token=leaked)
        clients.append(thief)
        for _ in range(3):
            thief.secrets.kv.v2.read_secret_version(
                path="app/db", mount_point="secret", raise_on_deleted_version=True
            )
        root.sys.enable_auth_method("userpass")
        password = secrets.token_urlsafe(16)
        root.auth.userpass.create_or_update_user("alice", password=password, policies=["app-reader"])
        # A named entity with the userpass alias (a login alone creates an ``entity_<hex>`` one).
        named = root.secrets.identity.create_or_update_entity(name="alice")["data"]["id"]
        accessor = root.sys.list_auth_methods()["data"]["userpass/"]["accessor"]
        root.secrets.identity.create_or_update_entity_alias(
            name="alice", canonical_id=named, mount_accessor=accessor
        )
        alice = openbao.client(token="")
        clients.append(alice)
        alice.auth.userpass.login("alice", password)
        alice.secrets.kv.v2.read_secret_version(
            path="app/db", mount_point="secret", raise_on_deleted_version=True
        )
        entity_id = root.auth.token.lookup(alice.token)["data"]["entity_id"]
        assert entity_id == named

        archive, snapshot = _archive_log(openbao.audit_log, tmp_path / "archive")
        store = Store(f"sqlite:///{tmp_path}/alerts.db")
        store.migrate()
        with store.transaction() as tx:
            tx.save_checkpoint(
                "engine/vaultwatch/vault-audit/0",
                msgspec.msgpack.encode({"offset": 1, "hour": None, "engine": snapshot}),
            )
        settings = Settings(
            store=StoreConfig(url="sqlite:///unused.db"), archive=ArchiveConfig(enabled=False)
        )
        vault_client = openbao.client()
        clients.append(vault_client)
        app = create_app(
            settings, auth=creds.auth_config(), store=store, archive=archive, vault_client=vault_client
        )
        url = "/api/v1/exposure/token"
        responses = []
        enricher = app.state.ctx.extra["enricher"]
        with TestClient(app) as c:
            assert enricher._thread is not None and enricher._thread.is_alive()  # started with the app
            analyst = key_headers(creds, "analyst")
            r = c.post(url, json={"token": leaked}, headers=analyst)
            responses.append(r)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["kind"] == "token" and body["devices_searched"] == ["file/"]
            assert body["events"] >= 3
            assert [s["path"] for s in body["secrets"]] == ["secret/data/app/db"]
            assert body["secrets"][0]["reads"] == 3
            assert body["actions"][0].startswith("revoke")
            # A token that made no request was not exposed anywhere.
            none = c.post(url, json={"token": unused}, headers=analyst)
            responses.append(none)
            assert none.status_code == 200 and none.json()["events"] == 0
            denied = c.post(url, json={"token": leaked}, headers=key_headers(creds, "viewer"))
            responses.append(denied)
            assert denied.status_code == 403

            # The identities API names the userpass entity once the enricher has looked it up.
            key = f"entity:{entity_id}"
            c.get("/api/v1/identities", headers=analyst)
            enricher.drain(10)
            items = {i["key"]: i for i in c.get("/api/v1/identities", headers=analyst).json()["items"]}
            assert items[key]["name"] == "alice (userpass)"
            assert all(i["name"] is None for k, i in items.items() if not k.startswith("entity:"))
            one = c.get(f"/api/v1/identities/{key}", headers=analyst).json()
            assert one["name"] == "alice (userpass)"
        assert enricher._thread is None  # closed at shutdown
        with store.engine.connect() as conn:
            trail = [str(tuple(row)) for row in conn.execute(sa.select(api_audit))]
        assert any("exposure.token" in row for row in trail)
        store.close()
        archive.close()
        for canary in (leaked, unused):
            assert all(canary not in resp.text for resp in responses)
            assert canary not in caplog.text
            assert all(canary not in row for row in trail)
    finally:
        for cl in clients:
            cl.adapter.close()


def test_no_vault_client_keeps_identities_unnamed(client: TestClient, creds: Creds) -> None:
    r = client.get("/api/v1/identities", headers=key_headers(creds, "viewer"))
    assert r.status_code == 200
    assert r.json()["items"] and all(i["name"] is None for i in r.json()["items"])
    assert "enricher" not in client.app.state.ctx.extra  # type: ignore[attr-defined]


# -- audit review reports -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(seed: Seed, tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    out = tmp_path_factory.mktemp("reports-var")
    # Today, as a daily period: the seed's traffic happened in it.
    period = period_for("daily", datetime.now(UTC) + timedelta(days=1))
    return generate_report(seed.archive_root, None, period, out)


@pytest.fixture
def reports_client(report: ReportResult, make_app: AppFactory, creds: Creds, tmp_path: Path) -> Any:
    # The reports directory is ``<archive path parent>/reports``: point the archive setting there.
    out = report.directory.parent.parent
    _, store = make_app()
    settings = Settings(
        store=StoreConfig(url="sqlite:///unused.db"),
        archive=ArchiveConfig(enabled=False, path=out / "archive"),
    )
    app = create_app(settings, auth=creds.auth_config(), store=store, archive=None)
    with TestClient(app) as c:
        yield c


def test_reports_listed_and_served(reports_client: TestClient, report: ReportResult, creds: Creds) -> None:
    c, h = reports_client, key_headers(creds, "viewer")
    r = c.get("/api/v1/reports", headers=h)
    assert r.status_code == 200, r.text
    [item] = r.json()
    assert item["id"] == report.period.id
    assert item["sha256"] == report.sha256
    assert item["generated_at"] == report.data["signoff"]["generated_at"]
    assert item["kind"] == "daily" and item["files"] == ["report.html", "report.pdf", "report.json"]
    base = f"/api/v1/reports/{report.period.id}"
    html = c.get(f"{base}/report.html", headers=h)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in html.headers["content-security-policy"]
    assert html.content == report.html.read_bytes()
    pdf = c.get(f"{base}/report.pdf", headers=h)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    js = c.get(f"{base}/report.json", headers=h)
    assert js.status_code == 200 and js.json()["signoff"]["sha256"] == report.sha256
    assert c.get("/api/v1/reports").status_code == 401
    assert c.get(f"{base}/report.json").status_code == 401
    assert c.get("/api/v1/reports/daily-1999-01-01/report.json", headers=h).status_code == 404


def test_report_paths_cannot_leave_the_reports_directory(
    reports_client: TestClient, report: ReportResult, creds: Creds
) -> None:
    c, h = reports_client, key_headers(creds, "viewer")
    secret = report.directory.parent.parent / "secret.json"
    secret.write_text('{"canary": "outside"}')
    # A directory with a valid name that links elsewhere is refused too.
    elsewhere = report.directory.parent.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "report.json").write_text('{"canary": "outside"}')
    link = report.directory.parent / "daily-2000-01-01"
    if not link.exists():
        link.symlink_to(elsewhere, target_is_directory=True)
    for path in (
        "/api/v1/reports/..%2Fsecret.json/report.json",
        "/api/v1/reports/%2E%2E/report.json",
        "/api/v1/reports/../secret.json",
        f"/api/v1/reports/{report.period.id}/..%2F..%2Fsecret.json",
        f"/api/v1/reports/{report.period.id}/report.txt",
        "/api/v1/reports/daily-2026-01-01x/report.json",
        "/api/v1/reports/daily-2000-01-01/report.json",
    ):
        r = c.get(path, headers=h)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert "outside" not in r.text
    listed = [i["id"] for i in c.get("/api/v1/reports", headers=h).json()]
    assert report.period.id in listed


def test_period_id_pattern_accepts_every_period_kind_and_nothing_else() -> None:
    now = datetime(2026, 9, 16, 10, tzinfo=UTC)
    ids = [period_for(k, now).id for k in ("daily", "weekly", "monthly")]
    ids.append(Period("custom", now - timedelta(hours=5), now).id)
    assert all(PERIOD_ID.fullmatch(i) for i in ids), ids
    for bad in (
        "",
        "..",
        "daily-2026-09-15/..",
        "weekly-2026-W3",
        "monthly-2026-09\n",
        "custom-x-y",
        "Daily-2026-09-15",
    ):
        assert not PERIOD_ID.fullmatch(bad), bad
